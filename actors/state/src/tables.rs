//! The tables a batch of the executor writes, opened once per batch. The tree's node
//! table is reached only through the executor's cache, which must see every change to it.

use redb::{Table, WriteTransaction};

use crate::dag;
use crate::error::StateError;
use crate::merkle;
use crate::node_cache::{CachedNodes, NodeCache};
use crate::store;

pub struct Tables<'t> {
    pub app_code: Table<'t, &'static [u8], &'static [u8]>,
    pub versions: Table<'t, &'static str, &'static [u8]>,
    pub contexts: Table<'t, &'static [u8], &'static [u8]>,
    pub roles: Table<'t, &'static [u8], u8>,
    pub memberships: Table<'t, &'static [u8], u8>,
    pub kv: Table<'t, &'static [u8], &'static [u8]>,
    pub nodes: CachedNodes<'t, 't>,
    /// [`dag::TRANSACTIONS`]: each transaction and its meta, in apply order.
    pub txs: Table<'t, &'static [u8], &'static [u8]>,
    /// [`dag::HEIGHTS`]: where each transaction's row is.
    pub heights: Table<'t, &'static [u8], u64>,
    /// [`dag::APPLY_ORDER`]: the apply order and the undo rows.
    pub order: Table<'t, &'static [u8], &'static [u8]>,
    pub seqs: Table<'t, &'static [u8], ()>,
    pub changes: Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction, nodes: &'t mut NodeCache) -> Result<Self, StateError> {
        Ok(Tables {
            app_code: txn.open_table(store::APP_CODE)?,
            versions: txn.open_table(store::APP_VERSIONS)?,
            contexts: txn.open_table(store::CONTEXTS)?,
            roles: txn.open_table(store::ROLES)?,
            memberships: txn.open_table(store::MEMBERSHIPS)?,
            kv: txn.open_table(store::KV)?,
            nodes: nodes.over(txn.open_table(merkle::NODES)?),
            txs: txn.open_table(dag::TRANSACTIONS)?,
            heights: txn.open_table(dag::HEIGHTS)?,
            order: txn.open_table(dag::APPLY_ORDER)?,
            seqs: txn.open_table(dag::AUTHOR_SEQS)?,
            changes: txn.open_table(dag::CHANGES)?,
        })
    }
}
