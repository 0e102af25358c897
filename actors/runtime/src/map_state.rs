//! A context's state as an ordered in-memory map: what tools and tests run apps against
//! when there is no node (the benchmark's native comparison, the runtime's own tests).
//! It applies a call's write set the way the executor applies it to redb.

use std::collections::BTreeMap;

use super::{Entry, Outcome, StateReader, StorageError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapState(pub BTreeMap<[u8; 32], Vec<u8>>);

impl MapState {
    /// Applies a successful mutation's writes and removes.
    pub fn apply(&mut self, outcome: &Outcome) {
        for (key, value) in &outcome.writes {
            match value {
                Some(value) => self.0.insert(*key, value.clone()),
                None => self.0.remove(key),
            };
        }
    }
}

impl StateReader for MapState {
    fn get(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.get(key).cloned())
    }

    fn range(&self, start: &[u8; 32], end: Option<&[u8; 32]>, limit: usize) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .0
            .range(*start..)
            .take_while(|(key, _)| end.is_none_or(|end| *key < end))
            .take(limit)
            .map(|(key, value)| (*key, value.clone()))
            .collect())
    }
}
