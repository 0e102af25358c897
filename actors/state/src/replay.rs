//! Applying transactions to a context's state, and taking them back. Every applied
//! transaction leaves an undo row (its row of the apply order, [`APPLY_ORDER`]) with the
//! values it replaced and the keys it read.
//!
//! [`APPLY_ORDER`]: crate::tables::APPLY_ORDER
//!
//! Received transactions usually sort before some already applied (they were made
//! concurrently, a few ms ago). Settling them first tries each one at the end of the
//! order: when what it read and wrote is disjoint from what the transactions after its
//! place wrote and read, it commutes with them, so applying it last gives the state of
//! applying it in its place, and nothing is undone. Otherwise the applied transactions
//! from its place on are undone newest first and everything from there is applied again
//! in order: the cost is that of the transactions after it, never of the whole history.
//!
//! A transaction's effect depends only on the state before it in the order (the keys it
//! reads) and on the transaction itself: a call the caller may not make, that traps or
//! runs out of gas (with the context's limits, fixed at genesis) changes nothing, on
//! every node alike.

use std::borrow::Cow;
use std::collections::HashMap;

use cmesh_common::Address;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::checks::{check_role, load_code, output_value};
use crate::dag::{OrderKey, TxRow};
use crate::error::StateError;
use crate::ids::{address_bytes, Id};
use crate::merkle;
use crate::reader::{ContextReader, Span, TrackingReader};
use crate::roles::Role;
use crate::store::{self, ContextRecord};
use crate::tables::Tables;
use crate::tx::{Op, Transaction, TxBody};
use cmesh_runtime::{AppEvent, Call, Runtime};

/// How to take one applied transaction back (its steps undone in reverse order), and
/// what it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undo {
    pub steps: Vec<UndoStep>,
    /// The state keys the transaction read; `None` when it read roles (which every call
    /// depends on) or is unknown (rows written before reads were kept): such a
    /// transaction commutes with nothing.
    #[serde(default)]
    pub reads: Option<Vec<Span>>,
}

impl Undo {
    /// What the transaction touched; `None` if it commutes with nothing.
    fn footprint(&self) -> Option<Footprint> {
        let writes = self
            .steps
            .iter()
            .map(|step| match step {
                UndoStep::Kv { key, .. } => Some(*key),
                UndoStep::Role { .. } => None,
            })
            .collect::<Option<Vec<Id>>>()?;
        Some(Footprint {
            reads: self.reads.clone()?,
            writes,
        })
    }
}

/// The state keys a transaction read and wrote.
struct Footprint {
    reads: Vec<Span>,
    writes: Vec<Id>,
}

