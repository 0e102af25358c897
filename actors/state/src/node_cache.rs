//! The state executor's cache of the tree's node entries ([`NODES`]), in front of the redb
//! table.
//!
//! Why: a [`set`] reads and rewrites the ~log2(n) node entries on its key's path, and the
//! sets of one batch (and of the batches after it) share the top of their paths. Without a
//! cache, each set repeats those B-tree gets and inserts. Through one, an entry is read from
//! redb once while it stays cached, and a batch's changes stay in memory until
//! [`CachedNodes::flush`] writes each changed entry once, just before the commit.
//!
//! Sound only while nothing else writes [`NODES`] (the executor is its one writer), and
//! only if the cache holds committed state between transactions: when a transaction it was
//! used in is not committed, or a flush fails, drop the cache.
//!
//! [`NODES`]: crate::tables::NODES
//! [`set`]: crate::merkle::set

use std::collections::HashMap;

use redb::{ReadableTable, Table};

use crate::merkle::{is_stale_entry, EntryKey, MerkleError, NodeSource, NodeStore};

/// Node entries (and root entries) as read or written, some changed since they were last
/// written to the table.
pub struct NodeCache {
    entries: HashMap<EntryKey, Entry>,
    /// Keys of the dirty entries, so a flush does not scan the whole cache. May also hold
    /// keys dropped since by [`NodeStore::remove_context`], or listed twice.
    dirty: Vec<EntryKey>,
    /// Entries above which [`NodeCache::trim`] drops the clean ones.
    limit: usize,
}

struct Entry {
    /// The entry's value; `None`: the table has (or is to have) no entry under this key.
    value: Option<Vec<u8>>,
    /// Changed since it was last written to the table.
    dirty: bool,
}

impl NodeCache {
    /// An empty cache that [`NodeCache::trim`] keeps to about `limit` entries.
    pub fn new(limit: usize) -> Self {
        NodeCache {
            entries: HashMap::new(),
            dirty: Vec::new(),
            limit,
        }
    }

    /// Above the limit, drops every entry that the table already holds as it is (between
    /// transactions, that is all of them) and frees their memory. Called when a transaction
    /// starts: the cache only grows during one.
    pub fn trim(&mut self) {
        if self.entries.len() > self.limit {
            self.entries.retain(|_, entry| entry.dirty);
            self.entries.shrink_to_fit();
        }
    }

    /// This cache in front of `table`, the [`NODES`](crate::tables::NODES) table of a write transaction.
    pub fn over<'c, 't>(&'c mut self, table: Table<'t, &'static [u8], &'static [u8]>) -> CachedNodes<'c, 't> {
        CachedNodes { cache: self, table }
    }

    /// Records `value` (`None`: no entry) under `key`, not yet written to the table.
    fn put(&mut self, key: &EntryKey, value: Option<&[u8]>) {
        let Some(entry) = self.entries.get_mut(key) else {
            self.entries.insert(
                *key,
                Entry {
                    value: value.map(<[u8]>::to_vec),
                    dirty: true,
                },
            );
            self.dirty.push(*key);
            return;
        };
        match (&mut entry.value, value) {
            // Reuses the allocation: the same nodes are rewritten over and over.
            (Some(old), Some(new)) => {
                old.clear();
                old.extend_from_slice(new);
            }
            (old, new) => *old = new.map(<[u8]>::to_vec),
        }
        if !entry.dirty {
            entry.dirty = true;
            self.dirty.push(*key);
        }
    }
}

/// A [`NodeCache`] in front of one write transaction's [`NODES`](crate::tables::NODES) table: reads go to
/// the cache first, writes go to the cache only, until [`CachedNodes::flush`].
pub struct CachedNodes<'c, 't> {
    cache: &'c mut NodeCache,
    table: Table<'t, &'static [u8], &'static [u8]>,
}

impl CachedNodes<'_, '_> {
    /// Writes every changed entry to the table once, in key order; they stay cached, now
    /// clean. Refuses an entry that is not hashed yet ([`merkle::refresh`] was not called
    /// after a [`merkle::write`]). After an error, abort the transaction and drop the cache.
    ///
    /// [`merkle::refresh`]: crate::merkle::refresh
    /// [`merkle::write`]: crate::merkle::write
    pub fn flush(&mut self) -> Result<(), MerkleError> {
        let cache = &mut *self.cache;
        cache.dirty.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
        cache.dirty.dedup();
        for key in cache.dirty.drain(..) {
            // Dropped by `remove_context` (and perhaps read again since): the table holds it
            // as it is.
            let Some(entry) = cache.entries.get_mut(&key).filter(|entry| entry.dirty) else {
                continue;
            };
            match &entry.value {
                Some(value) if is_stale_entry(value) => return Err(MerkleError::StaleEntry),
                Some(value) => self.table.insert(key.as_slice(), value.as_slice())?,
                None => self.table.remove(key.as_slice())?,
            };
            entry.dirty = false;
        }
        Ok(())
    }
}

impl NodeSource for CachedNodes<'_, '_> {
    fn read_entry<R>(&mut self, key: &EntryKey, read: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, MerkleError> {
        if let Some(entry) = self.cache.entries.get(key) {
            return Ok(read(entry.value.as_deref()));
        }
        let value = self.table.get(key.as_slice())?.map(|entry| entry.value().to_vec());
        let result = read(value.as_deref());
        self.cache.entries.insert(*key, Entry { value, dirty: false });
        Ok(result)
    }
}

impl NodeStore for CachedNodes<'_, '_> {
    fn insert_entry(&mut self, key: &EntryKey, value: &[u8]) -> Result<(), MerkleError> {
        self.cache.put(key, Some(value));
        Ok(())
    }

    fn remove_entry(&mut self, key: &EntryKey) -> Result<(), MerkleError> {
        self.cache.put(key, None);
        Ok(())
    }

    /// Forgets the context's cached entries, changed or not, and removes its entries from
    /// the table at once.
    fn remove_context(&mut self, context: &[u8; 32]) -> Result<(), MerkleError> {
        self.cache.entries.retain(|key, _| !key.as_slice().starts_with(context));
        self.table.remove_context(context)
    }
}
