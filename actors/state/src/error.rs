//! What can go wrong in the state service. Every error says whose fault it is through
//! its status: 4xx for the caller (or the app it called), 5xx for the node.

use std::sync::Arc;

use actix::MailboxError;
use cmesh_common::keys::KeyError;
use cmesh_common::{CmtpError, Status};
use futures::channel::oneshot;

use crate::ids::Id;
use crate::tx::TxError;
use cmesh_runtime::{CallError, DeployError, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    BadRequest(String),
    #[error("`{requirement}` is not a semver requirement: {source}")]
    NotARequirement { requirement: String, source: semver::Error },
    #[error("version `{version}` is not semver (e.g. 1.2.3): {source}")]
    NotAVersion { version: String, source: semver::Error },
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
    /// A stored record (`what`) that does not decode.
    #[error("state store record: {what}: {source}")]
    Decode {
        what: &'static str,
        source: rmp_serde::decode::Error,
    },
    /// A record (`what`) that does not encode.
    #[error("state store record: {what}: {source}")]
    Encode {
        what: &'static str,
        source: rmp_serde::encode::Error,
    },
    #[error("state store record: transaction {id}: {source}")]
    StoredTransaction { id: Id, source: TxError },
    #[error("state store record: context {context} has version {version}: {source}")]
    StoredVersion {
        context: Id,
        version: String,
        source: semver::Error,
    },
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the state service is unavailable: WASM runtime: {0}")]
    RuntimeStart(#[source] RuntimeError),
    #[error("the state service is unavailable: cannot start the transaction signer: {0}")]
    SignerStart(#[source] KeyError),
    #[error("the state service is unavailable: the transaction signer has stopped")]
    SignerStopped,
    #[error("the state service is unavailable: the signer lost the signature of transaction {0}")]
    SignatureLost(Id),
    /// (Kept, but not as `source()`: without its `std` feature, which nothing else here
    /// needs, `getrandom::Error` is not a `std::error::Error`.)
    #[error("the state service is unavailable: no randomness: {0}")]
    NoRandomness(getrandom::Error),
    #[error("the state service is unavailable: too many writes are waiting; try again")]
    QueueFull,
    #[error("the state service is unavailable: the state executor has stopped")]
    ExecutorStopped,
    #[error("the state service is unavailable: the state executor stopped before answering")]
    NoAnswer(#[source] oneshot::Canceled),
    #[error("the state service is unavailable: state view pool: {0}")]
    ViewPool(#[source] MailboxError),
    #[error("the state service is unavailable: a batch without fsync: {0}")]
    NoFsync(#[source] redb::SetDurabilityError),
    /// The batch a write was in failed: nothing of it was kept. Every job of the batch
    /// shares its cause.
    #[error("the state service is unavailable: the write was not committed: {0}")]
    NotCommitted(#[source] Arc<StateError>),
}

cmesh_common::redb_errors_into!(StateError, StateError::Store);

impl StateError {
    pub fn status(&self) -> Status {
        match self {
            StateError::BadRequest(_) | StateError::NotARequirement { .. } | StateError::NotAVersion { .. } => {
                Status::BAD_REQUEST
            }
            StateError::Forbidden(_) => Status::FORBIDDEN,
            StateError::NotFound(_) => Status::NOT_FOUND,
            StateError::Conflict(_) => Status::CONFLICT,
            StateError::Unprocessable(_) => Status::UNPROCESSABLE,
            StateError::Deploy(e) => e.status(),
            StateError::Call(e) => e.status(),
            StateError::Store(_)
            | StateError::Merkle(_)
            | StateError::Tx(_)
            | StateError::Record(_)
            | StateError::Decode { .. }
            | StateError::Encode { .. }
            | StateError::StoredTransaction { .. }
            | StateError::StoredVersion { .. }
            | StateError::Io(_) => Status::INTERNAL,
            StateError::RuntimeStart(_)
            | StateError::SignerStart(_)
            | StateError::SignerStopped
            | StateError::SignatureLost(_)
            | StateError::NoRandomness(_)
            | StateError::QueueFull
            | StateError::ExecutorStopped
            | StateError::NoAnswer(_)
            | StateError::ViewPool(_)
            | StateError::NoFsync(_)
            | StateError::NotCommitted(_) => Status::UNAVAILABLE,
        }
    }
}

impl From<StateError> for CmtpError {
    fn from(err: StateError) -> Self {
        let invalid_params = matches!(
            err,
            StateError::BadRequest(_) | StateError::NotARequirement { .. } | StateError::NotAVersion { .. }
        );
        let error = CmtpError::new(err.status(), err.to_string());
        if invalid_params {
            error.with_rpc_code(cmesh_common::rpc::INVALID_PARAMS)
        } else {
            error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_failed_with_its_batch_is_503_and_keeps_the_cause() {
        let cause = Arc::new(StateError::SignatureLost(Id::ZERO));
        let err = StateError::NotCommitted(cause.clone());
        assert_eq!(err.status(), Status::UNAVAILABLE);
        assert_eq!(
            err.to_string(),
            format!("the state service is unavailable: the write was not committed: {cause}")
        );
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<Arc<StateError>>());
        assert!(
            matches!(source.map(|s| &**s), Some(StateError::SignatureLost(_))),
            "{source:?}"
        );
    }

    #[test]
    fn every_failure_of_the_service_itself_is_503() {
        for err in [
            StateError::SignerStopped,
            StateError::SignatureLost(Id::ZERO),
            StateError::QueueFull,
            StateError::ExecutorStopped,
            StateError::NoAnswer(oneshot::Canceled),
            StateError::ViewPool(MailboxError::Closed),
            StateError::NoFsync(redb::SetDurabilityError::PersistentSavepointModified),
            StateError::RuntimeStart(RuntimeError::Config("no pages".into())),
        ] {
            assert_eq!(err.status(), Status::UNAVAILABLE, "{err}");
            assert!(
                err.to_string().starts_with("the state service is unavailable: "),
                "{err}"
            );
        }
    }

    #[test]
    fn a_version_that_is_not_semver_is_the_callers_error() {
        let Err(source) = semver::Version::parse("one") else {
            panic!("`one` parsed as a version");
        };
        let err = StateError::NotAVersion {
            version: "one".into(),
            source,
        };
        assert_eq!(err.status(), Status::BAD_REQUEST);
        assert!(std::error::Error::source(&err).is_some_and(|s| s.is::<semver::Error>()));
        let cmtp = CmtpError::from(err);
        assert_eq!(cmtp.rpc_code, Some(cmesh_common::rpc::INVALID_PARAMS));
        assert!(
            cmtp.message.starts_with("version `one` is not semver (e.g. 1.2.3)"),
            "{}",
            cmtp.message
        );
    }
}
