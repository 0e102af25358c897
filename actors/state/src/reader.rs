//! The runtime's view of one context's key-value state, over whichever redb transaction
//! the caller holds: a read transaction for views, the open write transaction (which
//! already holds the batch's earlier effects) for mutations.

use redb::ReadableTable;

use crate::ids::Id;
use crate::runtime::{StateReader, StorageError};
use crate::store::kv_key;

pub struct ContextReader<'a, T> {
    table: &'a T,
    context: Id,
}

impl<'a, T> ContextReader<'a, T> {
    pub fn new(table: &'a T, context: Id) -> Self {
        ContextReader { table, context }
    }
}

fn storage(err: impl std::fmt::Display) -> StorageError {
    StorageError(err.to_string())
}

impl<T: ReadableTable<&'static [u8], &'static [u8]>> StateReader for ContextReader<'_, T> {
    fn get(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        let full = kv_key(&self.context, key);
        Ok(self
            .table
            .get(full.as_slice())
            .map_err(storage)?
            .map(|value| value.value().to_vec()))
    }

    fn range(
        &self,
        start: &[u8; 32],
        end: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<([u8; 32], Vec<u8>)>, StorageError> {
        let from = kv_key(&self.context, start);
        let range = match end {
            Some(end) => {
                let to = kv_key(&self.context, end);
                self.table.range(from.as_slice()..to.as_slice())
            }
            None => {
                let last = kv_key(&self.context, &[0xff; 32]);
                self.table.range(from.as_slice()..=last.as_slice())
            }
        }
        .map_err(storage)?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (key, value) = entry.map_err(storage)?;
            let mut short = [0u8; 32];
            short.copy_from_slice(&key.value()[32..]);
            out.push((short, value.value().to_vec()));
        }
        Ok(out)
    }
}
