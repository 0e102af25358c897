//! keccak256, the hash of Ethereum addresses, personal_sign digests and our audit chain.

use tiny_keccak::{Hasher, Keccak};

/// keccak256 of one byte string.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    keccak256_parts(&[data])
}

/// keccak256 of the concatenation of several byte strings, without copying them together.
pub fn keccak256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Keccak::v256();
    for part in parts {
        hasher.update(part);
    }
    let mut out = [0u8; 32];
    hasher.finalize(&mut out);
    out
}

/// 0x-prefixed lower-case hex, the way hashes and ids are written on the wire.
pub fn to_hex0x(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    push_hex(bytes, &mut out);
    out
}

/// Appends lower-case hex of `bytes` to `out`. Events and audit records write several
/// hashes per request, so this avoids the per-character iterator of a generic encoder.
pub fn push_hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 0x0f) as usize] as char);
    }
}

/// Parses 0x-prefixed (or bare) hex of exactly `N` bytes.
pub fn from_hex0x<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keccak_of_empty_is_the_known_constant() {
        assert_eq!(
            to_hex0x(&keccak256(b"")),
            "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn parts_hash_like_the_concatenation() {
        assert_eq!(keccak256_parts(&[b"ab", b"c"]), keccak256(b"abc"));
    }

    #[test]
    fn hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex0x(&bytes), format!("0x{}", hex::encode(&bytes)));
    }

    #[test]
    fn hex_round_trip_and_length_check() {
        let bytes = [0xabu8; 4];
        assert_eq!(from_hex0x::<4>(&to_hex0x(&bytes)), Some(bytes));
        assert_eq!(from_hex0x::<4>("0xabab"), None);
        assert_eq!(from_hex0x::<2>("zzzz"), None);
    }
}
