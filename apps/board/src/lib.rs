//! `board`: a message log.
//!
//! | method | result |
//! |---|---|
//! | `post(message)` | the new `{seq, author, message, time_ms}` (seq 1, 2, …); emits `posted` with it |
//! | `list(from?, limit?)` | messages from seq `from` (default 1) in order, at most `limit` (default 50, max 200) |
//! | `count()` | the number of messages |
//!
//! `author` is the caller's address (`0x` + 40 lower-case hex digits).

use cmesh_sdk::{emit, ensure, env, method, storage, Key, KeyRange, Result};
use serde::{Deserialize, Serialize};

/// The tag of messages, keyed by sequence number (key order = seq order).
const MESSAGE: u8 = b'm';
/// The number of messages (= the last seq).
const COUNT: Key = Key::constant(b'n', b"count");

const MESSAGE_MAX: usize = 4096;
const LIMIT_DEFAULT: u32 = 50;
const LIMIT_MAX: u32 = 200;

#[derive(Serialize, Deserialize)]
struct Message {
    seq: u64,
    author: String,
    message: String,
    time_ms: u64,
}

fn total() -> u64 {
    storage::get(&COUNT).unwrap_or(0)
}

method! {
    /// Appends `message` to the log.
    fn post(message: String) -> Result<Message> {
        ensure!(!message.trim().is_empty(), "message is empty");
        ensure!(message.len() <= MESSAGE_MAX, "message is {} bytes, at most {MESSAGE_MAX} allowed", message.len());
        let seq = total() + 1;
        let posted = Message { seq, author: env::caller().to_string(), message, time_ms: env::time_ms() };
        storage::set(&Key::seq(MESSAGE, seq), &posted);
        storage::set(&COUNT, &seq);
        emit("posted", &posted);
        Ok(posted)
    }

    /// Messages from seq `from` on, at most `limit`.
    fn list(from: Option<u64>, limit: Option<u32>) -> Result<Vec<Message>> {
        let limit = limit.unwrap_or(LIMIT_DEFAULT);
        ensure!(limit <= LIMIT_MAX, "limit is {limit}, at most {LIMIT_MAX} allowed");
        let range = KeyRange { start: Key::seq(MESSAGE, from.unwrap_or(1)), ..KeyRange::tag(MESSAGE) };
        Ok(storage::scan(&range, limit as usize).iter().map(|entry| entry.json()).collect())
    }

    /// The number of messages.
    fn count() -> u64 {
        total()
    }
}
