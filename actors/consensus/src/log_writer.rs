//! The Raft log's writes, on a thread of their own, committed in groups.
//!
//! Why: a durable redb commit is an fsync, about a millisecond on a busy disk. Made inside
//! openraft's `append`, it held a runtime thread for that long on every entry, on the
//! leader and on each follower alike. Here `append` hands its entries to this thread and
//! returns; the thread commits all that has queued up meanwhile in one transaction, with
//! one fsync, and only then tells openraft the entries are flushed (openraft acknowledges
//! nothing before). Entries handed over but not yet committed are kept in memory
//! ([`Unflushed`]), where the log's readers find them. openraft 0.9's core still awaits
//! each flush before its next step, so today one append waits at a time and what this
//! gains is the runtime thread; openraft's storage contract allows more, and the grouping
//! and the reads from memory are ready for it.
//!
//! Writes are done in the order they were handed over, so a truncation or a purge after
//! an append removes what that append wrote.

// openraft's traits take its `StorageError` (256 bytes); these helpers return it too.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use openraft::storage::LogFlushed;
use openraft::{AnyError, RaftLogId, StorageIOError};
use redb::{Database, Durability};
use tokio::sync::oneshot;

use crate::raft_types::{Entry, MeshRaft, StorageError};

/// A write for the thread, in log order.
enum Write {
    /// Entries to append; `flushed` is told once they are durable. `seq` marks them in
    /// [`Unflushed`], so that a later write of the same index is not mistaken for them.
    Append {
        seq: u64,
        entries: Vec<Entry>,
        flushed: LogFlushed<MeshRaft>,
    },
    /// A value of the meta table; `done` (when someone waits) is told once it is written,
    /// durably if `durable`.
    Meta {
        key: &'static str,
        bytes: Vec<u8>,
        durable: bool,
        done: Option<oneshot::Sender<Result<(), StorageError>>>,
    },
    /// Log entries to delete (a truncation or a purge), durably.
    Remove {
        from: Bound<u64>,
        to: Bound<u64>,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
}

impl Write {
    fn is_durable(&self) -> bool {
        !matches!(self, Write::Meta { durable: false, .. })
    }
}

/// Entries handed to the writer and not yet committed, by index, each with the `seq` of
/// the append that carried it.
#[derive(Default)]
pub struct Unflushed {
    entries: BTreeMap<u64, (u64, Entry)>,
    next_seq: u64,
}

/// The handle of the writer thread; clones share it. The thread ends once every clone is
/// dropped and the writes handed over are done.
#[derive(Clone)]
pub struct LogWriter {
    queue: mpsc::Sender<Write>,
    unflushed: Arc<Mutex<Unflushed>>,
}

impl LogWriter {
    /// Starts the thread that writes `db`'s tables `log` and `meta`.
    pub fn start(
        db: Arc<Database>,
        log: redb::TableDefinition<'static, u64, &'static [u8]>,
        meta: redb::TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> std::io::Result<LogWriter> {
        let (queue, writes) = mpsc::channel();
        let unflushed = Arc::new(Mutex::new(Unflushed::default()));
        let tables = Tables { db, log, meta };
        let shared = unflushed.clone();
        std::thread::Builder::new()
            .name("raft-log".to_string())
            .spawn(move || run(&tables, &writes, &shared))?;
        Ok(LogWriter { queue, unflushed })
    }

    /// Hands `entries` over; `flushed` hears once they are durable.
    pub fn append(&self, entries: Vec<Entry>, flushed: LogFlushed<MeshRaft>) -> Result<(), StorageError> {
        let seq = {
            let mut unflushed = self.lock();
            unflushed.next_seq += 1;
            let seq = unflushed.next_seq;
            for entry in &entries {
                unflushed.entries.insert(entry.get_log_id().index, (seq, entry.clone()));
            }
            seq
        };
        self.send(Write::Append { seq, entries, flushed })
    }

    /// Writes a meta value durably, and waits for it.
    pub async fn put_durably(&self, key: &'static str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let (done, written) = oneshot::channel();
        self.send(Write::Meta {
            key,
            bytes,
            durable: true,
            done: Some(done),
        })?;
        written.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Writes a meta value with the next group, without an fsync of its own and without
    /// waiting: for what Raft can learn again.
    pub fn put_lazily(&self, key: &'static str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.send(Write::Meta {
            key,
            bytes,
            durable: false,
            done: None,
        })
    }

