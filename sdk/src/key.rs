//! 32-byte storage keys and key ranges.
//!
//! Storage is one ordered map from 32-byte keys to byte values. To keep several kinds of
//! records apart, give each kind its own **tag** (the first byte) and build keys with:
//!
//! * [`Key::named`] / [`Key::new`]: tag + up to 31 bytes of name, padded with zeros. Names
//!   may not contain NUL, so distinct names never give the same key, and keys sort like
//!   their names (byte-wise; a name sorts before its extensions: `a` < `ab` < `b`).
//! * [`Key::seq`]: tag + a `u64` big-endian, so key order is numeric order.
//!
//! Use a different tag for each constructor: `Key::named(t, "")` and `Key::seq(t, 0)` are
//! the same key.

use core::fmt;

/// Why a key or prefix could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The name (or prefix) is longer than the key has room for.
    TooLong { len: usize, max: usize },
    /// Names are padded with zeros, so a NUL inside one could collide with another name.
    Nul,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooLong { len, max } => write!(f, "{len} bytes long, at most {max} allowed"),
            KeyError::Nul => f.write_str("contains a NUL byte"),
        }
    }
}

/// A storage key: 32 bytes, ordered byte-wise.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// Room for a name after the tag byte.
    pub const NAME_MAX: usize = 31;
    pub const MIN: Key = Key([0; 32]);
    pub const MAX: Key = Key([0xff; 32]);

    pub const fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `tag` + `name` padded with zeros; `name` is at most 31 bytes, without NUL.
    pub const fn new(tag: u8, name: &[u8]) -> Result<Key, KeyError> {
        if name.len() > Self::NAME_MAX {
            return Err(KeyError::TooLong {
                len: name.len(),
                max: Self::NAME_MAX,
            });
        }
        let mut key = [0u8; 32];
        key[0] = tag;
        let mut i = 0;
        while i < name.len() {
            if name[i] == 0 {
                return Err(KeyError::Nul);
            }
            key[i + 1] = name[i];
            i += 1;
        }
        Ok(Key(key))
    }

    /// [`Key::new`] with a string name.
    pub const fn named(tag: u8, name: &str) -> Result<Key, KeyError> {
        Key::new(tag, name.as_bytes())
    }

    /// [`Key::new`] for constants: `const COUNT: Key = Key::constant(b'n', b"count");`
    /// (an invalid name fails the build).
    pub const fn constant(tag: u8, name: &[u8]) -> Key {
        match Key::new(tag, name) {
            Ok(key) => key,
            Err(_) => panic!("invalid constant key: names are at most 31 bytes, without NUL"),
        }
    }

    /// `tag` + `n` as 8 big-endian bytes + zeros: keys of one tag sort by `n`.
    pub const fn seq(tag: u8, n: u64) -> Key {
        let mut key = [0u8; 32];
        key[0] = tag;
        let be = n.to_be_bytes();
        let mut i = 0;
        while i < 8 {
            key[i + 1] = be[i];
            i += 1;
        }
        Key(key)
    }

    pub const fn tag(&self) -> u8 {
        self.0[0]
    }

    /// The name of a [`Key::new`]/[`Key::named`] key: the bytes after the tag, without the
    /// zero padding.
    pub fn name(&self) -> &[u8] {
        let end = self.0.iter().rposition(|&b| b != 0).map_or(1, |i| i + 1).max(1);
        &self.0[1..end]
    }

    /// The number of a [`Key::seq`] key.
    pub fn seq_number(&self) -> u64 {
        let mut be = [0u8; 8];
        be.copy_from_slice(&self.0[1..9]);
        u64::from_be_bytes(be)
    }

    /// The smallest key after this one, `None` for [`Key::MAX`].
    pub fn next(&self) -> Option<Key> {
        let mut key = self.0;
        for b in key.iter_mut().rev() {
            if *b == 0xff {
                *b = 0;
            } else {
                *b += 1;
                return Some(Key(key));
            }
        }
        None
    }
}

