//! The context's storage: an ordered map from 32-byte [`Key`]s to values.
//!
//! Typed values are stored as JSON ([`get`], [`set`]); [`get_raw`]/[`set_raw`] store bytes
//! as they are. Writes and removes trap in a view, and take effect only if the call
//! succeeds. Values are at most 1 MiB.

use serde::{de::DeserializeOwned, Serialize};

use crate::{host, Key, KeyRange};

/// The value under `key` decoded from JSON, `None` if absent.
///
/// Panics (aborting the call) if the stored bytes are not a JSON `T`.
pub fn get<T: DeserializeOwned>(key: &Key) -> Option<T> {
    get_raw(key).map(|bytes| decode(key, &bytes))
}

/// Stores `value` as JSON under `key`.
///
/// Panics (aborting the call) if `value` can't be JSON (a map with non-string keys).
pub fn set<T: Serialize + ?Sized>(key: &Key, value: &T) {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|e| panic!("value for key {key} is not JSON: {e}"));
    set_raw(key, &bytes)
}

/// Removes `key`; true if it was there.
pub fn remove(key: &Key) -> bool {
    host::storage_remove(key)
}

pub fn get_raw(key: &Key) -> Option<Vec<u8>> {
    host::storage_read(key)
}

pub fn set_raw(key: &Key, value: &[u8]) {
    host::storage_write(key, value)
}

/// One stored entry, as returned by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Key,
    pub value: Vec<u8>,
}

impl Entry {
    /// The value decoded from JSON; panics (aborting the call) if it is not a JSON `T`.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        decode(&self.key, &self.value)
    }
}

fn decode<T: DeserializeOwned>(key: &Key, bytes: &[u8]) -> T {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("stored value under key {key} is not the expected type: {e}"))
}

/// The host returns at most this many entries per `storage_range`.
pub const RANGE_BATCH_MAX: usize = 1000;

/// The entries whose keys are in `range`, in key order, at most `limit` of them
/// (`usize::MAX`: all; the host is asked for batches of up to 1000).
///
/// ```no_run
/// # use cmesh_sdk::{storage, Key, KeyRange};
/// // every key of tag b'k' whose name starts with "user:", at most 100:
/// let users = storage::scan(&KeyRange::named_prefix(b'k', "user:").unwrap(), 100);
/// ```
pub fn scan(range: &KeyRange, limit: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut start = range.start;
    while out.len() < limit {
        let want = (limit - out.len()).min(RANGE_BATCH_MAX);
        let batch = parse_entries(&host::storage_range(&start, range.end.as_ref(), want as u32))
            .unwrap_or_else(|e| panic!("storage_range: {e}"));
        let done = batch.len() < want;
        let next = batch.last().map(|e| e.key.next());
        out.extend(batch);
        match next {
            Some(Some(key)) if !done => start = key,
            _ => break,
        }
    }
    out
}

/// Parses the `storage_range` register: `count:u32le`, then per entry `key[32] len:u32le
/// value[len]`.
pub fn parse_entries(buf: &[u8]) -> Result<Vec<Entry>, &'static str> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if buf.len() < n {
            return Err("truncated register");
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }
    fn u32le(buf: &mut &[u8]) -> Result<usize, &'static str> {
        Ok(u32::from_le_bytes(take(buf, 4)?.try_into().unwrap()) as usize)
    }
    let mut buf = buf;
    let count = u32le(&mut buf)?;
    let mut entries = Vec::with_capacity(count.min(RANGE_BATCH_MAX));
    for _ in 0..count {
        let key = Key::from_bytes(take(&mut buf, 32)?.try_into().unwrap());
        let len = u32le(&mut buf)?;
        entries.push(Entry {
            key,
            value: take(&mut buf, len)?.to_vec(),
        });
    }
    if !buf.is_empty() {
        return Err("trailing bytes in register");
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(entries: &[(Key, &[u8])]) -> Vec<u8> {
        let mut buf = (entries.len() as u32).to_le_bytes().to_vec();
        for (k, v) in entries {
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
            buf.extend_from_slice(v);
        }
        buf
    }

    #[test]
    fn parses_the_range_register() {
        let (a, b) = (Key::seq(b'm', 1), Key::seq(b'm', 2));
        let buf = register(&[(a, br#"{"x":1}"#), (b, b"")]);
        let entries = parse_entries(&buf).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    key: a,
                    value: br#"{"x":1}"#.to_vec()
                },
                Entry { key: b, value: vec![] }
            ]
        );
        assert_eq!(entries[0].json::<serde_json::Value>(), serde_json::json!({"x": 1}));
        assert_eq!(parse_entries(&0u32.to_le_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_registers() {
        let buf = register(&[(Key::seq(1, 1), b"abc")]);
        for cut in 0..buf.len() {
            assert_eq!(parse_entries(&buf[..cut]), Err("truncated register"), "cut at {cut}");
        }
        let mut extra = buf.clone();
        extra.push(0);
        assert_eq!(parse_entries(&extra), Err("trailing bytes in register"));
        // A huge count with no data fails cleanly instead of allocating.
        assert_eq!(parse_entries(&u32::MAX.to_le_bytes()), Err("truncated register"));
    }

    #[test]
    #[should_panic(expected = "is not the expected type")]
    fn decoding_the_wrong_type_panics_with_the_key() {
        Entry {
            key: Key::seq(1, 1),
            value: b"\"text\"".to_vec(),
        }
        .json::<u64>();
    }
}
