//! Ids, crypto and wire types that several cmesh actors need.
//!
//! Kept small on purpose: anything only one actor uses lives in that actor's crate.

pub mod address;
pub mod cmtp;
pub mod hash;
pub mod jcs;
pub mod jwt;
pub mod keys;
pub mod rpc;
pub mod time;

pub use address::Address;
pub use cmtp::{CmtpError, Status};
pub use hash::keccak256;
pub use keys::{Signature65, SigningKey};