impl fmt::Display for Key {
    /// `0x` + 64 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::env::write_hex(f, &self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

/// Keys `start <= key < end` (`end: None`: no upper bound), for [`crate::storage::scan`].
///
/// ```
/// # use cmesh_sdk::{Key, KeyRange};
/// // messages 10, 11, … of tag b'm' (and nothing of the next tag):
/// let range = KeyRange { start: Key::seq(b'm', 10), ..KeyRange::tag(b'm') };
/// assert!(range.contains(&Key::seq(b'm', u64::MAX)) && !range.contains(&Key::seq(b'n', 0)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Key,
    pub end: Option<Key>,
}

impl KeyRange {
    /// Every key.
    pub const fn all() -> KeyRange {
        KeyRange {
            start: Key::MIN,
            end: None,
        }
    }

    /// Every key that starts with `prefix` (at most 32 bytes).
    pub fn prefix(prefix: &[u8]) -> Result<KeyRange, KeyError> {
        if prefix.len() > 32 {
            return Err(KeyError::TooLong {
                len: prefix.len(),
                max: 32,
            });
        }
        let mut start = [0u8; 32];
        start[..prefix.len()].copy_from_slice(prefix);
        // The end is the prefix "plus one": drop trailing 0xff bytes, bump the last other
        // byte, pad with zeros. A prefix of only 0xff bytes (or none) has no upper bound.
        let end = prefix.iter().rposition(|&b| b != 0xff).map(|i| {
            let mut end = [0u8; 32];
            end[..i].copy_from_slice(&prefix[..i]);
            end[i] = prefix[i] + 1;
            Key(end)
        });
        Ok(KeyRange { start: Key(start), end })
    }

    /// Every key of a tag.
    pub fn tag(tag: u8) -> KeyRange {
        Self::prefix(&[tag]).expect("one byte fits")
    }

