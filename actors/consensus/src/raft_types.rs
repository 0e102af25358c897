//! The types openraft runs the registry with.
//!
//! Why a batch per Raft entry: openraft appends (and our log store commits to redb) once
//! per client write. Packing the signed entries that arrive together into one Raft entry
//! makes one fsync and one replication round carry many names, which is where the
//! throughput comes from. Each signed entry in a batch is still checked and applied on
//! its own, and gets its own result.

use std::io::Cursor;

use cmesh_common::Address;
use serde::{Deserialize, Serialize};

use crate::entry::SignedEntry;
use crate::registry::Applied;

/// The application data of one Raft log entry: signed registry entries, applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<SignedEntry>);

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {} registry entries", self.0.len())
    }
}

/// What applying one Raft entry gave: one result per signed entry of its batch (none for
/// Raft's own blank and membership entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchApplied(pub Vec<Applied>);

openraft::declare_raft_types!(
    /// The Raft of a mesh: nodes are known by their address, which also names their
    /// NATS subject, so a membership needs no other node data.
    pub MeshRaft:
        D = Batch,
        R = BatchApplied,
        NodeId = Address,
        Node = openraft::EmptyNode,
        Entry = openraft::Entry<MeshRaft>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type LogId = openraft::LogId<Address>;
pub type Vote = openraft::Vote<Address>;
pub type Entry = openraft::Entry<MeshRaft>;
pub type StoredMembership = openraft::StoredMembership<Address, openraft::EmptyNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<Address, openraft::EmptyNode>;
pub type Snapshot = openraft::Snapshot<MeshRaft>;
pub type StorageError = openraft::StorageError<Address>;
pub type Raft = openraft::Raft<MeshRaft>;
pub type Metrics = openraft::RaftMetrics<Address, openraft::EmptyNode>;
