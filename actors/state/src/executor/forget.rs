//! The `Forget` job: deleting every row this node holds of a context, in the batch's
//! write transaction.
//!
//! Why: a node that leaves a context keeps nothing of it (the other members carry on;
//! there is no global delete). A context's rows are spread over a dozen tables keyed in
//! different ways (by context prefix, by transaction id, by user; see `tables.rs`), so the
//! list of what to delete lives in one place. The app's code stays: other contexts may
//! run it. The tree's node entries go through the executor's node cache, so that it never
//! serves an entry that is no longer in the table.

use std::collections::HashMap;

use cmesh_common::Address;
use redb::{ReadableTable, Table, Value};

use super::{fatal, Effects, Executor, Step};
use crate::checks::not_held;
use crate::dag::{self, OrderKey};
use crate::error::StateError;
use crate::ids::Id;
use crate::merkle;
use crate::messages::{Forget, ForgetReply};
use crate::store::{self, ContextRecord};
use crate::tables::Tables;
use crate::tx::TxBody;

impl Executor {
    /// Deletes every row of a context held here ([`delete_rows`]) and drops its record from
    /// the batch and from the cache of committed records. Dropping a cached record early is
    /// sound even if the batch is then abandoned (it is read from the table again), and it
    /// keeps later jobs of this batch from seeing the forgotten context.
    pub(super) fn forget(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: Forget,
    ) -> Step<ForgetReply> {
        let context = msg.context;
        if self.record(tables, staged, &context).map_err(fatal)?.is_none() {
            return Ok(Err(not_held(&context)));
        }
        // Their rows are written once signed, at the end of the batch: they would outlive
        // the context, and their callers were told they are made.
        let pending = |(id, body): (&Id, &TxBody)| body.context_of(*id) == context;
        if effects.unsigned.iter().any(pending) {
            return Ok(Err(StateError::Conflict(format!(
                "transactions of context {context} made just now are not durable yet: try again"
            ))));
        }
        let transactions = delete_rows(tables, &context).map_err(fatal)?;
        staged.remove(&context);
        self.contexts.remove(&context);
        Ok(Ok(ForgetReply { context, transactions }))
    }
}

/// Deletes every row of `context`: its record, its transactions and their metadata, its
/// apply order with the undo rows, author counts, membership changes, its key-value state
/// and tree, and its roles (with the matching memberships of users). Answers how many
/// transactions were deleted. The caller drops the context's record from its caches.
fn delete_rows(tables: &mut Tables, context: &Id) -> Result<u64, StateError> {
    let low = context.0.as_slice();

    // The transactions, found through the apply order (every held one has a place in it).
    let last = OrderKey::last_in(context);
    let mut ids = Vec::new();
    for entry in tables.order.range(low..=last.as_slice())? {
        ids.push(OrderKey::from_table_key(entry?.0.value())?.id);
    }
    for id in &ids {
        tables.heights.remove(id.0.as_slice())?;
    }
    remove_range(&mut tables.txs, low, &last)?;
    remove_range(&mut tables.order, low, &last)?;
    let last_seq = dag::seq_key(context, &Address([0xff; 20]), u64::MAX, &Id([0xff; 32]));
    remove_range(&mut tables.seqs, low, &last_seq)?;
    remove_range(&mut tables.changes, low, &dag::change_key(context, &Id([0xff; 32])))?;

    // Roles, and the same rows keyed by user first.
    let last_role = store::role_key(context, &Address([0xff; 20]));
    let mut users = Vec::new();
    for entry in tables.roles.range(low..=last_role.as_slice())? {
        let key = entry?.0.value().to_vec();
        let user: [u8; 20] = key
            .get(32..)
            .and_then(|user| user.try_into().ok())
            .ok_or_else(|| StateError::Record(format!("a role key of {} bytes", key.len())))?;
        users.push(Address(user));
    }
    for user in &users {
        tables
            .memberships
            .remove(store::membership_key(user, context).as_slice())?;
    }
    remove_range(&mut tables.roles, low, &last_role)?;

    merkle::clear(&mut tables.kv, &mut tables.nodes, &context.0)?;
    tables.contexts.remove(low)?;
    Ok(ids.len() as u64)
}

/// Removes the rows from `low` to `high`, both included.
fn remove_range<V: Value + 'static>(
    table: &mut Table<'_, &'static [u8], V>,
    low: &[u8],
    high: &[u8],
) -> Result<(), StateError> {
    table.retain_in::<&[u8], _>(low..=high, |_, _| false)?;
    Ok(())
}
