//! The CMTP audit trail: one entry per final message, each committing to the hashes of
//! the request and response and to the entry before it, so that any later change to,
//! removal of or insertion into the stored history is detectable by [`verify_chain`].
//!
//! Entries are built in memory on the hot path and written in batches (group commit):
//! one durable redb transaction per batch instead of one per message. A batch is written
//! whole or not at all, so a crash loses at most the entries not yet committed and
//! never leaves a broken chain.
//!
//! # Entry hash
//!
//! `hash = keccak256(preimage)` where the 128-byte preimage is, big-endian throughout:
//!
//! | offset | len | field |
//! | ---: | ---: | --- |
//! | 0 | 14 | ASCII `cmesh-audit-v1` (domain separation) |
//! | 14 | 8 | `seq` (u64, first entry is 1) |
//! | 22 | 8 | `ts_ms` (u64, unix milliseconds) |
//! | 30 | 32 | `prev` (hash of entry `seq - 1`, zeros for seq 1) |
//! | 62 | 32 | `request` (keccak256 of the request bytes) |
//! | 94 | 32 | `response` (keccak256 of the response bytes) |
//! | 126 | 2 | `status` (u16) |
//!
//! # Storage
//!
//! `audit.redb`, table `audit_entries`: seq (u64) → 146 bytes, the preimage without its
//! 14-byte domain prefix followed by the 32-byte hash. Table `meta`: `head` → seq of
//! the last committed entry (written in the same transaction as the entries), and
//! `event_seq` → the first event sequence number not yet handed out (see the actor).

use std::path::Path;

use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};
use tracing::error;

use cmesh_common::hash::{from_hex0x, to_hex0x};
use cmesh_common::{keccak256, Address};

use crate::error::{AuditError, ChainProblem};

/// File name of the audit store inside a node's data directory.
pub const AUDIT_FILE: &str = "audit.redb";
/// First bytes of every hash preimage, so an entry hash cannot collide with other
/// keccak256 uses (addresses, signatures) over the same bytes.
pub const HASH_DOMAIN: &[u8; 14] = b"cmesh-audit-v1";
/// Length of the hash preimage.
pub const PREIMAGE_LEN: usize = 128;
/// Length of a stored entry.
pub const ENCODED_LEN: usize = PREIMAGE_LEN - HASH_DOMAIN.len() + 32;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_HEAD: &str = "head";
const META_EVENT_SEQ: &str = "event_seq";

const ZERO: [u8; 32] = [0; 32];

/// One link of the audit chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub ts_ms: u64,
    pub prev: [u8; 32],
    pub request: [u8; 32],
    pub response: [u8; 32],
    pub status: u16,
    pub hash: [u8; 32],
}

impl AuditEntry {
    /// Builds an entry and computes its hash.
    pub fn new(seq: u64, ts_ms: u64, prev: [u8; 32], request: [u8; 32], response: [u8; 32], status: u16) -> Self {
        let mut entry = AuditEntry {
            seq,
            ts_ms,
            prev,
            request,
            response,
            status,
            hash: ZERO,
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// The bytes the hash is taken over (see the module docs for the layout).
    pub fn preimage(&self) -> [u8; PREIMAGE_LEN] {
        let mut out = [0u8; PREIMAGE_LEN];
        out[..14].copy_from_slice(HASH_DOMAIN);
        out[14..22].copy_from_slice(&self.seq.to_be_bytes());
        out[22..30].copy_from_slice(&self.ts_ms.to_be_bytes());
        out[30..62].copy_from_slice(&self.prev);
        out[62..94].copy_from_slice(&self.request);
        out[94..126].copy_from_slice(&self.response);
        out[126..128].copy_from_slice(&self.status.to_be_bytes());
        out
    }

    /// keccak256 of the preimage; equals `hash` for an untouched entry.
    pub fn compute_hash(&self) -> [u8; 32] {
        keccak256(&self.preimage())
    }

    /// The stored form: preimage without the domain prefix, then the hash.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let preimage = self.preimage();
        let body = &preimage[HASH_DOMAIN.len()..];
        out[..body.len()].copy_from_slice(body);
        out[body.len()..].copy_from_slice(&self.hash);
        out
    }

    /// Parses the stored form; `None` if the length is wrong.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let hash_at = |at: usize| {
            let mut h = [0u8; 32];
            h.copy_from_slice(&bytes[at..at + 32]);
            h
        };
        Some(AuditEntry {
            seq: u64_at(0),
            ts_ms: u64_at(8),
            prev: hash_at(16),
            request: hash_at(48),
            response: hash_at(80),
            status: u16::from_be_bytes([bytes[112], bytes[113]]),
            hash: hash_at(114),
        })
    }

    /// The JSON form published on `cmesh.audit.<node>`.
    pub fn to_record(&self, node: Address) -> AuditRecord {
        AuditRecord {
            node,
            seq: self.seq,
            ts: self.ts_ms,
            prev: to_hex0x(&self.prev),
            request: to_hex0x(&self.request),
            response: to_hex0x(&self.response),
            status: self.status,
            hash: to_hex0x(&self.hash),
        }
    }
}

