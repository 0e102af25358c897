//! 32-byte ids (apps, contexts, transactions, roots) and the byte encodings of the wire
//! format. People and JSON see `0x`-hex; MessagePack carries raw bytes, so a transaction
//! on the wire is compact and its canonical encoding has one form.

use std::fmt;
use std::str::FromStr;

use cmesh_common::hash::{from_hex0x, push_hex};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte id or hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub const ZERO: Id = Id([0; 32]);

    /// A fresh random id (context ids).
    pub fn random() -> Result<Id, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Id(bytes))
    }

    /// `0x` and the first `digits` hex digits, for log lines.
    pub fn short(&self, digits: usize) -> String {
        let mut text = self.to_string();
        text.truncate(2 + digits.min(64));
        text
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(66);
        text.push_str("0x");
        push_hex(&self.0, &mut text);
        f.write_str(&text)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short(12))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an id is 0x followed by 64 hex digits")]
pub struct IdError;

impl FromStr for Id {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        from_hex0x::<32>(text).map(Id).ok_or(IdError)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.parse().map_err(de::Error::custom)
        } else {
            deserializer.deserialize_bytes(FixedBytes::<32>).map(Id)
        }
    }
}

/// Reads exactly `N` bytes (MessagePack `bin`, or an array of integers).
struct FixedBytes<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for FixedBytes<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{N} bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; N];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(N + 1, &self));
        }
        Ok(out)
    }
}

/// `#[serde(with = "address_bytes")]`: an address as 20 raw bytes in MessagePack, as
/// its EIP-55 text in JSON.
pub mod address_bytes {
    use super::*;
    use cmesh_common::Address;

    pub fn serialize<S: Serializer>(address: &Address, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            address.serialize(serializer)
        } else {
            serializer.serialize_bytes(&address.0)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
        if deserializer.is_human_readable() {
            Address::deserialize(deserializer)
        } else {
            deserializer.deserialize_bytes(FixedBytes::<20>).map(Address)
        }
    }
}

/// `#[serde(with = "signature_bytes")]`: a recoverable signature as 65 raw bytes in
/// MessagePack, as 0x-hex in JSON.
pub mod signature_bytes {
    use super::*;
    use cmesh_common::Signature65;

    pub fn serialize<S: Serializer>(signature: &Signature65, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            signature.serialize(serializer)
        } else {
            serializer.serialize_bytes(&signature.0)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Signature65, D::Error> {
        if deserializer.is_human_readable() {
            Signature65::deserialize(deserializer)
        } else {
            deserializer.deserialize_bytes(FixedBytes::<65>).map(Signature65)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_bytes_in_msgpack_and_hex_in_json() {
        let id = Id([0xab; 32]);
        let packed = rmp_serde::to_vec(&id).expect("encode");
        assert_eq!(packed.len(), 2 + 32, "bin8 header and the bytes");
        assert_eq!(rmp_serde::from_slice::<Id>(&packed).expect("decode"), id);
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"0x{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Id>(&json).expect("parse"), id);
        assert!(rmp_serde::from_slice::<Id>(&rmp_serde::to_vec(&[1u8; 31].as_slice()).expect("e")).is_err());
    }
}
