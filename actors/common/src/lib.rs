//! Ids, crypto and wire types that several cmesh actors need.
//!
//! Kept small on purpose: anything only one actor uses lives in that actor's crate.

pub mod address;
pub mod cmtp;
pub mod hash;

pub use address::Address;
pub use cmtp::{CmtpError, Status};
pub use hash::keccak256;
