//! Consensus: the mesh registry (admitted nodes, names, mesh-wide grants) and the signed
//! entries that change it.
//!
//! Why this crate: seed 002 gives Raft everything that needs a total order. The state
//! machine and its entries are pure and testable without I/O; the Raft node (openraft,
//! redb storage, signed NATS transport) drives them.
//!
//! - [`command`]: [`Command`] and [`Role`], what an entry asks.
//! - [`entry`]: [`SignedEntry`], a command signed by the node that proposed it.
//! - [`registry`]: [`Registry`], the deterministic state machine, with snapshots.
//! - [`error`]: [`EntryFault`] (an entry that does not count), [`Refusal`], and
//!   [`ConsensusError`] (a write or read that did not complete).
//! - [`raft_types`]: openraft's type configuration; a Raft entry is a [`raft_types::Batch`].
//! - [`store`]: the log, the vote and snapshots in redb; the registry as state machine.
//! - [`wire`], [`requester`], [`network`]: the signed RPCs on `cmesh.raft.<mesh>.<node>`;
//!   [`peer_keys`]: the keys two nodes share once they have signed to each other, for MACs.
//! - [`settings`]: timeouts and batch sizes.
//! - [`node`]: [`ConsensusNode`], one node's Raft, server, batcher and membership upkeep.
//! - [`query`]: [`Query`], reads of the registry as data, run by a replica.
//! - [`member`]: how a node without a replica (a `member`) reads and learns whom to
//!   trust: it asks the replicas.

pub mod command;
pub mod entry;
pub mod error;
pub mod member;
pub mod network;
pub mod node;
pub mod peer_keys;
pub mod query;
pub mod raft_types;
pub mod registry;
pub mod requester;
pub mod settings;
pub mod store;
pub mod wire;

pub use command::{Command, Role};
pub use entry::{EntryBody, EntryId, SignedEntry, ENTRY_DOMAIN};
pub use error::{ConsensusError, EntryFault, Refusal};
pub use node::{ConsensusNode, ConsensusStatus};
pub use query::{Answer, Consistency, Query, ReadInfo, Trust};
pub use registry::{Applied, Outcome, Registry, RestoreError, REPLAY_WINDOW_MS};
pub use settings::ConsensusSettings;
