//! What consensus nodes say to each other, on `cmesh.raft.<mesh>.<node>` (NATS
//! request/reply, MessagePack).
//!
//! Why everything is signed: anyone on the bus can publish to a node's subject, and
//! anyone can answer a request first. A request counts only if it is signed by its
//! sender, names this mesh and this receiver, and is recent; a reply counts only if it
//! is signed by the node that was asked and names the digest of the request it answers.
//! The signed bytes start with a domain tag, so that no other cmesh signature (a login,
//! a request, a registry entry) can be passed off as one of these.
//!
//! A replayed Raft request from a real peer is a duplicate message, which Raft
//! tolerates; the time window bounds how old one may be.

use cmesh_common::genesis::MeshId;
use cmesh_common::hash::keccak256_parts;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, Signature65, SigningKey};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::entry::SignedEntry;
use crate::peer_keys::{mac, PeerKeys};
use crate::query::{Answered, Consistency, Query};
use crate::raft_types::{LogId, MeshRaft};
use crate::registry::Applied;
use cmesh_common::keys::Secp256k1PublicKey as PublicKey;

pub const REQUEST_DOMAIN: &[u8] = b"cmesh/raft-request/v1\n";
pub const REPLY_DOMAIN: &[u8] = b"cmesh/raft-reply/v1\n";

/// Requests dated further than this from the receiver's clock are refused.
pub const REQUEST_WINDOW_MS: u64 = 60_000;

/// The subject of `node`'s consensus requests in `mesh`.
pub fn node_subject(mesh: &MeshId, node: &Address) -> String {
    format!("cmesh.raft.{mesh}.{node}")
}

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<MeshRaft>),
    Vote(VoteRequest<Address>),
    Snapshot(InstallSnapshotRequest<MeshRaft>),
    /// A signed registry entry for the leader to commit, from the node that signed it.
    Propose(SignedEntry),
    /// The leader's read index, for a linearizable read from a replica.
    ReadIndex,
    /// A read run by a replica for a node without one (a member).
    Query {
        consistency: Consistency,
        query: Query,
    },
}

impl Rpc {
    /// Whether only Raft's own members (voters and learners) may send it.
    pub fn is_raft(&self) -> bool {
        matches!(self, Rpc::Append(_) | Rpc::Vote(_) | Rpc::Snapshot(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Rpc::Append(_) => "append",
            Rpc::Vote(_) => "vote",
            Rpc::Snapshot(_) => "snapshot",
            Rpc::Propose(_) => "propose",
            Rpc::ReadIndex => "read-index",
            Rpc::Query { .. } => "query",
        }
    }
}

/// Why the leader did not take a proposal or give a read index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderError {
    /// Not (or no longer) the leader: nothing was appended, so the caller may retry there.
    #[error("this node is not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<Address> },
    /// Raft stopped, or the write's fate is unknown.
    #[error("{0}")]
    Unavailable(String),
}

/// A proposal committed by the leader: one result per command, and the log index of the
/// Raft entry that carried it (so the proposer can wait for its own replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub results: Vec<Applied>,
    pub index: u64,
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    Append(Result<AppendEntriesResponse<Address>, RaftError<Address>>),
    Vote(Result<VoteResponse<Address>, RaftError<Address>>),
    Snapshot(Result<InstallSnapshotResponse<Address>, RaftError<Address, InstallSnapshotError>>),
    Propose(Result<Committed, LeaderError>),
    ReadIndex(Result<Option<LogId>, LeaderError>),
    /// The answer, or why this node could not give one (no replica, no leader).
    Query(Result<Answered, String>),
    /// The request does not count here, and why (not admitted, another mesh, too old).
    Refused(String),
    /// The request came with a MAC under a key this node no longer holds (it restarted):
    /// sign the next one.
    SignAgain,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestBody {
    pub mesh: MeshId,
    pub from: Address,
    pub to: Address,
    pub time_ms: u64,
    pub rpc: Rpc,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplyBody {
    /// The digest of the signed request this answers.
    pub request: [u8; 32],
    pub from: Address,
    pub reply: RpcReply,
}

/// A message and the proof of its sender: a signature over keccak256(domain ‖ body), or
/// once the two nodes know each other's keys, a MAC under the key they share
/// ([`PeerKeys`]).
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    auth: Auth,
}

#[derive(Debug, Serialize, Deserialize)]
enum Auth {
    Signature(Signature65),
    Mac([u8; 32]),
}