impl Footprint {
    /// Whether the two transactions may be applied in either order with the same outcome
    /// for both: neither writes what the other read or wrote.
    fn commutes_with(&self, other: &Footprint) -> bool {
        let read = |reads: &[Span], key: &Id| reads.iter().any(|span| span.holds(key));
        !self
            .writes
            .iter()
            .any(|key| other.writes.contains(key) || read(&other.reads, key))
            && !other.writes.iter().any(|key| read(&self.reads, key))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UndoStep {
    /// `key` held `old` (`None`: absent).
    Kv {
        key: Id,
        #[serde(with = "serde_bytes")]
        old: Option<Vec<u8>>,
    },
    /// `user` held `old` in the context.
    Role {
        #[serde(with = "address_bytes")]
        user: Address,
        old: Option<Role>,
    },
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Call {
        result: serde_json::Value,
        gas_used: u64,
        logs: Vec<String>,
        events: Vec<AppEvent>,
        writes: usize,
    },
    Role,
    /// Membership changes act through the causal past, not the state.
    Membership,
}

/// Applies one transaction to the state. The inner error says why it changes nothing
/// (the caller's role, the app's failure); the outer one is a storage failure. The undo
/// steps are those of what was changed (none if nothing was). The tree is left unhashed:
/// call [`refresh_root`] before `record.root` is read.
#[allow(clippy::type_complexity)]
pub fn apply(
    runtime: &Runtime,
    tables: &mut Tables,
    record: &mut ContextRecord,
    body: &TxBody,
    id: Id,
) -> Result<(Result<Effect, StateError>, Undo), StateError> {
    let mut undo = Undo::default();
    let context = record.id;
    let effect = match &body.op {
        // Role changes leave `reads` at `None`: they commute with nothing.
        Op::Create { .. } => {
            let old = set_role(tables, &context, &body.caller, Some(Role::Admin))?;
            undo.steps.push(UndoStep::Role { user: body.caller, old });
            Ok(Effect::Role)
        }
        Op::Call { method, args } => {
            // The caller's role is read too, but only role changes write roles, and they
            // commute with nothing.
            undo.reads = Some(Vec::new());
            let role = store::role_of(&tables.roles, &context, &body.caller)?;
            if let Err(err) = check_role(role, Role::Writer, &body.caller, &context) {
                return Ok((Err(err), undo));
            }
            let outcome = {
                let reader = TrackingReader::new(ContextReader::new(&tables.kv, context));
                let code = &tables.app_code;
                let load = || load_code(code, &record.app);
                let call = Call {
                    method,
                    input: args,
                    caller: body.caller.0,
                    context: context.0,
                    tx_id: Some(id.0),
                    time_ms: body.time_ms,
                    gas_limit: Some(record.limits.gas),
                };
                let outcome = runtime.call(&record.app.0, &load, call, &reader);
                undo.reads = Some(reader.into_reads());
                outcome
            };
            let (result, outcome) = match outcome
                .map_err(StateError::from)
                .and_then(|o| Ok((output_value(&o.output)?, o)))
            {
                Ok(done) => done,
                Err(err) => return Ok((Err(err), undo)),
            };
            for (key, value) in &outcome.writes {
                let old = merkle::write(&mut tables.kv, &mut tables.nodes, &context.0, key, value.as_deref())?;
                undo.steps.push(UndoStep::Kv { key: Id(*key), old });
            }
            Ok(Effect::Call {
                result,
                gas_used: outcome.gas_used,
                logs: outcome.logs,
                events: outcome.events,
                writes: outcome.writes.len(),
            })
        }
        Op::Grant { user, .. } | Op::Revoke { user } => {
            let role = match &body.op {
                Op::Grant { role, .. } => Some(*role),
                _ => None,
            };
            if let Err(err) = check_role_change(tables, &context, &body.caller, user, role)? {
                return Ok((Err(err), undo));
            }
            let old = set_role(tables, &context, user, role)?;
            undo.steps.push(UndoStep::Role { user: *user, old });
            Ok(Effect::Role)
        }
        Op::Invite { .. } | Op::Remove { .. } | Op::Leave => {
            undo.reads = Some(Vec::new());
            Ok(Effect::Membership)
        }
    };
    Ok((effect, undo))
}

/// Whether `caller` may give `user` the role `role` (`None`: no role) now: the caller is
/// an admin, and the last admin keeps the role.
pub fn check_role_change(
    tables: &Tables,
    context: &Id,
    caller: &Address,
    user: &Address,
    role: Option<Role>,
) -> Result<Result<(), StateError>, StateError> {
    if let Err(err) = check_role(
        store::role_of(&tables.roles, context, caller)?,
        Role::Admin,
        caller,
        context,
    ) {
        return Ok(Err(err));
    }
    let current = store::role_of(&tables.roles, context, user)?;
    if current == Some(Role::Admin) && role != Some(Role::Admin) && count_admins(&tables.roles, context)? <= 1 {
        return Ok(Err(StateError::Conflict(format!(
            "{user} is the last admin of context {context}: grant admin to someone else first"
        ))));
    }
    Ok(Ok(()))
}

/// Hashes what applying and taking back left stale in the context's tree, and sets
/// `record.root`: once per settled batch, so the top of the tree is hashed once for all
/// its writes.
pub fn refresh_root(tables: &mut Tables, record: &mut ContextRecord) -> Result<(), StateError> {
    record.root = Id(merkle::refresh(&mut tables.nodes, &record.id.0)?);
    Ok(())
}

/// Records that the transaction at `key` is applied, with how to undo it.
pub fn mark_applied(
    tables: &mut Tables,
    record: &mut ContextRecord,
    key: OrderKey,
    undo: &Undo,
) -> Result<(), StateError> {
    tables
        .order
        .insert(key.in_context(&record.id).as_slice(), store::encode(undo)?.as_slice())?;
    if record.top.is_none_or(|top| key > top) {
        record.top = Some(key);
    }
    Ok(())
}

/// What settling a context's newly added transactions did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Transactions applied, the new ones and those applied again.
    pub applied: u64,
    /// Transactions undone to be applied again.
    pub undone: u64,
    /// Applied transactions that changed nothing.
    pub failed: u64,
}

/// Applies the transactions of the context at or after `from` that are not applied yet
/// (those just added to the DAG), in order, undoing only what does not commute with
/// them.
pub fn settle(
    runtime: &Runtime,
    tables: &mut Tables,
    record: &mut ContextRecord,
    from: OrderKey,
    known: &Known,
) -> Result<Settled, StateError> {
    let context = record.id;
    let start = from.in_context(&context);
    let end = OrderKey::last_in(&context);
    let mut applied = Vec::new();
    let mut new = Vec::new();
    for entry in tables.order.range(start.as_slice()..=end.as_slice())? {
        let (key, undo) = entry?;
        let key = OrderKey::from_table_key(key.value())?;
        match undo.value() {
            [] => new.push(key),
            undo => applied.push((key, store::decode::<Undo>(undo)?.footprint())),
        }
    }
    let mut settled = Settled::default();
    for key in new {
        let later = &applied[applied.partition_point(|(k, _)| *k < key)..];
        // One that commutes with nothing after this place needs no trial.
        if later.iter().all(|(_, footprint)| footprint.is_some()) {
            let body = body_of(tables, known, &record.id, &key)?;
            let (effect, undo) = apply(runtime, tables, record, &body, key.id)?;
            let commutes = later.is_empty()
                || undo.footprint().is_some_and(|mine| {
                    later
                        .iter()
                        .all(|(_, other)| other.as_ref().is_some_and(|other| mine.commutes_with(other)))
                });
            if commutes {
                settled.applied += 1;
                settled.failed += u64::from(effect.is_err());
                mark_applied(tables, record, key, &undo)?;
                continue;
            }
            // Applied last, it is taken back first.
            take_back(tables, record, &undo)?;
        }
        settled.undone += rollback(tables, record, key)?;
        let (again, failed) = replay(runtime, tables, record, key, known)?;
        settled.applied += again;
        settled.failed += failed;
        break;
    }
    refresh_root(tables, record)?;
    Ok(settled)
}

/// Undoes every applied transaction at or after `from`, newest first, and marks them not
/// applied. Answers how many.
fn rollback(tables: &mut Tables, record: &mut ContextRecord, from: OrderKey) -> Result<u64, StateError> {
    let context = record.id;
    let start = from.in_context(&context);
    let end = OrderKey::last_in(&context);
    let mut rows = Vec::new();
    for entry in tables.order.range(start.as_slice()..=end.as_slice())? {
        let (key, undo) = entry?;
        if !undo.value().is_empty() {
            rows.push((key.value().to_vec(), store::decode::<Undo>(undo.value())?));
        }
    }
    for (key, undo) in rows.iter().rev() {
        take_back(tables, record, undo)?;
        tables.order.insert(key.as_slice(), [].as_slice())?;
    }
    let first = OrderKey::first_in(&context);
    record.top = None;
    for entry in tables.order.range(first.as_slice()..start.as_slice())?.rev() {
        let (key, undo) = entry?;
        if !undo.value().is_empty() {
            record.top = Some(OrderKey::from_table_key(key.value())?);
            break;
        }
    }
    Ok(rows.len() as u64)
}

/// Puts back what one transaction changed, its steps in reverse order.
fn take_back(tables: &mut Tables, record: &mut ContextRecord, undo: &Undo) -> Result<(), StateError> {
    let context = record.id;
    for step in undo.steps.iter().rev() {
        match step {
            UndoStep::Kv { key, old } => {
                merkle::write(&mut tables.kv, &mut tables.nodes, &context.0, &key.0, old.as_deref())?;
            }
            UndoStep::Role { user, old } => {
                set_role(tables, &context, user, *old)?;
            }
        }
    }
    Ok(())
}

/// Applies, in order, every transaction at or after `from` (none of them applied).
/// Answers how many were applied and how many of them changed nothing.
fn replay(
    runtime: &Runtime,
    tables: &mut Tables,
    record: &mut ContextRecord,
    from: OrderKey,
    known: &Known,
) -> Result<(u64, u64), StateError> {
    let context = record.id;
    let start = from.in_context(&context);
    let end = OrderKey::last_in(&context);
    let mut keys = Vec::new();
    for entry in tables.order.range(start.as_slice()..=end.as_slice())? {
        keys.push(OrderKey::from_table_key(entry?.0.value())?);
    }
    let mut failed = 0;
    for key in &keys {
        let body = body_of(tables, known, &record.id, key)?;
        let (effect, undo) = apply(runtime, tables, record, &body, key.id)?;
        if effect.is_err() {
            failed += 1;
        }
        mark_applied(tables, record, *key, &undo)?;
    }
    Ok((keys.len() as u64, failed))
}

/// Bodies of transactions the executor has at hand: this batch's own, whose rows wait
/// for their signatures, and those just received (not read back and decoded again).
pub struct Known<'a> {
    pub own: &'a HashMap<Id, TxBody>,
    pub received: HashMap<Id, &'a TxBody>,
}

