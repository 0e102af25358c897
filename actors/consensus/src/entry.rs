//! Registry commands as they sit in the Raft log: signed by the admitted node that
//! proposed them, so that every replica can check who vouches for each.
//!
//! Why signatures inside the log: Raft tolerates crashes, not liars. A replica applies an
//! entry only if its signature recovers to a node the registry admits at that point of
//! the log, it names this mesh, and its id has not been applied before. The signed bytes
//! start with a domain tag that no login message or request signature can start with.
//!
//! Why a client's own proof as well: the proposer vouches for the caller it names, but a
//! liar among the nodes could name anyone. When the client Kami-signed its request, the
//! body carries that signed request, and a replica applies the body only if the request
//! is the caller's and asks for this very command; its id is then derived from the
//! request, so the same request cannot be applied twice.
//!
//! Why one signature over several bodies: a node signs the proposals that wait together
//! in one go, and every replica checks that one signature, instead of one signing and
//! three recoveries per name (which were most of the CPU of a write). Each body keeps
//! its own id, time and caller, and gets its own result.

use std::fmt;

use cmesh_common::genesis::MeshId;
use cmesh_common::hash::{keccak256_parts, to_hex0x};
use cmesh_common::rpc::RequestProof;
use cmesh_common::{Address, Signature65, SigningKey};
use serde::{Deserialize, Serialize};

use crate::command::Command;

/// Prefix of the bytes a proposer signs.
pub const ENTRY_DOMAIN: &[u8] = b"cmesh/registry-entry/v1\n";

/// A random id per proposal: a replayed entry carries an id already applied.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryId(pub [u8; 16]);

impl EntryId {
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(EntryId(bytes))
    }

    /// The id of the body that carries a client's signed request: one request, one id.
    pub fn of_proof(proof: &RequestProof) -> Self {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&proof.digest()[..16]);
        EntryId(bytes)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex0x(&self.0))
    }
}

/// What the proposer signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    pub mesh: MeshId,
    pub command: Command,
    /// The authenticated identity the command runs as.
    pub caller: Address,
    /// Unix milliseconds at the proposer. The registry's clock: records take their times
    /// from here, so every replica writes the same.
    pub time_ms: u64,
    pub id: EntryId,
    /// The caller's Kami-signed request that asked for `command`, if it signed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<RequestProof>,
}

/// Registry commands signed together by the node that proposed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    pub bodies: Vec<EntryBody>,
    pub proposer: Address,
    pub signature: Signature65,
}

/// keccak256 of the domain tag and the bodies' MessagePack (named fields).
fn digest(bodies: &[EntryBody]) -> [u8; 32] {
    let encoded = rmp_serde::to_vec_named(bodies).unwrap_or_default();
    keccak256_parts(&[ENTRY_DOMAIN, &encoded])
}

impl EntryBody {
    /// This body alone, signed with the proposing node's key.
    pub fn sign(self, key: &SigningKey) -> SignedEntry {
        SignedEntry::sign(vec![self], key)
    }
}

impl SignedEntry {
    /// `bodies`, signed together with the proposing node's key.
    pub fn sign(bodies: Vec<EntryBody>, key: &SigningKey) -> SignedEntry {
        let signature = key.sign_digest_recoverable(digest(&bodies));
        SignedEntry {
            bodies,
            proposer: key.address(),
            signature,
        }
    }

    /// True if the signature is by `proposer` over these bodies.
    pub fn signature_holds(&self) -> bool {
        matches!(self.signature.recover_digest(digest(&self.bodies)), Ok((_, signer)) if signer == self.proposer)
    }
}