/// A message that cannot count.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a signed consensus message: {0}")]
    Malformed(String),
    #[error("the signature does not recover")]
    BadSignature,
    #[error("signed by {signer}, but claims to be from {claimed}")]
    WrongSigner { signer: Address, claimed: Address },
    #[error("a MAC from {from}, whose key this node does not hold")]
    UnknownPeer { from: Address, digest: [u8; 32] },
    #[error("a MAC that does not hold, claiming to be from {from}")]
    BadMac { from: Address },
}

/// How an opened message proved its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// Signed: the sender's public key, for the receiver to keep (with
    /// [`PeerKeys::learn`]) once it knows the sender is one it deals with.
    Signed(PublicKey),
    /// With a MAC under the key the two share.
    Mac,
}

impl Proven {
    pub fn is_mac(&self) -> bool {
        matches!(self, Proven::Mac)
    }
}

/// A message's sender, as it claims.
trait Sent {
    fn sender(&self) -> Address;
}

impl Sent for RequestBody {
    fn sender(&self) -> Address {
        self.from
    }
}

impl Sent for ReplyBody {
    fn sender(&self) -> Address {
        self.from
    }
}

fn digest(domain: &[u8], body: &[u8]) -> [u8; 32] {
    keccak256_parts(&[domain, body])
}

