//! The keys a node shares with each peer it has heard from, for authenticating consensus
//! messages with a MAC instead of a signature.
//!
//! Why: every Raft RPC and every reply was signed and its signature recovered, about a
//! third of the CPU of a registry write. The first message between two nodes is still
//! signed, and the receiver learns the sender's public key from it (recovery binds the
//! key to the address). From then on each side can compute the ECDH secret of the two
//! keys, which nobody else can, and a keccak MAC keyed by it (over the same domain-tagged
//! body, naming mesh, sender, receiver and time) proves the sender as a signature did,
//! for a microsecond of hashing. A node that lost the key (it restarted) answers a MAC it
//! cannot check with a signed `SignAgain`, and the sender signs its next request.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use cmesh_common::genesis::MeshId;
use cmesh_common::hash::keccak256_parts;
use cmesh_common::keys::Secp256k1PublicKey as PublicKey;
use cmesh_common::{Address, SigningKey};

const MAC_KEY_DOMAIN: &[u8] = b"cmesh/raft-mac-key/v1\n";
const MAC_DOMAIN: &[u8] = b"cmesh/raft-mac/v1\n";

/// Peers whose MAC keys are kept before the table starts over (each is re-learnt from
/// its next signed message).
const MAX_PEERS: usize = 4_096;

pub struct PeerKeys {
    own: SigningKey,
    mesh: MeshId,
    macs: RwLock<HashMap<Address, [u8; 32]>>,
}

impl PeerKeys {
    pub fn new(own: SigningKey, mesh: MeshId) -> Self {
        PeerKeys {
            own,
            mesh,
            macs: RwLock::default(),
        }
    }

    pub fn own(&self) -> &SigningKey {
        &self.own
    }

    /// Keeps the MAC key shared with `peer`, whose public key a signature just proved.
    pub fn learn(&self, peer: Address, public: &PublicKey) {
        if peer == self.own.address() || self.key_for(&peer).is_some() {
            return;
        }
        let (low, high) = if self.own.address() < peer {
            (self.own.address(), peer)
        } else {
            (peer, self.own.address())
        };
        let shared = self.own.shared_secret(public);
        let key = keccak256_parts(&[MAC_KEY_DOMAIN, &self.mesh.0, &shared, &low.0, &high.0]);
        let mut macs = self.macs.write().unwrap_or_else(PoisonError::into_inner);
        if macs.len() >= MAX_PEERS {
            macs.clear();
        }
        macs.insert(peer, key);
    }

    /// Forgets `peer`'s key (it did not know ours any more).
    pub fn forget(&self, peer: &Address) {
        self.macs.write().unwrap_or_else(PoisonError::into_inner).remove(peer);
    }

    pub fn key_for(&self, peer: &Address) -> Option<[u8; 32]> {
        self.macs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .copied()
    }
}

/// The MAC of a message body under a shared key.
pub fn mac(key: &[u8; 32], domain: &[u8], body: &[u8]) -> [u8; 32] {
    keccak256_parts(&[MAC_DOMAIN, key, domain, body])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_key_and_nobody_else_does() {
        let mesh = MeshId([9; 32]);
        let (a, b, c) = (
            SigningKey::generate().expect("a"),
            SigningKey::generate().expect("b"),
            SigningKey::generate().expect("c"),
        );
        let at_a = PeerKeys::new(a.clone(), mesh);
        let at_b = PeerKeys::new(b.clone(), mesh);
        at_a.learn(b.address(), &b.public_key());
        at_b.learn(a.address(), &a.public_key());
        let ab = at_a.key_for(&b.address()).expect("a knows b");
        assert_eq!(Some(ab), at_b.key_for(&a.address()), "the two sides agree");

        // c, who knows both public keys, derives another key with each.
        let at_c = PeerKeys::new(c, mesh);
        at_c.learn(a.address(), &a.public_key());
        assert_ne!(at_c.key_for(&a.address()), Some(ab));
        // Another mesh, another key.
        let elsewhere = PeerKeys::new(a.clone(), MeshId([8; 32]));
        elsewhere.learn(b.address(), &b.public_key());
        assert_ne!(elsewhere.key_for(&b.address()), Some(ab));

        assert_ne!(mac(&ab, b"x", b"body"), mac(&ab, b"x", b"bodY"));
        at_a.forget(&b.address());
        assert_eq!(at_a.key_for(&b.address()), None);
    }
}
