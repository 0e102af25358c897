//! The hash DAG of a context's transactions, as stored in redb. Adding a transaction
//! checks what depends on its causal past (its parents are known and of the same
//! context, its time is not before theirs, its author was a member there) and records
//! where it sorts: every node applies a context's transactions in order of (height, id),
//! height being one more than the highest parent's. That order is a linear extension of
//! the DAG computed from the transactions alone, so any two nodes holding the same
//! transactions apply them in the same order.

use std::collections::{BTreeSet, HashMap};

use cmesh_common::Address;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::ids::Id;
use crate::membership::{self, Change, ChangeRecord, ChangeSource, Members};
use crate::store::{self, ContextRecord};
use crate::tables::Tables;
use crate::tx::{Op, TxBody};

/// What a node keeps about each transaction besides the transaction itself and its place
/// (the row's key). Encoded as a MessagePack array: it is in every row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxMeta {
    pub time_ms: u64,
    #[serde(with = "crate::ids::address_bytes")]
    pub author: Address,
    pub seq: u64,
    /// The latest membership changes strictly before this transaction.
    pub frontier: Vec<Id>,
    /// Whether this transaction is itself a membership change (in
    /// [`CHANGES`](crate::tables::CHANGES)).
    pub change: bool,
}

/// A row of [`TRANSACTIONS`](crate::tables::TRANSACTIONS): the length of the encoded
/// [`TxMeta`] (2 bytes, big-endian), the encoded meta, then the encoded signed
/// transaction. A node's own transaction has its meta row as soon as it is added to the
/// DAG (later transactions of the same batch name it as a parent) and gets its signed
/// encoding at the end of the batch; the row is never committed without it.
pub struct TxRow<'a> {
    meta: &'a [u8],
    tx: &'a [u8],
}

impl<'a> TxRow<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<TxRow<'a>, StateError> {
        let corrupt = || StateError::Record(format!("a transaction row of {} bytes", bytes.len()));
        let (len, rest) = bytes.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let (meta, tx) = rest
            .split_at_checked(usize::from(u16::from_be_bytes(*len)))
            .ok_or_else(corrupt)?;
        Ok(TxRow { meta, tx })
    }

    pub fn meta(&self) -> Result<TxMeta, StateError> {
        rmp_serde::from_slice(self.meta).map_err(|source| StateError::Decode {
            what: "transaction meta",
            source,
        })
    }

    /// The encoded signed transaction.
    pub fn tx(&self) -> &'a [u8] {
        self.tx
    }

    /// A row of `meta` and the encoded transaction `tx` (empty: not signed yet).
    pub fn encode(meta: &TxMeta, tx: &[u8]) -> Result<Vec<u8>, StateError> {
        let meta = rmp_serde::to_vec(meta).map_err(|source| StateError::Encode {
            what: "transaction meta",
            source,
        })?;
        Self::join(&meta, tx)
    }

    fn join(meta: &[u8], tx: &[u8]) -> Result<Vec<u8>, StateError> {
        let len = u16::try_from(meta.len())
            .map_err(|_| StateError::Record(format!("transaction metadata of {} bytes", meta.len())))?;
        let mut row = Vec::with_capacity(2 + meta.len() + tx.len());
        row.extend_from_slice(&len.to_be_bytes());
        row.extend_from_slice(meta);
        row.extend_from_slice(tx);
        Ok(row)
    }
}

/// Where the transaction `id` sorts in its context, if it is held (in any context: the
/// row under the context's prefix says whether it is that context's).
pub fn place(heights: &impl ReadableTable<&'static [u8], u64>, id: &Id) -> Result<Option<OrderKey>, StateError> {
    Ok(heights.get(id.0.as_slice())?.map(|height| OrderKey {
        height: height.value(),
        id: *id,
    }))
}

/// Where the transaction `id` sorts in `context`, if `context` holds it. `None` also for a
/// transaction held in another context.
pub fn locate(
    heights: &impl ReadableTable<&'static [u8], u64>,
    txs: &impl ReadableTable<&'static [u8], &'static [u8]>,
    context: &Id,
    id: &Id,
) -> Result<Option<OrderKey>, StateError> {
    let Some(key) = place(heights, id)? else {
        return Ok(None);
    };
    Ok(txs.get(key.in_context(context).as_slice())?.map(|_| key))
}

/// Puts the signed encoding of a transaction this node made into its row, which
/// [`add`] wrote with the meta alone.
pub fn attach_signed(tables: &mut Tables, context: &Id, id: &Id, tx: &[u8]) -> Result<(), StateError> {
    let unsigned = || StateError::Record(format!("transaction {id} has no row to sign into"));
    let key = place(&tables.heights, id)?.ok_or_else(unsigned)?.in_context(context);
    let row = {
        let bytes = tables.txs.get(key.as_slice())?.ok_or_else(unsigned)?;
        let row = TxRow::parse(bytes.value())?;
        TxRow::join(row.meta, tx)?
    };
    tables.txs.insert(key.as_slice(), row.as_slice())?;
    Ok(())
}

/// Where a transaction sorts in its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderKey {
    pub height: u64,
    pub id: Id,
}

