//! `kv`: a JSON key-value store.
//!
//! | method | result |
//! |---|---|
//! | `set(key, value)` | `null`; stores `value` (any JSON) under `key`, emits `set` |
//! | `get(key)` | the value, or `null` if absent |
//! | `delete(key)` | `true` if the key existed (then emits `deleted`) |
//! | `copy(from, to)` | `true` if `from` held a value, now also stored under `to` (then emits `set`) |
//! | `list(prefix?)` | `[{key, value}]` of the keys starting with `prefix`, in key order |
//!
//! Keys are strings of at most 31 bytes without NUL.

use cmesh_sdk::{emit, method, storage, Key, KeyRange, Result};
use serde::Serialize;
use serde_json::{json, Value};

/// The tag (first key byte) of every entry.
const ENTRY: u8 = b'k';

fn entry_key(key: &str) -> Result<Key> {
    Key::named(ENTRY, key).map_err(|e| format!("invalid key `{key}`: {e}").into())
}

#[derive(Serialize)]
struct Item {
    key: String,
    value: Value,
}

method! {
    /// Stores `value` under `key`.
    fn set(key: String, value: Value) -> Result<()> {
        storage::set(&entry_key(&key)?, &value);
        emit("set", &json!({ "key": key }));
        Ok(())
    }

    /// The value under `key`, `null` if there is none.
    fn get(key: String) -> Result<Option<Value>> {
        Ok(storage::get(&entry_key(&key)?))
    }

    /// Removes `key`; true if it existed.
    fn delete(key: String) -> Result<bool> {
        let existed = storage::remove(&entry_key(&key)?);
        if existed {
            emit("deleted", &json!({ "key": key }));
        }
        Ok(existed)
    }

    /// Stores the value under `from` under `to` as well; false (nothing written) if `from`
    /// is absent.
    fn copy(from: String, to: String) -> Result<bool> {
        let Some(value) = storage::get::<Value>(&entry_key(&from)?) else {
            return Ok(false);
        };
        storage::set(&entry_key(&to)?, &value);
        emit("set", &json!({ "key": to }));
        Ok(true)
    }

    /// Every entry whose key starts with `prefix` (default: all), in key order.
    fn list(prefix: Option<String>) -> Result<Vec<Item>> {
        let prefix = prefix.unwrap_or_default();
        let range = KeyRange::named_prefix(ENTRY, &prefix)
            .map_err(|e| format!("invalid prefix `{prefix}`: {e}"))?;
        let entries = storage::scan(&range, usize::MAX);
        let items = entries.iter().map(|entry| Item {
            key: String::from_utf8_lossy(entry.key.name()).into_owned(),
            value: entry.json(),
        });
        Ok(items.collect())
    }
}
