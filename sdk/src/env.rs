//! Who is calling, in which context, in which transaction and when; logs and events.

use core::fmt;

use serde::Serialize;

use crate::host;

/// A user's 20-byte address. Displays as `0x` + 40 lower-case hex digits, the spelling
/// cmesh uses in subjects and metadata (EIP-55 mixed case is for people; compare
/// addresses as bytes or in lower case).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

/// A 32-byte id (a context, a transaction). Displays as `0x` + 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}

pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    f.write_str(&s)
}

macro_rules! hex_display {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl Serialize for $t {
            /// As its hex text.
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
hex_display!(Address, Id);

/// The address of the user whose call (or transaction) this is.
pub fn caller() -> Address {
    Address(host::caller())
}

/// The id of the context the app runs in.
pub fn context() -> Id {
    Id(host::context())
}

/// The id of the transaction being executed; all zero in a view. It is the only source of
/// entropy (the same on every node).
pub fn tx_id() -> Id {
    Id(host::tx_id())
}

/// True when the call is a view (`S:`, `ctx.view`): storage is read-only, no events.
pub fn is_view() -> bool {
    tx_id().is_zero()
}

/// The transaction's timestamp in ms since the Unix epoch, chosen by its author (in a view:
/// the latest transaction's). There is no other clock. A negative timestamp reads as 0.
pub fn time_ms() -> u64 {
    u64::try_from(host::time_ms()).unwrap_or(0)
}

/// Logs a line (the node logs it at debug level and returns it with the call; lines are
/// cut at 1 KiB, at most 32 per call). See also [`crate::log!`].
pub fn log(line: &str) {
    host::log(line)
}

/// Maximum size of an event's data (JSON text).
pub const EVENT_DATA_MAX: usize = 64 * 1024;

/// Emits event `name` with `data` as JSON; it is published on
/// `cmesh.events.ctx.<context>.<name>` once the transaction commits.
///
/// Panics (aborting the call) if `name` is not 1 to 64 of `A-Z a-z 0-9 _ -`, if the data is
/// over 64 KiB, or in a view.
pub fn emit<T: Serialize + ?Sized>(name: &str, data: &T) {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        panic!("invalid event name `{name}`: use 1 to 64 of A-Z a-z 0-9 _ -");
    }
    let data = serde_json::to_vec(data).unwrap_or_else(|e| panic!("event `{name}`: data is not JSON: {e}"));
    if data.len() > EVENT_DATA_MAX {
        panic!(
            "event `{name}`: data is {} bytes, at most {EVENT_DATA_MAX} allowed",
            data.len()
        );
    }
    host::emit(name, &data)
}

/// The call's raw input (JSON text). [`crate::method!`] reads and decodes it for you.
pub fn input() -> Vec<u8> {
    host::input()
}

/// Sets the call's raw result. [`crate::method!`] does this with the method's return value.
pub fn output(data: &[u8]) {
    host::output(data)
}

/// Aborts the call: the caller sees `app panicked: <message>` and nothing the call did is
/// kept. Returning `Err` from a method does the same.
pub fn abort(message: &str) -> ! {
    host::abort(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_display() {
        let mut a = [0u8; 20];
        a[0] = 0xab;
        a[19] = 0x01;
        let text = Address(a).to_string();
        assert_eq!(text, format!("0xab{}01", "0".repeat(36)));
        assert_eq!(serde_json::to_string(&Address(a)).unwrap(), format!("\"{text}\""));
        assert_eq!(Id([0xff; 32]).to_string(), format!("0x{}", "f".repeat(64)));
        assert!(Id([0; 32]).is_zero() && !Id([1; 32]).is_zero());
    }

    #[test]
    #[should_panic(expected = "invalid event name `a.b`")]
    fn event_names_are_checked_before_the_host() {
        emit("a.b", &1);
    }
}
