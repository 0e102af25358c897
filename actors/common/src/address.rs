//! Ethereum-compatible addresses: the last 20 bytes of keccak256 of the uncompressed
//! public key. Written lower-case 0x-hex in subjects and metadata; EIP-55 mixed case is
//! accepted on input (and checked when the input is mixed case, as wallets expect).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::keccak256;

/// `Default` is the zero address, which no key has: Raft (openraft) needs a default node id.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("an address is 0x followed by 40 hex digits")]
    Malformed,
    #[error("mixed-case address fails its EIP-55 checksum")]
    BadChecksum,
}

impl Address {
    /// The address of an uncompressed secp256k1 public key (65 bytes, starting 0x04).
    pub fn from_uncompressed_pubkey(pubkey: &[u8; 65]) -> Self {
        let digest = keccak256(&pubkey[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[12..]);
        Address(out)
    }

    /// EIP-55 checksummed spelling, for people and wallets.
    pub fn to_eip55(&self) -> String {
        let lower = hex::encode(self.0);
        let digest = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, ch) in lower.chars().enumerate() {
            let nibble = (digest[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            if ch.is_ascii_alphabetic() && nibble >= 8 {
                out.push(ch.to_ascii_uppercase());
            } else {
                out.push(ch);
            }
        }
        out
    }
}

/// A numbered address (the number big-endian in the last 8 bytes), which no key has:
/// openraft's storage test suite names its nodes by number.
impl From<u64> for Address {
    fn from(number: u64) -> Self {
        let mut bytes = [0u8; 20];
        bytes[12..].copy_from_slice(&number.to_be_bytes());
        Address(bytes)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(42);
        text.push_str("0x");
        crate::hash::push_hex(&self.0, &mut text);
        f.write_str(&text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.strip_prefix("0x").ok_or(AddressError::Malformed)?;
        if digits.len() != 40 {
            return Err(AddressError::Malformed);
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(digits, &mut out).map_err(|_| AddressError::Malformed)?;
        let address = Address(out);
        let has_upper = digits.chars().any(|c| c.is_ascii_uppercase());
        let has_lower = digits.chars().any(|c| c.is_ascii_lowercase());
        if has_upper && has_lower && address.to_eip55() != text {
            return Err(AddressError::BadChecksum);
        }
        Ok(address)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors from EIP-55.
    const EIP55: &[&str] = &[
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn eip55_vectors_round_trip() {
        for text in EIP55 {
            let address: Address = text.parse().expect("valid vector");
            assert_eq!(&address.to_eip55(), text);
            assert_eq!(address.to_string(), text.to_lowercase());
        }
    }

    #[test]
    fn wrong_checksum_and_bad_shapes_are_rejected() {
        assert_eq!(
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".parse::<Address>(),
            Err(AddressError::BadChecksum)
        );
        assert_eq!(
            "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed".parse::<Address>(),
            Err(AddressError::Malformed)
        );
        assert_eq!("0x1234".parse::<Address>(), Err(AddressError::Malformed));
        assert_eq!("0x".to_string().parse::<Address>(), Err(AddressError::Malformed));
        // All upper or all lower case carry no checksum and are accepted.
        assert!("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED".parse::<Address>().is_ok());
    }
}
