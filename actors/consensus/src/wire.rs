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
use crate::query::{Answered, Consistency, Query};
use crate::raft_types::{LogId, MeshRaft};
use crate::registry::Applied;

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

/// A signed message: the MessagePack body and the sender's signature over
/// keccak256(domain ‖ body).
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    signature: Signature65,
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
}

fn digest(domain: &[u8], body: &[u8]) -> [u8; 32] {
    keccak256_parts(&[domain, body])
}

fn seal<T: Serialize>(domain: &[u8], body: &T, key: &SigningKey) -> Result<(Vec<u8>, [u8; 32]), WireError> {
    let body = rmp_serde::to_vec_named(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    let digest = digest(domain, &body);
    let signature = key.sign_digest_recoverable(digest);
    let bytes =
        rmp_serde::to_vec_named(&Sealed { body, signature }).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok((bytes, digest))
}

fn open<T: for<'a> Deserialize<'a>>(domain: &[u8], bytes: &[u8]) -> Result<(T, Address, [u8; 32]), WireError> {
    let sealed: Sealed = rmp_serde::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    let digest = digest(domain, &sealed.body);
    let (_, signer) = sealed
        .signature
        .recover_digest(digest)
        .map_err(|_| WireError::BadSignature)?;
    let body = rmp_serde::from_slice(&sealed.body).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok((body, signer, digest))
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
        seal(REQUEST_DOMAIN, self, key)
    }

    /// A request whose signature is by the node it claims to be from, and its digest.
    pub fn open(bytes: &[u8]) -> Result<(RequestBody, [u8; 32]), WireError> {
        let (body, signer, digest): (RequestBody, _, _) = open(REQUEST_DOMAIN, bytes)?;
        if signer != body.from {
            return Err(WireError::WrongSigner {
                signer,
                claimed: body.from,
            });
        }
        Ok((body, digest))
    }
}

impl ReplyBody {
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, WireError> {
        Ok(seal(REPLY_DOMAIN, self, key)?.0)
    }

    /// A reply whose signature is by the node it claims to be from.
    pub fn open(bytes: &[u8]) -> Result<ReplyBody, WireError> {
        let (body, signer, _): (ReplyBody, _, _) = open(REPLY_DOMAIN, bytes)?;
        if signer != body.from {
            return Err(WireError::WrongSigner {
                signer,
                claimed: body.from,
            });
        }
        Ok(body)
    }
}
