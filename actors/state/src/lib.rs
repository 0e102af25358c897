//! The state service: applications are WASM contracts, contexts are their instances, and
//! every mutation of a context is a signed, hash-linked transaction committed to redb
//! together with its effects and the context's new Merkle state root.

pub mod actor;
mod checks;
mod dag;
pub mod error;
mod executor;
pub mod ids;
pub mod membership;
pub mod merkle;
pub mod messages;
pub mod node_cache;
mod reader;
mod replay;
pub mod roles;
mod signer;
pub mod store;
pub mod tables;
pub mod tx;
mod views;

pub use actor::{StateActor, StateConfig};
pub use error::StateError;
pub use ids::Id;
pub use messages::*;
pub use roles::Role;
