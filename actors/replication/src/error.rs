//! What can go wrong while replicating. Every error carries a status, so the router can
//! answer `ctx.join`, `ctx.leave` and `ctx.status` with the right code.

use std::sync::Arc;

use cmesh_common::{CmtpError, Status};
use cmesh_state::{Id, StateError};

use crate::bus::BusError;
use crate::readiness::NotReady;

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
    #[error("{0}")]
    Bus(#[from] BusError),
    #[error("{0} is gone")]
    Gone(&'static str),
    /// The catch-up of a join (`ctx.join` with `wait`) failed; its status is the
    /// catch-up's.
    #[error("joining context {context} failed: {source}")]
    JoinFailed {
        context: Id,
        #[source]
        source: Arc<ReplicationError>,
    },
    /// The context is being joined or caught up here: calls wait (`CheckReady`).
    #[error("{0}")]
    NotReady(#[from] NotReady),
}

impl ReplicationError {
    pub fn status(&self) -> Status {
        match self {
            ReplicationError::Refused(e) => e.status,
            ReplicationError::State(e) => e.status(),
            ReplicationError::NoMember(_)
            | ReplicationError::Bus(_)
            | ReplicationError::Gone(_)
            | ReplicationError::NotReady(_) => Status::UNAVAILABLE,
            ReplicationError::JoinFailed { source, .. } => source.status(),
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
