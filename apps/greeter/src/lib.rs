//! `greeter`: the hello world of cmesh.
//!
//! | method | result |
//! |---|---|
//! | `hello_world(name)` | `"Hello, <name>!"`; called as a write, it also counts the greeting and emits `greeted` |
//! | `greetings(name)` | how many times `name` was greeted (0 if never) |
//!
//! Names are at most 31 bytes, without NUL (they are storage keys).

use cmesh_sdk::{emit, env, method, storage, Key, Result};
use serde_json::json;

/// The tag of the per-name greeting counts.
const COUNT: u8 = b'g';

fn count_key(name: &str) -> Result<Key> {
    Key::named(COUNT, name).map_err(|e| format!("invalid name: {e}").into())
}

method! {
    /// Greets `name`.
    fn hello_world(name: String) -> Result<String> {
        let key = count_key(&name)?;
        if !env::is_view() {
            let count = storage::get::<u64>(&key).unwrap_or(0) + 1;
            storage::set(&key, &count);
            emit("greeted", &json!({ "name": name, "count": count }));
        }
        Ok(format!("Hello, {name}!"))
    }

    /// How many times `name` was greeted in a write.
    fn greetings(name: String) -> Result<u64> {
        Ok(storage::get(&count_key(&name)?).unwrap_or(0))
    }
}
