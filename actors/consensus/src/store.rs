//! The Raft log, the vote and the registry's snapshots, in one redb file.
//!
//! Why this shape:
//! - Every write that Raft must be able to count on (appended entries, the vote, a
//!   purge, a snapshot) is one redb transaction committed durably before openraft hears
//!   of it, so an acknowledged write survives a crash. Those commits are fsyncs, made on
//!   tokio's blocking pool ([`off_the_runtime`]), so that the runtime's few threads go on
//!   serving the node's other tasks meanwhile.
//! - The registry itself lives in memory and is rebuilt at start from the last snapshot
//!   and the committed log after it. It is a pure function of the log, so this gives the
//!   same state as persisting it, without writing every name twice.
//! - The commit index is written without an fsync: it only speeds up the replay at
//!   start, and Raft learns it again from the leader.

// openraft's traits return its `StorageError` (256 bytes); the helpers here return it too.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use cmesh_common::genesis::MeshId;
use cmesh_common::Address;
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{AnyError, EntryPayload, LogState, RaftLogId, RaftLogReader, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::command::Role;
use crate::raft_types::{
    BatchApplied, Entry, LogId, MeshRaft, Snapshot, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use crate::registry::{Applied, Outcome, Registry};

/// log index -> MessagePack [`Entry`].
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `vote`, `committed`, `purged` -> MessagePack of each.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// `current` -> MessagePack [`StoredSnapshot`].
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "purged";
const SNAPSHOT_KEY: &str = "current";

/// The store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the consensus database {path}: {source}")]
    Open { path: String, source: redb::Error },
    #[error("the consensus database is unreadable: {0}")]
    Storage(#[from] StorageError),
    #[error(
        "the consensus database {path} holds mesh {found}, but the genesis is of mesh {expected}; \
         start with that mesh's genesis, or move the database away to join this mesh afresh"
    )]
    OtherMesh {
        path: String,
        found: MeshId,
        expected: MeshId,
    },
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

fn io_error(during: &'static str, error: impl std::fmt::Display) -> AnyError {
    AnyError::error(format!("{during}: {error}"))
}

/// redb failures as openraft's storage errors, saying what was being done.
trait Storage<T> {
    fn reading(self, during: &'static str) -> Result<T, StorageError>;
    fn writing(self, during: &'static str) -> Result<T, StorageError>;
}

impl<T, E: Into<redb::Error>> Storage<T> for Result<T, E> {
    fn reading(self, during: &'static str) -> Result<T, StorageError> {
        self.map_err(|error| StorageIOError::read(io_error(during, error.into())).into())
    }
    fn writing(self, during: &'static str) -> Result<T, StorageError> {
        self.map_err(|error| StorageIOError::write(io_error(during, error.into())).into())
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    rmp_serde::to_vec_named(value).map_err(|error| StorageIOError::write(io_error("encoding", error)).into())
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, StorageError> {
    rmp_serde::from_slice(bytes).map_err(|error| StorageIOError::read(io_error("decoding", error)).into())
}

/// Opens (or creates) the consensus database at `path` for the mesh whose registry
/// starts as `genesis_registry`, and gives its two halves.
pub fn open(path: &Path, genesis_registry: Registry) -> Result<(LogStore, RegistryMachine), StoreError> {
    let shown = path.display().to_string();
    let db = Database::create(path).map_err(|source| StoreError::Open {
        path: shown.clone(),
        source: source.into(),
    })?;
    let txn = db.begin_write().writing("opening")?;
    for table in [META, SNAPSHOTS] {
        txn.open_table(table).writing("creating tables")?;
    }
    txn.open_table(LOG).writing("creating tables")?;
    txn.commit().writing("creating tables")?;
    let db = Arc::new(db);
    let log = LogStore { db: db.clone() };
    let expected = genesis_registry.mesh();
    let machine = RegistryMachine::load(db, genesis_registry)?;
    let found = machine.read().registry.mesh();
    if found != expected {
        return Err(StoreError::OtherMesh {
            path: shown,
            found,
            expected,
        });
    }
    Ok((log, machine))
}

fn get_meta<T: for<'a> Deserialize<'a>>(db: &Database, key: &str) -> Result<Option<T>, StorageError> {
    let txn = db.begin_read().reading("reading")?;
    let table = txn.open_table(META).reading("reading")?;
    let value = table.get(key).reading("reading")?;
    value.map(|bytes| decode(bytes.value())).transpose()
}

fn put_meta<T: Serialize>(db: &Database, key: &str, value: &T, durability: Durability) -> Result<(), StorageError> {
    let bytes = encode(value)?;
    let mut txn = db.begin_write().writing("writing")?;
    txn.set_durability(durability).writing("writing")?;
    {
        let mut table = txn.open_table(META).writing("writing")?;
        table.insert(key, bytes.as_slice()).writing("writing")?;
    }
    txn.commit().writing("committing")
}

/// Runs `write` on tokio's blocking pool: a durable commit waits for the disk, and the
/// runtime's threads serve the node's Raft messages and requests meanwhile.
async fn off_the_runtime<T: Send + 'static>(
    db: &Arc<Database>,
    write: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || write(&db))
        .await
        .map_err(|error| StorageError::from(StorageIOError::write(io_error("writing", error))))?
}

/// The Raft log and vote. Clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl RaftLogReader<MeshRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().reading("reading the log")?;
        let table = txn.open_table(LOG).reading("reading the log")?;
        let rows = table.range(range).reading("reading the log")?;
        let mut entries = Vec::new();
        for row in rows {
            let (_, bytes) = row.reading("reading the log")?;
            entries.push(decode(bytes.value())?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<MeshRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<MeshRaft>, StorageError> {
        let last_purged_log_id: Option<LogId> = get_meta(&self.db, PURGED_KEY)?;
        let txn = self.db.begin_read().reading("reading the log")?;
        let table = txn.open_table(LOG).reading("reading the log")?;
        let last = table.last().reading("reading the log")?;
        let last_log_id = match last {
            Some((_, bytes)) => Some(*decode::<Entry>(bytes.value())?.get_log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        off_the_runtime(&self.db, move |db| put_meta(db, VOTE_KEY, &vote, Durability::Immediate)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        get_meta(&self.db, VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        put_meta(&self.db, COMMITTED_KEY, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_meta::<Option<LogId>>(&self.db, COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<MeshRaft>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let committed = off_the_runtime(&self.db, move |db| {
            let txn = db.begin_write().writing("appending")?;
            {
                let mut table = txn.open_table(LOG).writing("appending")?;
                for entry in entries {
                    let bytes = encode(&entry)?;
                    table
                        .insert(entry.get_log_id().index, bytes.as_slice())
                        .writing("appending")?;
                }
            }
            txn.commit().writing("appending")
        })
        .await;
        // Durable (redb's default durability is an fsync'd commit) before openraft hears.
        callback.log_io_completed(committed.clone().map_err(std::io::Error::other));
        committed
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        off_the_runtime(&self.db, move |db| remove_range(db, log_id.index.., "truncating")).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge mark first: if the deletion is lost, the entries below it are only
        // garbage that the next purge removes.
        off_the_runtime(&self.db, move |db| {
            put_meta(db, PURGED_KEY, &Some(log_id), Durability::Immediate)?;
            remove_range(db, ..=log_id.index, "purging")
        })
        .await
    }
}

fn remove_range(db: &Database, range: impl RangeBounds<u64>, during: &'static str) -> Result<(), StorageError> {
    let txn = db.begin_write().writing(during)?;
    {
        let mut table = txn.open_table(LOG).writing(during)?;
        table.retain_in(range, |_, _| false).writing(during)?;
    }
    txn.commit().writing(during)
}

/// The registry as applied so far, with what Raft needs to know of it.
#[derive(Debug, Clone)]
pub struct MachineState {
    pub registry: Registry,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// The state machine: the registry in memory, its snapshots in redb. Clones share both.
#[derive(Clone)]
pub struct RegistryMachine {
    db: Arc<Database>,
    state: Arc<RwLock<MachineState>>,
    /// The admitted nodes after every change, for whoever keeps Raft's membership in step.
    nodes: Arc<watch::Sender<BTreeMap<Address, Role>>>,
}

impl RegistryMachine {
    fn load(db: Arc<Database>, genesis_registry: Registry) -> Result<Self, StoreError> {
        let state = match read_snapshot(&db)? {
            Some(stored) => MachineState {
                registry: restore(&stored.data)?,
                last_applied: stored.meta.last_log_id,
                membership: stored.meta.last_membership,
            },
            None => MachineState {
                registry: genesis_registry,
                last_applied: None,
                membership: StoredMembership::default(),
            },
        };
        let nodes = Arc::new(watch::channel(state.registry.nodes().clone()).0);
        Ok(RegistryMachine {
            db,
            state: Arc::new(RwLock::new(state)),
            nodes,
        })
    }

    /// The registry as applied so far.
    pub fn read(&self) -> RwLockReadGuard<'_, MachineState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The admitted nodes, updated whenever an applied entry changes them.
    pub fn watch_nodes(&self) -> watch::Receiver<BTreeMap<Address, Role>> {
        self.nodes.subscribe()
    }

    /// Tells the watchers of the admitted nodes what a replica said, on a node that
    /// holds no replica of its own (its registry stays as it was).
    pub fn publish_nodes(&self, nodes: BTreeMap<Address, Role>) {
        self.nodes.send_replace(nodes);
    }

    fn replace(&self, state: MachineState) {
        let nodes = state.registry.nodes().clone();
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        self.nodes.send_replace(nodes);
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.to_vec(),
        };
        let bytes = encode(&stored)?;
        let txn = self.db.begin_write().writing("saving the snapshot")?;
        {
            let mut table = txn.open_table(SNAPSHOTS).writing("saving the snapshot")?;
            table
                .insert(SNAPSHOT_KEY, bytes.as_slice())
                .writing("saving the snapshot")?;
        }
        txn.commit().writing("saving the snapshot")
    }
}

/// The last snapshot saved, if any.
fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, StorageError> {
    let txn = db.begin_read().reading("reading the snapshot")?;
    let table = txn.open_table(SNAPSHOTS).reading("reading the snapshot")?;
    let stored = table.get(SNAPSHOT_KEY).reading("reading the snapshot")?;
    stored.map(|bytes| decode::<StoredSnapshot>(bytes.value())).transpose()
}

fn restore(data: &[u8]) -> Result<Registry, StorageError> {
    Registry::restore(data).map_err(|error| StorageIOError::read_snapshot(None, io_error("restoring", error)).into())
}

impl RaftSnapshotBuilder<MeshRaft> for RegistryMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (data, meta) = {
            let state = self.read();
            let snapshot_id = match &state.last_applied {
                Some(log_id) => format!("{}-{}", log_id.leader_id, log_id.index),
                None => "empty".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id,
            };
            (state.registry.snapshot(), meta)
        };
        self.save_snapshot(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<MeshRaft> for RegistryMachine {
    type SnapshotBuilder = RegistryMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchApplied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut nodes_changed = false;
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(BatchApplied::default()),
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        responses.push(BatchApplied::default());
                    }
                    EntryPayload::Normal(batch) => {
                        let results: Vec<Applied> =
                            batch.0.iter().flat_map(|signed| state.registry.apply(signed)).collect();
                        nodes_changed |= results
                            .iter()
                            .any(|applied| matches!(applied, Applied::Done(Outcome::Node { .. })));
                        responses.push(BatchApplied(results));
                    }
                }
            }
            if nodes_changed {
                self.nodes.send_replace(state.registry.nodes().clone());
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let registry = restore(&data)?;
        let ours = self.read().registry.mesh();
        if registry.mesh() != ours {
            return Err(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(format!("the snapshot is of mesh {}, not of {ours}", registry.mesh())),
            )
            .into());
        }
        self.save_snapshot(meta, &data)?;
        self.replace(MachineState {
            registry,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(read_snapshot(&self.db)?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
