//! Every table of `state.redb`, defined once, and the set of them a batch of the executor
//! writes, opened once per batch.
//!
//! Why here: one database holds every app and context, so a transaction, its effects on
//! the key-value state, the new root and the context's new heads are committed in one
//! write; the modules that read and write a table (`store`, `dag`, `merkle`, `replay`,
//! the views, the executor) all need its definition, and a second copy of a name or a
//! key type would be a second table. The keys are built by `store` (`role_key`,
//! `membership_key`, `kv_key`, `version_key`), `dag` (`OrderKey::in_context`, `seq_key`,
//! `change_key`) and `merkle` (`EntryKey`). The tree's node table is reached in a batch
//! only through the executor's cache, which must see every change to it.

use redb::{Table, TableDefinition, WriteTransaction};

use crate::error::StateError;
use crate::node_cache::{CachedNodes, NodeCache};

/// App id (32) → the module's bytes.
pub const APP_CODE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("app_code");
/// `name` NUL `version` → [`AppRecord`](crate::store::AppRecord): every deployed version.
pub const APP_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("app_versions");
/// Context id (32) → [`ContextRecord`](crate::store::ContextRecord).
pub const CONTEXTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("contexts");
/// Context id (32) ++ user address (20) → role byte.
pub const ROLES: TableDefinition<&[u8], u8> = TableDefinition::new("roles");
/// User address (20) ++ context id (32) → role byte: [`ROLES`] keyed user first, for the
/// contexts of a user.
pub const MEMBERSHIPS: TableDefinition<&[u8], u8> = TableDefinition::new("memberships");
/// Context id (32) ++ key (32) → value: the contexts' key-value state.
pub const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// The crit-bit tree of every context (`docs/STATE_ROOT.md`). Per context: a root entry
/// under the bare context id (32 bytes; the one child at the top, absent for an empty
/// tree), and one entry per branching node under context(32) ++ prefix(32: the node's
/// keys' first `crit` bits, the rest zero) ++ crit(1) holding its two children. A child is
/// 66 bytes: kind (0 leaf, 1 node) ++ crit (0 for a leaf) ++ hash(32) ++ the leaf's key or
/// the node's prefix (32).
///
/// Prefix first: below the shared top of the tree, the nodes on one key's path sort next
/// to each other and to that key, so a write dirties a page or two of this table rather
/// than one page per level (what every commit writes and syncs).
pub const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("merkle_paths");

/// Context (32) ++ height (8, big-endian) ++ transaction id (32), the key of its place in
/// the apply order → a `dag::TxRow`: what the node keeps about the transaction and the
/// signed transaction itself. Keyed by its place rather than by its id so that a catch-up
/// page, which comes in apply order, appends rows at the end of the table instead of
/// writing into a random leaf per transaction (most of what a large batch wrote).
pub const TRANSACTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("transactions_in_order");
/// Transaction id (32) → its height: where to find its [`TRANSACTIONS`] row. The one
/// random-keyed row a transaction adds, and a small one.
pub const HEIGHTS: TableDefinition<&[u8], u64> = TableDefinition::new("transaction_heights");
/// Context (32) ++ height (8, big-endian) ++ transaction id (32) → an encoded
/// `replay::Undo`, or nothing while the transaction is not applied yet (inside a batch):
/// the apply order and the undo rows in one table, keyed alike.
pub const APPLY_ORDER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("apply_order");
/// Context (32) ++ author (20) ++ seq (8, big-endian) ++ transaction id (32) → nothing:
/// each author's transactions in `seq` order, for catch-up by author.
pub const AUTHOR_SEQS: TableDefinition<&[u8], ()> = TableDefinition::new("author_seqs");
/// Context (32) ++ transaction id (32) → [`ChangeRecord`](crate::membership::ChangeRecord)
/// of a membership change, with every change before it.
pub const CHANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("membership_changes");

/// Tables of earlier versions whose contents this version cannot read (the sparse Merkle
/// tree, whose roots differ from the crit-bit tree's; the linear transaction order of
/// format 1, before the DAG; the crit-bit nodes keyed crit first; transactions and their
/// meta in two tables, the apply order apart from the undo rows; transactions keyed by id):
/// a store holding one is refused at start (`store::open`), never misread.
pub const FORMER_TABLES: [&str; 8] = [
    "smt_nodes",
    "tx_order",
    "merkle_nodes",
    "txs",
    "tx_meta",
    "dag_order",
    "undo",
    "transactions",
];

/// Every table, open in one write transaction: a batch of the executor, or the start of
/// the store (opening a table in a write transaction creates it).
pub(crate) struct Tables<'t> {
    pub app_code: Table<'t, &'static [u8], &'static [u8]>,
    pub versions: Table<'t, &'static str, &'static [u8]>,
    pub contexts: Table<'t, &'static [u8], &'static [u8]>,
    pub roles: Table<'t, &'static [u8], u8>,
    pub memberships: Table<'t, &'static [u8], u8>,
    pub kv: Table<'t, &'static [u8], &'static [u8]>,
    /// [`NODES`], through the executor's cache.
    pub nodes: CachedNodes<'t, 't>,
    /// [`TRANSACTIONS`]: each transaction and its meta, in apply order.
    pub txs: Table<'t, &'static [u8], &'static [u8]>,
    /// [`HEIGHTS`]: where each transaction's row is.
    pub heights: Table<'t, &'static [u8], u64>,
    /// [`APPLY_ORDER`]: the apply order and the undo rows.
    pub order: Table<'t, &'static [u8], &'static [u8]>,
    pub seqs: Table<'t, &'static [u8], ()>,
    pub changes: Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction, nodes: &'t mut NodeCache) -> Result<Self, StateError> {
        Ok(Tables {
            app_code: txn.open_table(APP_CODE)?,
            versions: txn.open_table(APP_VERSIONS)?,
            contexts: txn.open_table(CONTEXTS)?,
            roles: txn.open_table(ROLES)?,
            memberships: txn.open_table(MEMBERSHIPS)?,
            kv: txn.open_table(KV)?,
            nodes: nodes.over(txn.open_table(NODES)?),
            txs: txn.open_table(TRANSACTIONS)?,
            heights: txn.open_table(HEIGHTS)?,
            order: txn.open_table(APPLY_ORDER)?,
            seqs: txn.open_table(AUTHOR_SEQS)?,
            changes: txn.open_table(CHANGES)?,
        })
    }
}
