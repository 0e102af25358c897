//! Consensus: the mesh registry (admitted nodes, names, mesh-wide grants) and the signed
//! entries that change it.
//!
//! Why this crate: seed 002 gives Raft everything that needs a total order. This first
//! part is the state machine and its log entries, pure and testable without I/O; the Raft
//! node (openraft, redb storage, NATS transport) drives it.
//!
//! - [`command`]: [`Command`] and [`Role`], what an entry asks.
//! - [`entry`]: [`SignedEntry`], a command signed by the node that proposed it.
//! - [`registry`]: [`Registry`], the deterministic state machine, with snapshots.
//! - [`error`]: [`EntryFault`] (an entry that does not count) and [`Refusal`].

pub mod command;
pub mod entry;
pub mod error;
pub mod registry;

pub use command::{Command, Role};
pub use entry::{EntryBody, EntryId, SignedEntry, ENTRY_DOMAIN};
pub use error::{EntryFault, Refusal};
pub use registry::{Applied, Outcome, Registry, RestoreError, ADMIN_ATTRIBUTE, REPLAY_WINDOW_MS};
