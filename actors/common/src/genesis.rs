//! A mesh's root of trust: its genesis, the small file every node of the mesh starts with.
//!
//! Why a file and a hash: a node must know whom to trust before it has heard anyone, and
//! two meshes sharing one NATS must never mix. The genesis names the mesh, its admins and
//! its first Raft voters; the keccak256 of its canonical JSON (RFC 8785) is the mesh id,
//! which every token, announcement and node signature names. Changing any byte that
//! matters (a name, an admin, a voter) makes a different mesh.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::{from_hex0x, keccak256, to_hex0x};
use crate::Address;

/// Longest mesh name, in bytes.
pub const MAX_MESH_NAME: usize = 64;
/// The genesis format this code reads and writes.
pub const GENESIS_VERSION: u32 = 1;

/// The contents of a genesis file (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Format version; [`GENESIS_VERSION`].
    pub version: u32,
    /// The mesh name: in login messages and token audiences.
    pub mesh: String,
    /// Addresses that may admit and remove nodes and grant mesh-wide attributes.
    pub admins: Vec<Address>,
    /// Node addresses of the first Raft voters; the registry starts with them admitted.
    pub voters: Vec<Address>,
    /// The top-level domains names may use. Mesh-wide, since every replica of the
    /// registry must apply the same rules [default: mcom].
    #[serde(default = "default_tlds")]
    pub tlds: Vec<String>,
}

fn default_tlds() -> Vec<String> {
    vec!["mcom".to_string()]
}

/// A genesis that cannot be used, and why. The file is the operator's, so each message
/// says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenesisError {
    #[error("cannot read the genesis file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the genesis file {path} is not a genesis: {reason}")]
    Parse { path: String, reason: String },
    #[error("the genesis has format version {found}; this node reads version {GENESIS_VERSION}")]
    Version { found: u32 },
    #[error("the mesh name must be 1 to {MAX_MESH_NAME} bytes of letters, digits, '-', '_' or '.', not {0:?}")]
    MeshName(String),
    #[error("the genesis names no {0}: a mesh needs at least one")]
    Empty(&'static str),
    #[error("the genesis lists {address} twice among the {list}")]
    Duplicate { list: &'static str, address: Address },
}

/// The hash that names a mesh: keccak256 of its genesis's canonical JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeshId(pub [u8; 32]);

impl Genesis {
    /// A checked genesis: a valid name, at least one admin and one voter, no duplicates.
    pub fn new(mesh: &str, admins: Vec<Address>, voters: Vec<Address>) -> Result<Self, GenesisError> {
        let genesis = Genesis {
            version: GENESIS_VERSION,
            mesh: mesh.to_string(),
            admins,
            voters,
            tlds: default_tlds(),
        };
        genesis.check()?;
        Ok(genesis)
    }

    /// Reads and checks the genesis file at `path`.
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| GenesisError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let genesis: Genesis = serde_json::from_str(&text).map_err(|e| GenesisError::Parse {
            path: shown,
            reason: e.to_string(),
        })?;
        genesis.check()?;
        Ok(genesis)
    }

    /// The file's text: pretty JSON with a trailing newline.
    pub fn to_file_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Everything [`Genesis::new`] requires.
    pub fn check(&self) -> Result<(), GenesisError> {
        if self.version != GENESIS_VERSION {
            return Err(GenesisError::Version { found: self.version });
        }
        let name_ok = !self.mesh.is_empty()
            && self.mesh.len() <= MAX_MESH_NAME
            && self
                .mesh
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(GenesisError::MeshName(self.mesh.clone()));
        }
        if self.tlds.is_empty() {
            return Err(GenesisError::Empty("tlds"));
        }
        for (list, addresses) in [("admins", &self.admins), ("voters", &self.voters)] {
            if addresses.is_empty() {
                return Err(GenesisError::Empty(list));
            }
            let mut seen = BTreeSet::new();
            if let Some(address) = addresses.iter().find(|a| !seen.insert(**a)) {
                return Err(GenesisError::Duplicate {
                    list,
                    address: *address,
                });
            }
        }
        Ok(())
    }

    /// keccak256 of the RFC 8785 canonical JSON of the genesis. Key order and white space
    /// in the file do not matter; the order of the admins and voters does.
    pub fn mesh_id(&self) -> MeshId {
        let value = serde_json::to_value(self).unwrap_or_default();
        MeshId(keccak256(&crate::jcs::signing_bytes(&value)))
    }
}

impl fmt::Display for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex0x(&self.0))
    }
}

impl fmt::Debug for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshId({self})")
    }
}

impl FromStr for MeshId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        from_hex0x::<32>(text)
            .map(MeshId)
            .ok_or_else(|| format!("a mesh id is 0x and 64 hex digits, not {text:?}"))
    }
}

impl Serialize for MeshId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MeshId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(byte: u8) -> Address {
        Address([byte; 20])
    }

    #[test]
    fn the_id_ignores_layout_but_not_content() {
        let genesis = Genesis::new("demo", vec![address(1)], vec![address(2), address(3)]).unwrap();
        let reordered_keys = format!(
            r#"{{"voters":["{}","{}"],"mesh":"demo","admins":["{}"],"version":1}}"#,
            address(2),
            address(3),
            address(1)
        );
        let same: Genesis = serde_json::from_str(&reordered_keys).unwrap();
        assert_eq!(same.mesh_id(), genesis.mesh_id());

        let other_name = Genesis::new("demo2", vec![address(1)], vec![address(2), address(3)]).unwrap();
        let other_voter = Genesis::new("demo", vec![address(1)], vec![address(2), address(4)]).unwrap();
        let other_admin = Genesis::new("demo", vec![address(9)], vec![address(2), address(3)]).unwrap();
        for other in [other_name, other_voter, other_admin] {
            assert_ne!(other.mesh_id(), genesis.mesh_id(), "{other:?}");
        }
        let shown = genesis.mesh_id().to_string();
        assert_eq!(shown.parse::<MeshId>().unwrap(), genesis.mesh_id());
    }

    #[test]
    fn a_file_round_trips_and_bad_ones_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesis.json");
        let genesis = Genesis::new("demo", vec![address(1)], vec![address(2)]).unwrap();
        std::fs::write(&path, genesis.to_file_text()).unwrap();
        assert_eq!(Genesis::load(&path).unwrap(), genesis);

        assert!(matches!(
            Genesis::load(&dir.path().join("missing.json")),
            Err(GenesisError::Read { .. })
        ));
        std::fs::write(
            &path,
            r#"{"version":1,"mesh":"demo","admins":[],"voters":[],"extra":1}"#,
        )
        .unwrap();
        assert!(matches!(Genesis::load(&path), Err(GenesisError::Parse { .. })));
        assert_eq!(
            Genesis::new("demo", vec![], vec![address(2)]),
            Err(GenesisError::Empty("admins"))
        );
        assert_eq!(
            Genesis::new("demo", vec![address(1)], vec![address(2), address(2)]),
            Err(GenesisError::Duplicate {
                list: "voters",
                address: address(2)
            })
        );
        assert_eq!(
            Genesis::new("a mesh", vec![address(1)], vec![address(2)]),
            Err(GenesisError::MeshName("a mesh".into()))
        );
        let mut future = genesis.clone();
        future.version = 2;
        assert_eq!(future.check(), Err(GenesisError::Version { found: 2 }));
    }
}
