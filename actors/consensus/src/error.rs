//! Why the registry did not change, and whose fault it is.
//!
//! Two kinds, because they are reported differently: an [`EntryFault`] means the log
//! entry itself cannot count (a forged or replayed proposal): every replica applies it as
//! a no-op and logs it. A [`Refusal`] is a well-formed command the rules refuse; the
//! client gets its status and message, as from the single registrar before.

use cmesh_common::genesis::MeshId;
use cmesh_common::{Address, CmtpError, Status};
use serde::{Deserialize, Serialize};

/// A log entry that does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EntryFault {
    #[error("the entry names mesh {found}, not this mesh {expected}")]
    OtherMesh { found: MeshId, expected: MeshId },
    #[error("the entry's signature is not by its proposer {proposer}")]
    BadSignature { proposer: Address },
    #[error("the entry's proposer {proposer} is not an admitted node")]
    NotAdmitted { proposer: Address },
    #[error("the entry's id was applied before: a replay")]
    Replayed,
    #[error("the client proof of the command does not hold: {reason}")]
    ClientProof { reason: String },
    #[error("the entry is older than the replay window of the registry ({age_ms} ms behind its clock)")]
    Stale { age_ms: u64 },
}

/// A command the registry's rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 403.
    #[error("only a mesh admin may {action}; {caller} is not one")]
    NotAdmin { caller: Address, action: &'static str },
    /// 404.
    #[error("node {node} is not admitted")]
    UnknownNode { node: Address },
    /// 409.
    #[error("node {node} is the last voter; admit another voter first")]
    LastVoter { node: Address },
    /// 409.
    #[error("{address} is a mesh admin by the genesis, which no revoke changes")]
    GenesisAdmin { address: Address },
}

impl Refusal {
    pub fn status(&self) -> Status {
        match self {
            Refusal::NotAdmin { .. } => Status::FORBIDDEN,
            Refusal::UnknownNode { .. } => Status::NOT_FOUND,
            Refusal::LastVoter { .. } | Refusal::GenesisAdmin { .. } => Status::CONFLICT,
        }
    }
}

impl From<Refusal> for CmtpError {
    fn from(refusal: Refusal) -> Self {
        CmtpError::new(refusal.status(), refusal.to_string())
    }
}

impl EntryFault {
    /// What a client whose request became this entry is told.
    pub fn status(&self) -> Status {
        match self {
            EntryFault::OtherMesh { .. }
            | EntryFault::BadSignature { .. }
            | EntryFault::NotAdmitted { .. }
            | EntryFault::ClientProof { .. } => Status::UNAUTHORIZED,
            EntryFault::Replayed | EntryFault::Stale { .. } => Status::CONFLICT,
        }
    }
}

/// Why a write or a read through Raft did not complete. Each says whether the client may
/// simply retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsensusError {
    /// 503: no leader could be reached; nothing was written.
    #[error("the mesh registry has no reachable leader ({reason}); nothing was written, retry in a few seconds")]
    NoLeader { reason: String },
    /// 503: the leader was lost while the write was in flight.
    #[error(
        "the mesh registry's leader did not answer ({reason}); the write may or may not have committed: \
         read it back (for a name, resolve it) before retrying"
    )]
    FateUnknown { reason: String },
    /// 503: the registry cannot serve (Raft stopped, or this node is refused by its peers).
    #[error("the mesh registry is unavailable on this node ({0}); retry later, or through another node")]
    Unavailable(String),
    /// 413.
    #[error("the registry entry is {size} bytes; at most {max} are taken")]
    TooLarge { size: usize, max: usize },
    /// 500.
    #[error("the mesh registry failed: {0}")]
    Internal(String),
}

impl ConsensusError {
    pub fn status(&self) -> Status {
        match self {
            ConsensusError::NoLeader { .. } | ConsensusError::FateUnknown { .. } | ConsensusError::Unavailable(_) => {
                Status::UNAVAILABLE
            }
            ConsensusError::TooLarge { .. } => Status::PAYLOAD_TOO_LARGE,
            ConsensusError::Internal(_) => Status::INTERNAL,
        }
    }
}

impl From<ConsensusError> for CmtpError {
    fn from(error: ConsensusError) -> Self {
        CmtpError::new(error.status(), error.to_string())
    }
}