    /// Every [`Key::named`] key of `tag` whose name starts with `prefix`.
    pub fn named_prefix(tag: u8, prefix: &str) -> Result<KeyRange, KeyError> {
        Key::named(tag, prefix)?; // same rules as names
        let mut bytes = Vec::with_capacity(1 + prefix.len());
        bytes.push(tag);
        bytes.extend_from_slice(prefix.as_bytes());
        Self::prefix(&bytes)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.start <= *key && self.end.is_none_or(|end| *key < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bytes: &[u8]) -> Key {
        let mut k = [0u8; 32];
        k[..bytes.len()].copy_from_slice(bytes);
        Key(k)
    }

    #[test]
    fn named_keys_pad_with_zeros_and_sort_like_names() {
        assert_eq!(Key::named(b'k', "ab").unwrap(), key(b"kab"));
        let mut names = ["b", "ab", "a", "", "abc", "a~", "\u{e9}"];
        let mut keys: Vec<Key> = names.iter().map(|n| Key::named(b'k', n).unwrap()).collect();
        names.sort();
        keys.sort();
        for (n, k) in names.iter().zip(&keys) {
            assert_eq!(k.name(), n.as_bytes());
            assert_eq!(k.tag(), b'k');
        }
    }

    #[test]
    fn names_are_limited_and_nul_free() {
        let max = "x".repeat(31);
        assert!(Key::named(1, &max).is_ok());
        assert_eq!(
            Key::named(1, &"x".repeat(32)),
            Err(KeyError::TooLong { len: 32, max: 31 })
        );
        // "a\0" would otherwise be the same key as "a".
        assert_eq!(Key::new(1, b"a\0"), Err(KeyError::Nul));
        assert_eq!(Key::new(1, b"\0"), Err(KeyError::Nul));
        assert_eq!(
            KeyError::TooLong { len: 32, max: 31 }.to_string(),
            "32 bytes long, at most 31 allowed"
        );
        const C: Key = Key::constant(b'n', b"count");
        assert_eq!(C, key(b"ncount"));
    }

    #[test]
    fn seq_keys_sort_numerically() {
        let ns = [0u64, 1, 2, 9, 10, 255, 256, 1 << 40, u64::MAX];
        for w in ns.windows(2) {
            assert!(Key::seq(7, w[0]) < Key::seq(7, w[1]));
        }
        assert_eq!(Key::seq(7, 258).as_bytes()[..10], [7, 0, 0, 0, 0, 0, 0, 1, 2, 0]);
        assert_eq!(Key::seq(7, 123_456).seq_number(), 123_456);
        assert!(Key::seq(7, u64::MAX) < Key::seq(8, 0));
    }

    #[test]
    fn next_carries_and_ends() {
        let mut k = [0u8; 32];
        k[31] = 0xff;
        k[30] = 0x01;
        let mut want = [0u8; 32];
        want[30] = 0x02;
        assert_eq!(Key(k).next(), Some(Key(want)));
        assert_eq!(Key::MAX.next(), None);
        assert_eq!(Key::MIN.next().unwrap().as_bytes()[31], 1);
    }

    #[test]
    fn prefix_ranges() {
        let r = KeyRange::prefix(b"ka").unwrap();
        assert_eq!((r.start, r.end), (key(b"ka"), Some(key(b"kb"))));
        assert!(r.contains(&Key::named(b'k', "a").unwrap()));
        assert!(r.contains(&Key::named(b'k', &"a".repeat(31)).unwrap()));
        assert!(!r.contains(&Key::named(b'k', "b").unwrap()));
        assert!(!r.contains(&Key::named(b'k', "").unwrap()));

        // Trailing 0xff bytes roll over into the byte before them.
        let r = KeyRange::prefix(&[3, 0xff, 0xff]).unwrap();
        assert_eq!(r.end, Some(key(&[4])));
        assert!(r.contains(&key(&[3, 0xff, 0xff, 0xff])));
        assert!(!r.contains(&key(&[4])));
        assert!(!r.contains(&key(&[3, 0xff, 0xfe, 0xff])));

        // Only 0xff bytes, or nothing: no upper bound.
        assert_eq!(KeyRange::prefix(&[0xff; 3]).unwrap().end, None);
        assert_eq!(
            KeyRange::prefix(&[0xff; 32]).unwrap(),
            KeyRange {
                start: Key::MAX,
                end: None
            }
        );
        assert_eq!(KeyRange::prefix(b"").unwrap(), KeyRange::all());
        assert_eq!(KeyRange::tag(0xff).end, None);

        // A full 32-byte prefix is exactly one key.
        let full = Key::seq(9, 42);
        let r = KeyRange::prefix(full.as_bytes()).unwrap();
        assert_eq!((r.start, r.end), (full, full.next()));
        assert_eq!(KeyRange::prefix(&[0; 33]), Err(KeyError::TooLong { len: 33, max: 32 }));
    }

    #[test]
    fn named_prefix_ranges() {
        let r = KeyRange::named_prefix(b'k', "user:").unwrap();
        for (name, inside) in [
            ("user:", true),
            ("user:bob", true),
            ("user", false),
            ("user;", false),
            ("users", false),
        ] {
            assert_eq!(r.contains(&Key::named(b'k', name).unwrap()), inside, "{name}");
        }
        assert_eq!(KeyRange::named_prefix(b'k', ""), Ok(KeyRange::tag(b'k')));
        assert_eq!(KeyRange::named_prefix(b'k', "a\0"), Err(KeyError::Nul));
        assert!(KeyRange::named_prefix(b'k', &"x".repeat(32)).is_err());
        assert_eq!(
            KeyRange::tag(b'm'),
            KeyRange {
                start: key(b"m"),
                end: Some(key(b"n"))
            }
        );
    }
}