/// An audit entry as published on NATS: hashes as 0x-hex strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub node: Address,
    pub seq: u64,
    pub ts: u64,
    pub prev: String,
    pub request: String,
    pub response: String,
    pub status: u16,
    pub hash: String,
}

impl AuditRecord {
    /// Back to an entry, `None` if a hash field is not 32 bytes of hex. The hash is taken
    /// as published; compare it with [`AuditEntry::compute_hash`] to check it.
    pub fn to_entry(&self) -> Option<AuditEntry> {
        Some(AuditEntry {
            seq: self.seq,
            ts_ms: self.ts,
            prev: from_hex0x(&self.prev)?,
            request: from_hex0x(&self.request)?,
            response: from_hex0x(&self.response)?,
            status: self.status,
            hash: from_hex0x(&self.hash)?,
        })
    }
}

/// The subject audit entries of `node` are published on.
pub fn audit_subject(node: &Address) -> String {
    format!("cmesh.audit.{node}")
}

/// What [`verify_chain`] found in an intact chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Number of entries (equal to the head seq, as seqs start at 1 without gaps).
    pub entries: u64,
    /// Seq of the last entry, 0 for an empty chain.
    pub head: u64,
    /// Hash of the last entry, zeros for an empty chain.
    #[serde(serialize_with = "hex0x")]
    pub head_hash: [u8; 32],
}

/// A hash as clients read it: 0x-hex.
fn hex0x<S: serde::Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&to_hex0x(bytes))
}

/// Checks the whole audit chain stored at `path` (an `audit.redb` file): seqs run from 1
/// without gaps, every `prev` is the hash of the entry before, every stored hash matches
/// its fields, and the recorded head is the last entry.
///
/// Opens the file read-only. A file left by a crash needs redb's recovery, which a
/// read-only open refuses; then it is opened for writing, which only repairs redb's own
/// bookkeeping and never changes committed entries. The node must not be running (redb
/// locks the file); a running node can be asked with the actor's `VerifyAudit` message.
pub fn verify_chain(path: &Path) -> Result<VerifyReport, AuditError> {
    match ReadOnlyDatabase::open(path) {
        Ok(db) => verify_txn(&db.begin_read()?),
        Err(redb::DatabaseError::RepairAborted) => {
            let db = Database::open(path)?;
            verify_txn(&db.begin_read()?)
        }
        Err(err) => Err(err.into()),
    }
}