/// The body of a held transaction: at hand, or from its row.
fn body_of<'a>(tables: &Tables, known: &'a Known, context: &Id, key: &OrderKey) -> Result<Cow<'a, TxBody>, StateError> {
    let id = &key.id;
    if let Some(body) = known.own.get(id).or_else(|| known.received.get(id).copied()) {
        return Ok(Cow::Borrowed(body));
    }
    let bytes = tables
        .txs
        .get(key.in_context(context).as_slice())?
        .ok_or_else(|| StateError::Record(format!("transaction {id} is missing")))?;
    let tx = Transaction::decode(TxRow::parse(bytes.value())?.tx())
        .map_err(|source| StateError::StoredTransaction { id: *id, source })?;
    Ok(Cow::Owned(tx.body))
}

/// Gives `user` `role` in `context` (`None`: takes every role); answers the one it had.
pub fn set_role(
    tables: &mut Tables,
    context: &Id,
    user: &Address,
    role: Option<Role>,
) -> Result<Option<Role>, StateError> {
    let key = store::role_key(context, user);
    let member = store::membership_key(user, context);
    let old = match role {
        Some(role) => {
            tables.memberships.insert(member.as_slice(), role.to_byte())?;
            tables.roles.insert(key.as_slice(), role.to_byte())?
        }
        None => {
            tables.memberships.remove(member.as_slice())?;
            tables.roles.remove(key.as_slice())?
        }
    };
    Ok(old.and_then(|old| Role::from_byte(old.value())))
}

fn count_admins(roles: &impl ReadableTable<&'static [u8], u8>, context: &Id) -> Result<usize, StateError> {
    let start = store::role_key(context, &Address([0; 20]));
    let end = store::role_key(context, &Address([0xff; 20]));
    let mut admins = 0;
    for entry in roles.range(start.as_slice()..=end.as_slice())? {
        let (_, role) = entry?;
        if Role::from_byte(role.value()) == Some(Role::Admin) {
            admins += 1;
        }
    }
    Ok(admins)
}
