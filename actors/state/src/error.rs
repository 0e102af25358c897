//! What can go wrong in the state service. Every error says whose fault it is through
//! its status: 4xx for the caller (or the app it called), 5xx for the node.

use cmesh_common::{CmtpError, Status};

use crate::tx::TxError;
use cmesh_runtime::{CallError, DeployError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("deploy refused: {0}")]
    Deploy(#[from] DeployError),
    #[error("{0}")]
    Call(#[from] CallError),
    #[error("state store: {0}")]
    Store(#[from] redb::Error),
    #[error("state store: {0}")]
    Merkle(#[from] crate::merkle::MerkleError),
    #[error("{0}")]
    Tx(#[from] TxError),
    #[error("state store record: {0}")]
    Record(String),
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the state service is unavailable: {0}")]
    Unavailable(String),
}

cmesh_common::redb_errors_into!(StateError, StateError::Store);

impl StateError {
    pub fn status(&self) -> Status {
        match self {
            StateError::BadRequest(_) => Status::BAD_REQUEST,
            StateError::Forbidden(_) => Status::FORBIDDEN,
            StateError::NotFound(_) => Status::NOT_FOUND,
            StateError::Conflict(_) => Status::CONFLICT,
            StateError::Unprocessable(_) => Status::UNPROCESSABLE,
            StateError::Deploy(e) => e.status(),
            StateError::Call(e) => e.status(),
            StateError::Unavailable(_) => Status::UNAVAILABLE,
            StateError::Store(_)
            | StateError::Merkle(_)
            | StateError::Tx(_)
            | StateError::Record(_)
            | StateError::Io(_) => Status::INTERNAL,
        }
    }
}

impl From<StateError> for CmtpError {
    fn from(err: StateError) -> Self {
        let invalid_params = matches!(err, StateError::BadRequest(_));
        let error = CmtpError::new(err.status(), err.to_string());
        if invalid_params {
            error.with_rpc_code(cmesh_common::rpc::INVALID_PARAMS)
        } else {
            error
        }
    }
}