fn verify_txn(txn: &ReadTransaction) -> Result<VerifyReport, AuditError> {
    let head = match txn.open_table(META) {
        Ok(meta) => meta.get(META_HEAD)?.map(|guard| guard.value()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(err) => return Err(err.into()),
    };
    let entries = match txn.open_table(ENTRIES) {
        Ok(table) => Some(table),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(err) => return Err(err.into()),
    };
    let mut expected = 1u64;
    let mut prev = ZERO;
    if let Some(entries) = entries {
        for item in entries.iter()? {
            let (key, value) = item?;
            let seq = key.value();
            if seq != expected {
                let (seq, problem) = if seq > expected {
                    (
                        expected,
                        ChainProblem::Missing {
                            next_present: Some(seq),
                        },
                    )
                } else {
                    // Keys ascend from the first, so only a key 0 can be below 1.
                    (seq, ChainProblem::ZeroSeq)
                };
                return Err(AuditError::Broken { seq, problem });
            }
            let bytes = value.value();
            let entry = AuditEntry::decode(bytes).ok_or(AuditError::Broken {
                seq,
                problem: ChainProblem::BadEncoding { len: bytes.len() },
            })?;
            check_entry(&entry, seq, &prev)?;
            prev = entry.hash;
            expected += 1;
        }
    }
    let last = expected - 1;
    let broken = match head {
        None if last == 0 => None,
        Some(head) if head == last => None,
        // Entries up to the head were committed, so the tail went missing.
        Some(head) if head > last => Some((last + 1, ChainProblem::Missing { next_present: None })),
        Some(head) => Some((head + 1, ChainProblem::HeadMismatch { head: Some(head), last })),
        None => Some((1, ChainProblem::HeadMismatch { head: None, last })),
    };
    if let Some((seq, problem)) = broken {
        return Err(AuditError::Broken { seq, problem });
    }
    Ok(VerifyReport {
        entries: last,
        head: last,
        head_hash: prev,
    })
}

/// Checks one decoded entry stored under `seq`, whose predecessor hashes to `prev`.
fn check_entry(entry: &AuditEntry, seq: u64, prev: &[u8; 32]) -> Result<(), AuditError> {
    let problem = if entry.seq != seq {
        ChainProblem::SeqMismatch { stored: entry.seq }
    } else if &entry.prev != prev {
        ChainProblem::PrevMismatch {
            expected: *prev,
            found: entry.prev,
        }
    } else {
        let computed = entry.compute_hash();
        if computed == entry.hash {
            return Ok(());
        }
        ChainProblem::HashMismatch {
            stored: entry.hash,
            computed,
        }
    };
    Err(AuditError::Broken { seq, problem })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: [u8; 32],
}

/// The node's audit store: the chain tip in memory, entries not yet committed, and the
/// redb database they are committed to. Dropping it commits what is pending.
pub struct AuditLog {
    db: Database,
    durable: Head,
    tip: Head,
    pending: Vec<AuditEntry>,
}

impl AuditLog {
    /// Opens (or creates) the store at `path` and continues the chain from its head.
    /// Refuses a store whose head entry is missing or altered: appending to a chain
    /// that is already broken would hide where it broke.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(META)?;
        txn.commit()?;
        let head = read_head(&db)?;
        Ok(AuditLog {
            db,
            durable: head,
            tip: head,
            pending: Vec::new(),
        })
    }

    /// Adds an entry to the in-memory tip; it is durable after the next [`commit`].
    ///
    /// [`commit`]: AuditLog::commit
    pub fn append(&mut self, ts_ms: u64, request: [u8; 32], response: [u8; 32], status: u16) -> AuditEntry {
        let entry = AuditEntry::new(
            self.tip.seq.saturating_add(1),
            ts_ms,
            self.tip.hash,
            request,
            response,
            status,
        );
        self.tip = Head {
            seq: entry.seq,
            hash: entry.hash,
        };
        self.pending.push(entry);
        entry
    }

    /// Writes all pending entries and the new head in one durable transaction and
    /// returns them. On error nothing is written and the entries stay pending.
    pub fn commit(&mut self) -> Result<Vec<AuditEntry>, AuditError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_write()?;
        {
            let mut entries = txn.open_table(ENTRIES)?;
            for entry in &self.pending {
                entries.insert(entry.seq, entry.encode().as_slice())?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(META_HEAD, self.tip.seq)?;
        }
        txn.commit()?;
        self.durable = self.tip;
        Ok(std::mem::take(&mut self.pending))
    }

    /// Seq of the last durable entry (0 if none).
    pub fn head(&self) -> u64 {
        self.durable.seq
    }

    /// Hash of the last durable entry (zeros if none).
    pub fn head_hash(&self) -> [u8; 32] {
        self.durable.hash
    }

    /// Number of entries appended but not yet committed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Verifies the committed chain through this open handle (see [`verify_chain`]).
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        verify_txn(&self.db.begin_read()?)
    }

    /// Durably reserves `count` event sequence numbers and returns the first: at least
    /// `floor`, and above every number reserved before in this store.
    pub fn reserve_event_seqs(&mut self, floor: u64, count: u64) -> Result<u64, AuditError> {
        let txn = self.db.begin_write()?;
        let start;
        {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(META_EVENT_SEQ)?.map(|guard| guard.value());
            start = stored.unwrap_or(0).max(floor);
            meta.insert(META_EVENT_SEQ, start.saturating_add(count))?;
        }
        txn.commit()?;
        Ok(start)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(err) = self.commit() {
            error!(error = %err, lost = self.pending.len(), "audit entries could not be committed at shutdown");
        }
    }
}

/// Reads the head recorded in `meta` and checks it against the last stored entry.
fn read_head(db: &Database) -> Result<Head, AuditError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let entries = txn.open_table(ENTRIES)?;
    let head = meta.get(META_HEAD)?.map(|guard| guard.value());
    let last = entries.last()?.map(|(key, _)| key.value());
    match (head, last) {
        (None | Some(0), None) => Ok(Head { seq: 0, hash: ZERO }),
        (Some(head), Some(last)) if head == last => {
            let broken = |problem| AuditError::Broken { seq: head, problem };
            let guard = entries
                .get(head)?
                .ok_or_else(|| broken(ChainProblem::Missing { next_present: None }))?;
            let bytes = guard.value();
            let entry =
                AuditEntry::decode(bytes).ok_or_else(|| broken(ChainProblem::BadEncoding { len: bytes.len() }))?;
            if entry.seq != head {
                return Err(broken(ChainProblem::SeqMismatch { stored: entry.seq }));
            }
            let computed = entry.compute_hash();
            if computed != entry.hash {
                return Err(broken(ChainProblem::HashMismatch {
                    stored: entry.hash,
                    computed,
                }));
            }
            Ok(Head {
                seq: head,
                hash: entry.hash,
            })
        }
        (head, last) => {
            let last = last.unwrap_or(0);
            Err(AuditError::Broken {
                seq: head.unwrap_or(0).min(last).saturating_add(1),
                problem: ChainProblem::HeadMismatch { head, last },
            })
        }
    }
}

#[cfg(test)]
mod tests;
