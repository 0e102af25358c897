//! The runtime's view of one context's key-value state, over whichever redb transaction
//! the caller holds: a read transaction for views, the open write transaction (which
//! already holds the batch's earlier effects) for mutations.

use std::cell::RefCell;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::ids::Id;
use crate::store::kv_key;
use cmesh_runtime::{StateReader, StorageError};

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

/// A [`StateReader`] that remembers what was read through it: the key ranges a
/// transaction's outcome depends on. Settling (`replay::settle`) uses them to tell a
/// received transaction that commutes with the ones applied after its place from one
/// that does not.
pub struct TrackingReader<R> {
    inner: R,
    reads: RefCell<Vec<Span>>,
}

impl<R> TrackingReader<R> {
    pub fn new(inner: R) -> Self {
        TrackingReader {
            inner,
            reads: RefCell::new(Vec::new()),
        }
    }

    pub fn into_reads(self) -> Vec<Span> {
        self.reads.into_inner()
    }
}

impl<R: StateReader> StateReader for TrackingReader<R> {
    fn get(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        self.reads.borrow_mut().push(Span::key(Id(*key)));
        self.inner.get(key)
    }

    fn range(
        &self,
        start: &[u8; 32],
        end: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<([u8; 32], Vec<u8>)>, StorageError> {
        let entries = self.inner.range(start, end, limit)?;
        // A full answer saw nothing past its last entry; a short one saw the whole range.
        let last = match (entries.last(), end) {
            (Some((last, _)), _) if entries.len() == limit => Some(*last),
            (_, Some(end)) => before(end),
            (_, None) => Some([0xff; 32]),
        };
        if let Some(last) = last.filter(|last| last >= start) {
            self.reads.borrow_mut().push(Span {
                first: Id(*start),
                last: Id(last),
            });
        }
        Ok(entries)
    }
}

/// The key just below `key`, if there is one.
fn before(key: &[u8; 32]) -> Option<[u8; 32]> {
    let mut out = *key;
    for byte in out.iter_mut().rev() {
        if *byte > 0 {
            *byte -= 1;
            return Some(out);
        }
        *byte = 0xff;
    }
    None
}

/// Keys from `first` to `last`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub first: Id,
    pub last: Id,
}

impl Span {
    pub fn key(key: Id) -> Span {
        Span { first: key, last: key }
    }

    pub fn holds(&self, key: &Id) -> bool {
        self.first <= *key && *key <= self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmesh_runtime::MapState;

    fn k(byte: u8) -> [u8; 32] {
        let mut key = [0u8; 32];
        key[31] = byte;
        key
    }

    #[test]
    fn reads_are_remembered_as_far_as_they_saw() {
        let state = MapState((1..=5).map(|n| (k(n), vec![n])).collect());
        let reader = TrackingReader::new(state);
        reader.get(&k(9)).expect("get");
        assert_eq!(reader.range(&k(1), None, 2).expect("range").len(), 2);
        assert_eq!(reader.range(&k(3), Some(&k(5)), 10).expect("range").len(), 2);
        reader.range(&k(4), None, 10).expect("range");
        reader.range(&k(0), Some(&k(0)), 10).expect("range");
        let reads = reader.into_reads();
        assert_eq!(
            reads,
            vec![
                Span::key(Id(k(9))),
                Span {
                    first: Id(k(1)),
                    last: Id(k(2))
                },
                Span {
                    first: Id(k(3)),
                    last: Id(k(4))
                },
                Span {
                    first: Id(k(4)),
                    last: Id([0xff; 32])
                },
            ]
        );
        assert!(reads[1].holds(&Id(k(2))) && !reads[1].holds(&Id(k(3))));
    }

    #[test]
    fn the_key_before_borrows_across_bytes() {
        let mut key = [0u8; 32];
        key[30] = 1;
        let mut expected = [0u8; 32];
        expected[31] = 0xff;
        assert_eq!(before(&key), Some(expected));
        assert_eq!(before(&[0; 32]), None);
    }
}
