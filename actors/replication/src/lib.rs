//! Replication of contexts between their member nodes over a message bus (NATS on a
//! node, an in-process bus in tests). The state actor keeps the hash DAG and decides what
//! is valid; this crate moves transactions: broadcast of a node's own, checking and
//! handing over the others', and catch-up (joining, restarts, lost messages,
//! transactions that arrive before their parents). See docs/REPLICATION.md.

pub mod actor;
pub mod bus;
pub mod error;
pub mod memory_bus;
pub mod messages;
pub mod nats_bus;
pub mod readiness;
mod receive;
mod requests;
pub mod responder;
pub mod settings;
pub mod sync;
pub mod verify;
pub mod wire;

pub use actor::{Replicator, Subscriptions};
pub use bus::{Bus, BusError, BusMessage};
pub use error::ReplicationError;
pub use memory_bus::{MemoryBus, MemoryNetwork};
pub use messages::*;
pub use nats_bus::NatsBus;
pub use readiness::NotReady;
pub use settings::Settings;
pub use sync::Link;
pub use verify::TxVerifier;