impl OrderKey {
    /// The table key of this position in `context`.
    pub fn in_context(&self, context: &Id) -> [u8; 72] {
        let mut key = [0u8; 72];
        key[..32].copy_from_slice(&context.0);
        key[32..40].copy_from_slice(&self.height.to_be_bytes());
        key[40..].copy_from_slice(&self.id.0);
        key
    }

    /// The position a table key holds (its last 40 bytes).
    pub fn from_table_key(key: &[u8]) -> Result<OrderKey, StateError> {
        let tail: &[u8; 40] = key
            .get(key.len().saturating_sub(40)..)
            .and_then(|tail| tail.try_into().ok())
            .ok_or_else(|| StateError::Record(format!("an order key of {} bytes", key.len())))?;
        let mut height = [0u8; 8];
        height.copy_from_slice(&tail[..8]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&tail[8..]);
        Ok(OrderKey {
            height: u64::from_be_bytes(height),
            id: Id(id),
        })
    }

    /// The first position of `context`, for the start of a range.
    pub fn first_in(context: &Id) -> [u8; 72] {
        OrderKey {
            height: 0,
            id: Id::ZERO,
        }
        .in_context(context)
    }

    /// The last position of `context`, for the end of a range.
    pub fn last_in(context: &Id) -> [u8; 72] {
        OrderKey {
            height: u64::MAX,
            id: Id([0xff; 32]),
        }
        .in_context(context)
    }
}

pub fn seq_key(context: &Id, author: &Address, seq: u64, id: &Id) -> [u8; 92] {
    let mut key = [0u8; 92];
    key[..32].copy_from_slice(&context.0);
    key[32..52].copy_from_slice(&author.0);
    key[52..60].copy_from_slice(&seq.to_be_bytes());
    key[60..].copy_from_slice(&id.0);
    key
}

pub fn change_key(context: &Id, id: &Id) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&context.0);
    key[32..].copy_from_slice(&id.0);
    key
}

/// What became of a transaction offered to the DAG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Stored; it sorts at this position (not applied yet).
    New(OrderKey),
    /// Already held.
    Duplicate,
    /// These parents are not held yet; try again once they are.
    Missing(Vec<Id>),
    /// It breaks a rule of its causal past; never stored.
    Invalid(String),
}

/// Members as of a frontier, remembered. A frontier names its changes by their ids,
/// which are hashes of their content, so a remembered answer is never stale.
#[derive(Default)]
pub struct MemberCache(HashMap<Vec<Id>, Members>);

/// Frontiers remembered before the cache starts over.
const CACHED_FRONTIERS: usize = 1_024;

impl MemberCache {
    pub fn members(
        &mut self,
        changes: &impl ChangeTable,
        context: &Id,
        frontier: &[Id],
    ) -> Result<&Members, StateError> {
        if !self.0.contains_key(frontier) {
            if self.0.len() >= CACHED_FRONTIERS {
                self.0.clear();
            }
            let members = membership::members(
                &StoredChanges {
                    table: changes,
                    context,
                },
                frontier,
            )?;
            self.0.insert(frontier.to_vec(), members);
        }
        Ok(&self.0[frontier])
    }
}

/// The table of membership changes, in a read or a write transaction.
pub trait ChangeTable: ReadableTable<&'static [u8], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8], &'static [u8]>> ChangeTable for T {}

/// The membership changes of one context, read from their table.
pub struct StoredChanges<'a, T> {
    pub table: &'a T,
    pub context: &'a Id,
}

impl<T: ChangeTable> ChangeSource for StoredChanges<'_, T> {
    type Error = StateError;

    fn change(&self, id: &Id) -> Result<ChangeRecord, StateError> {
        let bytes = self
            .table
            .get(change_key(self.context, id).as_slice())?
            .ok_or_else(|| StateError::Record(format!("membership change {id} is missing")))?;
        store::decode(bytes.value())
    }
}

/// Adds a genesis: the context's first transaction. Answers the new context's record
/// (nothing applied yet), or `None` if the context is held already. `signed` is the
/// encoded signed transaction, `None` for this node's own (see [`attach_signed`]).
pub fn add_genesis(
    tables: &mut Tables,
    body: &TxBody,
    id: Id,
    signed: Option<&[u8]>,
) -> Result<Option<ContextRecord>, StateError> {
    let Op::Create {
        app,
        name,
        version,
        limits,
        ..
    } = &body.op
    else {
        return Err(StateError::Record(format!("transaction {id} is not a genesis")));
    };
    if tables.heights.get(id.0.as_slice())?.is_some() {
        return Ok(None);
    }
    let mut record = ContextRecord {
        id,
        app: *app,
        name: name.clone(),
        version: version.clone(),
        created_by: body.caller,
        created_at_ms: body.time_ms,
        limits: *limits,
        applied: 0,
        heads: Vec::new(),
        root: Id(crate::merkle::EMPTY_ROOT),
        last_time_ms: body.time_ms,
        top: None,
        frontier: Vec::new(),
        seqs: Vec::new(),
    };
    store_new(tables, &mut record, body, id, signed, 1, Vec::new())?;
    Ok(Some(record))
}