    /// Deletes the entries in `range`, from memory at once and from the disk durably,
    /// after every write handed over before; waits for it.
    pub async fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), StorageError> {
        let (from, to) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.lock().entries.retain(|index, _| !(from, to).contains(index));
        let (done, removed) = oneshot::channel();
        self.send(Write::Remove { from, to, done })?;
        removed.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// The entries in `range` that are not committed yet.
    pub fn unflushed(&self, range: &impl RangeBounds<u64>) -> BTreeMap<u64, Entry> {
        let unflushed = self.lock();
        unflushed
            .entries
            .range((range.start_bound().cloned(), range.end_bound().cloned()))
            .map(|(index, (_, entry))| (*index, entry.clone()))
            .collect()
    }

    /// The last entry not committed yet.
    pub fn last_unflushed(&self) -> Option<Entry> {
        self.lock()
            .entries
            .last_key_value()
            .map(|(_, (_, entry))| entry.clone())
    }

    fn send(&self, write: Write) -> Result<(), StorageError> {
        self.queue.send(write).map_err(|_| stopped())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unflushed> {
        self.unflushed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn stopped() -> StorageError {
    StorageIOError::write(AnyError::error("the log writer has stopped")).into()
}

struct Tables {
    db: Arc<Database>,
    log: redb::TableDefinition<'static, u64, &'static [u8]>,
    meta: redb::TableDefinition<'static, &'static str, &'static [u8]>,
}

/// Takes the first write, then all that wait behind it, commits them in one transaction
/// and tells each one.
fn run(tables: &Tables, writes: &mpsc::Receiver<Write>, unflushed: &Mutex<Unflushed>) {
    while let Ok(first) = writes.recv() {
        let mut group = vec![first];
        group.extend(writes.try_iter());
        let outcome = commit(tables, &group);
        let failed = |reason: &str| StorageIOError::write(AnyError::error(reason)).into();
        let mut unflushed = unflushed.lock().unwrap_or_else(PoisonError::into_inner);
        for write in group {
            match write {
                Write::Append { seq, entries, flushed } => {
                    for entry in &entries {
                        let index = entry.get_log_id().index;
                        if unflushed.entries.get(&index).is_some_and(|(held, _)| *held == seq) {
                            unflushed.entries.remove(&index);
                        }
                    }
                    flushed.log_io_completed(outcome.clone().map_err(std::io::Error::other));
                }
                Write::Meta { done: Some(done), .. } | Write::Remove { done, .. } => {
                    let _ = done.send(outcome.as_ref().map(|_| ()).map_err(|reason| failed(reason)));
                }
                Write::Meta { done: None, .. } => {}
            }
        }
    }
}

/// One transaction for the group: durable unless every write in it may be lazy.
fn commit(tables: &Tables, group: &[Write]) -> Result<(), String> {
    let redb = |error: redb::Error| format!("writing the Raft log: {error}");
    let mut txn = tables.db.begin_write().map_err(|e| redb(e.into()))?;
    if !group.iter().any(Write::is_durable) {
        txn.set_durability(Durability::None).map_err(|e| redb(e.into()))?;
    }
    {
        let mut log = txn.open_table(tables.log).map_err(|e| redb(e.into()))?;
        let mut meta = txn.open_table(tables.meta).map_err(|e| redb(e.into()))?;
        for write in group {
            match write {
                Write::Append { entries, .. } => {
                    for entry in entries {
                        let bytes = rmp_serde::to_vec_named(entry)
                            .map_err(|error| format!("cannot encode a log entry: {error}"))?;
                        log.insert(entry.get_log_id().index, bytes.as_slice())
                            .map_err(|e| redb(e.into()))?;
                    }
                }
                Write::Meta { key, bytes, .. } => {
                    meta.insert(*key, bytes.as_slice()).map_err(|e| redb(e.into()))?;
                }
                Write::Remove { from, to, .. } => {
                    log.retain_in((*from, *to), |_, _| false).map_err(|e| redb(e.into()))?;
                }
            }
        }
    }
    txn.commit().map_err(|e| redb(e.into()))
}
