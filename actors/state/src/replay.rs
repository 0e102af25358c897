//! Applying transactions to a context's state, and taking them back. Every applied
//! transaction leaves an undo row (keyed like its place in the order) with the values it
//! replaced. When a transaction arrives that sorts before ones already applied, those are
//! undone newest first, back to where it goes, and everything from there is applied again
//! in order: the cost is that of the transactions after it, never of the whole history.
//!
//! A transaction's effect depends only on the state before it in the order and on the
//! transaction itself: a call the caller may not make, that traps or runs out of gas
//! (with the context's limits, fixed at genesis) changes nothing, on every node alike.

use std::collections::HashMap;

use cmesh_common::Address;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::dag::OrderKey;
use crate::error::StateError;
use crate::executor::{check_role, load_code, output_value};
use crate::ids::{address_bytes, Id};
use crate::merkle;
use crate::reader::ContextReader;
use crate::roles::Role;
use crate::runtime::{AppEvent, Call, Runtime};
use crate::store::{self, ContextRecord};
use crate::tables::Tables;
use crate::tx::{Op, Transaction, TxBody};

/// Context (32) ++ height (8) ++ transaction id (32) → [`Undo`]: one row per applied
/// transaction.
pub const UNDO: TableDefinition<&[u8], &[u8]> = TableDefinition::new("undo");

/// How to take one applied transaction back: its steps undone in reverse order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undo {
    pub steps: Vec<UndoStep>,
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
/// steps are those of what was changed (none if nothing was).
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
        Op::Create { .. } => {
            let old = set_role(tables, &context, &body.caller, Some(Role::Admin))?;
            undo.steps.push(UndoStep::Role { user: body.caller, old });
            Ok(Effect::Role)
        }
        Op::Call { method, args } => {
            let role = store::role_of(&tables.roles, &context, &body.caller)?;
            if let Err(err) = check_role(role, Role::Writer, &body.caller, &context) {
                return Ok((Err(err), undo));
            }
            let outcome = {
                let reader = ContextReader::new(&tables.kv, context);
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
                runtime.call(&record.app.0, &load, call, &reader)
            };
            let (result, outcome) = match outcome
                .map_err(StateError::from)
                .and_then(|o| Ok((output_value(&o.output)?, o)))
            {
                Ok(done) => done,
                Err(err) => return Ok((Err(err), undo)),
            };
            for (key, value) in &outcome.writes {
                let (root, old) =
                    merkle::replace(&mut tables.kv, &mut tables.nodes, &context.0, key, value.as_deref())?;
                record.root = Id(root);
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
        Op::Invite { .. } | Op::Remove { .. } | Op::Leave => Ok(Effect::Membership),
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

/// Records that the transaction at `key` is applied, with how to undo it.
pub fn mark_applied(
    tables: &mut Tables,
    record: &mut ContextRecord,
    key: OrderKey,
    undo: &Undo,
) -> Result<(), StateError> {
    tables
        .undo
        .insert(key.in_context(&record.id).as_slice(), store::encode(undo)?.as_slice())?;
    if record.top.is_none_or(|top| key > top) {
        record.top = Some(key);
    }
    Ok(())
}

/// Undoes every applied transaction at or after `from`, newest first. Answers how many.
pub fn rollback(tables: &mut Tables, record: &mut ContextRecord, from: OrderKey) -> Result<u64, StateError> {
    let context = record.id;
    let start = from.in_context(&context);
    let end = OrderKey::last_in(&context);
    let mut rows = Vec::new();
    for entry in tables.undo.range(start.as_slice()..=end.as_slice())? {
        let (key, undo) = entry?;
        rows.push((key.value().to_vec(), store::decode::<Undo>(undo.value())?));
    }
    for (key, undo) in rows.iter().rev() {
        for step in undo.steps.iter().rev() {
            match step {
                UndoStep::Kv { key, old } => {
                    let (root, _) =
                        merkle::replace(&mut tables.kv, &mut tables.nodes, &context.0, &key.0, old.as_deref())?;
                    record.root = Id(root);
                }
                UndoStep::Role { user, old } => {
                    set_role(tables, &context, user, *old)?;
                }
            }
        }
        tables.undo.remove(key.as_slice())?;
    }
    let first = OrderKey::first_in(&context);
    record.top = match tables.undo.range(first.as_slice()..start.as_slice())?.next_back() {
        Some(entry) => Some(OrderKey::from_table_key(entry?.0.value())?),
        None => None,
    };
    Ok(rows.len() as u64)
}

/// Applies, in order, every transaction at or after `from` (none of them applied).
/// `pending` holds this batch's own transactions, whose rows wait for their signatures.
/// Answers how many were applied and how many of them changed nothing.
pub fn replay(
    runtime: &Runtime,
    tables: &mut Tables,
    record: &mut ContextRecord,
    from: OrderKey,
    pending: &HashMap<Id, TxBody>,
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
        let body = match pending.get(&key.id) {
            Some(body) => body.clone(),
            None => {
                let bytes = tables
                    .txs
                    .get(key.id.0.as_slice())?
                    .ok_or_else(|| StateError::Record(format!("transaction {} is missing", key.id)))?;
                Transaction::decode(bytes.value())
                    .map_err(|e| StateError::Record(format!("transaction {}: {e}", key.id)))?
                    .body
            }
        };
        let (effect, undo) = apply(runtime, tables, record, &body, key.id)?;
        if effect.is_err() {
            failed += 1;
        }
        mark_applied(tables, record, *key, &undo)?;
    }
    Ok((keys.len() as u64, failed))
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