/// The sealed bytes and the body's digest; MAC'd under `mac_key` if given, else signed.
fn seal<T: Serialize>(
    domain: &[u8],
    body: &T,
    key: &SigningKey,
    mac_key: Option<[u8; 32]>,
) -> Result<(Vec<u8>, [u8; 32]), WireError> {
    let body = rmp_serde::to_vec_named(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    let digest = digest(domain, &body);
    let auth = match mac_key {
        Some(mac_key) => Auth::Mac(mac(&mac_key, domain, &body)),
        None => Auth::Signature(key.sign_digest_recoverable(digest)),
    };
    let bytes = rmp_serde::to_vec_named(&Sealed { body, auth }).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok((bytes, digest))
}

/// A message whose proof is by the sender it names: its body, digest, and how it was
/// proven. A MAC needs `keys`; a signature teaches nothing by itself (the caller keeps
/// the key of a sender it deals with, not of every stranger who signs).
fn open<T: Sent + for<'a> Deserialize<'a>>(
    domain: &[u8],
    bytes: &[u8],
    keys: Option<&PeerKeys>,
) -> Result<(T, [u8; 32], Proven), WireError> {
    let sealed: Sealed = rmp_serde::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    let digest = digest(domain, &sealed.body);
    let body: T = rmp_serde::from_slice(&sealed.body).map_err(|e| WireError::Malformed(e.to_string()))?;
    let from = body.sender();
    match sealed.auth {
        Auth::Signature(signature) => {
            let (public, signer) = signature.recover_digest(digest).map_err(|_| WireError::BadSignature)?;
            if signer != from {
                return Err(WireError::WrongSigner { signer, claimed: from });
            }
            Ok((body, digest, Proven::Signed(public)))
        }
        Auth::Mac(tag) => {
            let key = keys
                .and_then(|keys| keys.key_for(&from))
                .ok_or(WireError::UnknownPeer { from, digest })?;
            if mac(&key, domain, &sealed.body) != tag {
                return Err(WireError::BadMac { from });
            }
            Ok((body, digest, Proven::Mac))
        }
    }
}

impl RequestBody {
    /// A request from `key`'s node to `to`, dated now.
    pub fn new(mesh: MeshId, key: &SigningKey, to: Address, rpc: Rpc) -> RequestBody {
        RequestBody {
            mesh,
            from: key.address(),
            to,
            time_ms: unix_millis(),
            rpc,
        }
    }

    /// The signed bytes and their digest (what the reply must name).
    pub fn seal(&self, key: &SigningKey) -> Result<(Vec<u8>, [u8; 32]), WireError> {
        seal(REQUEST_DOMAIN, self, key, None)
    }

    /// The sealed bytes, their digest, and whether they carry a MAC: they do when this
    /// node holds the key it shares with the receiver.
    pub fn seal_for(&self, keys: &PeerKeys) -> Result<(Vec<u8>, [u8; 32], bool), WireError> {
        let mac_key = keys.key_for(&self.to);
        let (bytes, digest) = seal(REQUEST_DOMAIN, self, keys.own(), mac_key)?;
        Ok((bytes, digest, mac_key.is_some()))
    }

    /// A signed request whose signature is by the node it claims to be from, and its digest.
    pub fn open(bytes: &[u8]) -> Result<(RequestBody, [u8; 32]), WireError> {
        let (body, digest, _) = open(REQUEST_DOMAIN, bytes, None)?;
        Ok((body, digest))
    }

    /// A request signed or MAC'd by the node it claims to be from, its digest, and how
    /// it was proven.
    pub fn open_with(bytes: &[u8], keys: &PeerKeys) -> Result<(RequestBody, [u8; 32], Proven), WireError> {
        open(REQUEST_DOMAIN, bytes, Some(keys))
    }
}

impl ReplyBody {
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, WireError> {
        Ok(seal(REPLY_DOMAIN, self, key, None)?.0)
    }

    /// MAC'd if `mac` (the request came with one, so its sender holds the key) and this
    /// node holds the key it shares with `to`; signed otherwise.
    pub fn seal_for(&self, keys: &PeerKeys, to: &Address, mac: bool) -> Result<Vec<u8>, WireError> {
        let mac_key = if mac { keys.key_for(to) } else { None };
        Ok(seal(REPLY_DOMAIN, self, keys.own(), mac_key)?.0)
    }

    /// A signed reply whose signature is by the node it claims to be from.
    pub fn open(bytes: &[u8]) -> Result<ReplyBody, WireError> {
        Ok(open(REPLY_DOMAIN, bytes, None)?.0)
    }

    /// A reply signed or MAC'd by the node it claims to be from, and how it was proven.
    pub fn open_with(bytes: &[u8], keys: &PeerKeys) -> Result<(ReplyBody, Proven), WireError> {
        let (body, _, proven) = open(REPLY_DOMAIN, bytes, Some(keys))?;
        Ok((body, proven))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(from: &SigningKey, to: Address) -> RequestBody {
        RequestBody::new(MeshId([1; 32]), from, to, Rpc::ReadIndex)
    }

    #[test]
    fn the_first_request_is_signed_then_macs_prove_the_sender() {
        let (a, b, c) = (
            SigningKey::generate().expect("a"),
            SigningKey::generate().expect("b"),
            SigningKey::generate().expect("c"),
        );
        let mesh = MeshId([1; 32]);
        let (at_a, at_b, at_c) = (
            PeerKeys::new(a.clone(), mesh),
            PeerKeys::new(b.clone(), mesh),
            PeerKeys::new(c.clone(), mesh),
        );
        // A knows nothing of B: it signs, and B keeps A's key from the signature.
        let (bytes, digest, with_mac) = request(&a, b.address()).seal_for(&at_a).expect("sealed");
        assert!(!with_mac);
        let (_, opened, proven) = RequestBody::open_with(&bytes, &at_b).expect("a signed request");
        assert_eq!((opened, proven), (digest, Proven::Signed(a.public_key())));
        at_b.learn(a.address(), &a.public_key());
        // B's signed answer gives A B's key; from then on both use MACs.
        let reply = ReplyBody {
            request: digest,
            from: b.address(),
            reply: RpcReply::ReadIndex(Ok(None)),
        };
        let signed_reply = reply.seal_for(&at_b, &a.address(), false).expect("sealed");
        let (_, proven) = ReplyBody::open_with(&signed_reply, &at_a).expect("a signed reply");
        assert_eq!(proven, Proven::Signed(b.public_key()));
        at_a.learn(b.address(), &b.public_key());
        let (bytes, _, with_mac) = request(&a, b.address()).seal_for(&at_a).expect("sealed");
        assert!(with_mac, "A holds the key it shares with B");
        assert!(RequestBody::open_with(&bytes, &at_b)
            .expect("a MAC'd request")
            .2
            .is_mac());
        let mac_reply = reply.seal_for(&at_b, &a.address(), true).expect("sealed");
        ReplyBody::open_with(&mac_reply, &at_a).expect("a MAC'd reply");

        // Nobody else can make one: C, who knows A's key too, claims to be A.
        at_c.learn(b.address(), &b.public_key());
        let mut forged = request(&c, b.address());
        forged.from = a.address();
        let mac_key = at_c.key_for(&b.address());
        let (bytes, _) = seal(REQUEST_DOMAIN, &forged, &c, mac_key).expect("sealed");
        assert!(matches!(
            RequestBody::open_with(&bytes, &at_b),
            Err(WireError::BadMac { .. })
        ));
        // A MAC from a node B never heard from asks for a signature.
        let at_fresh_b = PeerKeys::new(b.clone(), mesh);
        let (bytes, _, _) = request(&a, b.address()).seal_for(&at_a).expect("sealed");
        assert!(matches!(
            RequestBody::open_with(&bytes, &at_fresh_b),
            Err(WireError::UnknownPeer { .. })
        ));
        // And the signature-only readers take no MAC at all.
        assert!(RequestBody::open(&bytes).is_err());
    }
}
