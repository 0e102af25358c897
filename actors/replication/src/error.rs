//! What can go wrong while replicating. Every error carries a status, so the router can
//! answer `ctx.join`, `ctx.leave` and `ctx.status` with the right code.

use cmesh_common::{CmtpError, Status};
use cmesh_state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// A member answered with an error (or every member that answered did).
    #[error("{0}")]
    Refused(CmtpError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    NoMember(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("a member sent something wrong: {0}")]
    BadPeer(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0} is gone")]
    Gone(&'static str),
}

impl ReplicationError {
    pub fn status(&self) -> Status {
        match self {
            ReplicationError::Refused(e) => e.status,
            ReplicationError::State(e) => e.status(),
            ReplicationError::NoMember(_) | ReplicationError::Nats(_) | ReplicationError::Gone(_) => {
                Status::UNAVAILABLE
            }
            ReplicationError::Conflict(_) => Status::CONFLICT,
            ReplicationError::NotFound(_) => Status::NOT_FOUND,
            ReplicationError::BadPeer(_) => Status(502),
        }
    }
}

impl From<ReplicationError> for CmtpError {
    fn from(err: ReplicationError) -> Self {
        match err {
            ReplicationError::Refused(e) => e,
            ReplicationError::State(e) => e.into(),
            other => CmtpError::new(other.status(), other.to_string()),
        }
    }
}

impl From<crate::wire::WireError> for ReplicationError {
    fn from(err: crate::wire::WireError) -> Self {
        ReplicationError::BadPeer(err.to_string())
    }
}
