//! The nodes of the mesh, learnt from signed announcements on NATS (and optionally limited
//! by configuration). A node's public key comes from the signature of its announcement,
//! so tokens can then be checked with a plain ECDSA verify.

use std::collections::HashMap;
use std::sync::Arc;

use cmesh_common::keys::Secp256k1PublicKey as PublicKey;
use cmesh_common::{Address, Signature65, SigningKey};
use serde::{Deserialize, Serialize};

/// Published by every node on `cmesh.announce`; signed with personal_sign over the JCS
/// of the announcement without its `signature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub mesh: String,
    pub address: Address,
    /// Unix milliseconds; announcements older than an hour are ignored.
    pub ts: u64,
    /// Random per process start: a changed boot tells the others the node restarted and
    /// must be answered so it relearns them.
    pub boot: String,
    pub signature: String,
}

impl Announcement {
    pub fn signed(key: &SigningKey, mesh: &str, ts: u64, boot: &str) -> Self {
        let mut announcement = Announcement {
            mesh: mesh.to_string(),
            address: key.address(),
            ts,
            boot: boot.to_string(),
            signature: String::new(),
        };
        announcement.signature = key.sign_personal(&announcement.signing_bytes()).to_string();
        announcement
    }

    /// The bytes that are signed: JCS of the announcement without `signature`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let value = serde_json::json!({
            "mesh": self.mesh, "address": self.address, "ts": self.ts, "boot": self.boot,
        });
        cmesh_common::jcs::signing_bytes(&value)
    }

    /// The signer's public key, if the signature is by `address`.
    pub fn verify(&self) -> Option<PublicKey> {
        let signature: Signature65 = self.signature.parse().ok()?;
        let digest = cmesh_common::keys::personal_digest(&self.signing_bytes());
        let (public, signer) = signature.recover_digest(digest).ok()?;
        (signer == self.address).then_some(public)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub address: Address,
    /// Unix milliseconds of the last announcement.
    pub last_seen: u64,
}

/// Known nodes; the key map is shared read-only with the verifier threads and replaced
/// whole when a node joins.
pub struct PeerTable {
    keys: Arc<HashMap<Address, PublicKey>>,
    info: HashMap<Address, PeerInfo>,
    boots: HashMap<Address, String>,
}

impl PeerTable {
    pub fn new(own: &SigningKey) -> Self {
        let mut keys = HashMap::new();
        keys.insert(own.address(), own.public_key());
        PeerTable {
            keys: Arc::new(keys),
            info: HashMap::new(),
            boots: HashMap::new(),
        }
    }

    pub fn keys(&self) -> Arc<HashMap<Address, PublicKey>> {
        self.keys.clone()
    }

    pub fn contains(&self, address: &Address) -> bool {
        self.keys.contains_key(address)
    }

    /// Records a verified announcement; true when the node is new or has restarted.
    pub fn learn(&mut self, announcement: &Announcement, public: PublicKey) -> bool {
        let restarted = self
            .boots
            .get(&announcement.address)
            .is_some_and(|b| *b != announcement.boot);
        self.boots.insert(announcement.address, announcement.boot.clone());
        let is_new = !self.keys.contains_key(&announcement.address);
        if is_new {
            let mut keys = (*self.keys).clone();
            keys.insert(announcement.address, public);
            self.keys = Arc::new(keys);
        }
        self.info.insert(
            announcement.address,
            PeerInfo {
                address: announcement.address,
                last_seen: announcement.ts,
            },
        );
        is_new || restarted
    }

    /// Forgets every node but this one and those `keep` names: their keys no longer
    /// verify anything here.
    pub fn retain(&mut self, own: &Address, keep: impl Fn(&Address) -> bool) {
        let kept = |address: &Address| address == own || keep(address);
        if self.keys.keys().all(kept) {
            return;
        }
        self.keys = Arc::new(
            self.keys
                .iter()
                .filter(|(a, _)| kept(a))
                .map(|(a, k)| (*a, *k))
                .collect(),
        );
        self.info.retain(|address, _| kept(address));
        self.boots.retain(|address, _| kept(address));
    }

    pub fn list(&self) -> Vec<PeerInfo> {
        let mut list: Vec<PeerInfo> = self.info.values().cloned().collect();
        list.sort_by_key(|p| p.address);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_node_counts_as_news() {
        let own = SigningKey::generate().expect("key");
        let other = SigningKey::generate().expect("key");
        let mut table = PeerTable::new(&own);
        let first = Announcement::signed(&other, "m", 1, "boot-a");
        assert!(table.learn(&first, other.public_key()));
        assert!(!table.learn(&Announcement::signed(&other, "m", 2, "boot-a"), other.public_key()));
        assert!(table.learn(&Announcement::signed(&other, "m", 3, "boot-b"), other.public_key()));
    }

    #[test]
    fn announcements_verify_only_for_their_signer() {
        let key = SigningKey::generate().expect("key");
        let announcement = Announcement::signed(&key, "m", 5, "b1");
        assert_eq!(announcement.verify(), Some(key.public_key()));
        let mut tampered = announcement.clone();
        tampered.ts = 6;
        assert_eq!(tampered.verify(), None);
        let mut impostor = announcement;
        impostor.address = SigningKey::generate().expect("key").address();
        assert_eq!(impostor.verify(), None);
    }
}