/// Adds a transaction of a held context, if its causal past allows it. `signed` is the
/// encoded signed transaction, `None` for this node's own (see [`attach_signed`]).
pub fn add(
    tables: &mut Tables,
    members: &mut MemberCache,
    record: &mut ContextRecord,
    body: &TxBody,
    id: Id,
    signed: Option<&[u8]>,
) -> Result<Added, StateError> {
    if tables.heights.get(id.0.as_slice())?.is_some() {
        return Ok(Added::Duplicate);
    }
    if body.is_genesis() || body.context != record.id {
        return Ok(Added::Invalid(format!(
            "it is not a transaction of context {}",
            record.id
        )));
    }
    let mut parents = Vec::with_capacity(body.parents.len());
    let mut missing = Vec::new();
    for parent in &body.parents {
        let Some(key) = place(&tables.heights, parent)? else {
            missing.push(*parent);
            continue;
        };
        let Some(row) = tables.txs.get(key.in_context(&record.id).as_slice())? else {
            return Ok(Added::Invalid(format!("its parent {parent} is of another context")));
        };
        parents.push((key, TxRow::parse(row.value())?.meta()?));
    }
    if !missing.is_empty() {
        return Ok(Added::Missing(missing));
    }
    let height = parents.iter().map(|(key, _)| key.height).max().unwrap_or(0) + 1;
    let latest_parent = parents.iter().map(|(_, meta)| meta.time_ms).max().unwrap_or(0);
    if body.time_ms < latest_parent {
        return Ok(Added::Invalid(format!(
            "its time {} is before its parents' {latest_parent}",
            body.time_ms
        )));
    }
    let mut candidates = BTreeSet::new();
    for (parent, meta) in &parents {
        candidates.extend(meta.frontier.iter().copied());
        if meta.change {
            candidates.insert(parent.id);
        }
    }
    let frontier = membership::frontier(
        &StoredChanges {
            table: &tables.changes,
            context: &record.id,
        },
        candidates,
    )?;
    if !members
        .members(&tables.changes, &record.id, &frontier)?
        .contains_key(&body.author)
    {
        return Ok(Added::Invalid(format!(
            "its author {} is not a member of context {} in its causal past",
            body.author, record.id
        )));
    }
    let key = store_new(tables, record, body, id, signed, height, frontier)?;
    Ok(Added::New(key))
}

/// Writes the rows of a transaction that passed the checks (this node's own, `signed` =
/// `None`, waits for its signature) and updates the record's heads, frontier, author
/// counts and time. Its place in the apply order is marked not applied yet.
fn store_new(
    tables: &mut Tables,
    record: &mut ContextRecord,
    body: &TxBody,
    id: Id,
    signed: Option<&[u8]>,
    height: u64,
    frontier: Vec<Id>,
) -> Result<OrderKey, StateError> {
    let context = record.id;
    let key = OrderKey { height, id };
    let change = Change::of(body);
    let meta = TxMeta {
        time_ms: body.time_ms,
        author: body.author,
        seq: body.seq,
        frontier: frontier.clone(),
        change: change.is_some(),
    };
    let row = TxRow::encode(&meta, signed.unwrap_or_default())?;
    let place = key.in_context(&context);
    tables.txs.insert(place.as_slice(), row.as_slice())?;
    tables.heights.insert(id.0.as_slice(), height)?;
    tables.order.insert(place.as_slice(), [].as_slice())?;
    tables
        .seqs
        .insert(seq_key(&context, &body.author, body.seq, &id).as_slice(), ())?;
    let mut candidates: BTreeSet<Id> = record.frontier.iter().copied().collect();
    candidates.extend(frontier.iter().copied());
    if let Some(change) = change {
        let earlier = membership::changes_before(
            &StoredChanges {
                table: &tables.changes,
                context: &context,
            },
            &frontier,
        )?;
        let change = ChangeRecord {
            height,
            change,
            earlier: earlier.into_iter().collect(),
        };
        tables
            .changes
            .insert(change_key(&context, &id).as_slice(), store::encode(&change)?.as_slice())?;
        candidates.insert(id);
    }
    record.frontier = membership::frontier(
        &StoredChanges {
            table: &tables.changes,
            context: &context,
        },
        candidates,
    )?;
    record.heads.retain(|head| !body.parents.contains(head));
    record.heads.push(id);
    record.heads.sort();
    match record.seqs.binary_search_by(|(author, _)| author.cmp(&body.author)) {
        Ok(i) => record.seqs[i].1 = record.seqs[i].1.max(body.seq),
        Err(i) => record.seqs.insert(i, (body.author, body.seq)),
    }
    record.applied += 1;
    record.last_time_ms = record.last_time_ms.max(body.time_ms);
    Ok(key)
}

/// The members of a context as of all it holds.
pub fn current_members(
    changes: &impl ChangeTable,
    members: &mut MemberCache,
    record: &ContextRecord,
) -> Result<Members, StateError> {
    Ok(members.members(changes, &record.id, &record.frontier)?.clone())
}
