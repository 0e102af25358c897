//! Replication of contexts between their member nodes over NATS. The state actor keeps
//! the hash DAG and decides what is valid; this crate moves transactions: broadcast of a
//! node's own, checking and handing over the others', and catch-up (joining, restarts,
//! lost messages, transactions that arrive before their parents). See
//! docs/REPLICATION.md.

pub mod actor;
pub mod error;
pub mod messages;
pub mod responder;
pub mod sync;
pub mod verify;
pub mod wire;

pub use actor::{Replicator, Subscriptions};
pub use error::ReplicationError;
pub use messages::*;
pub use sync::Link;
pub use verify::TxVerifier;
