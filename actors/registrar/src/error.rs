//! Everything that can go wrong in the registrar, and the CMTP status each maps to.
//!
//! One enum for the whole component keeps the status mapping in one place: rejections
//! the caller can fix are 4xx with the rule spelled out, anything about the disk is 500.

use std::path::PathBuf;

use cmesh_common::{Address, CmtpError, Status};

use super::names::{NameError, TargetError, TldConfigError};

#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    /// 422: the name is not `label.tld` with a served TLD.
    #[error(transparent)]
    Name(#[from] NameError),

    /// 422: the target is empty or too long.
    #[error(transparent)]
    Target(#[from] TargetError),

    /// The TLD list in the configuration is unusable (startup only).
    #[error(transparent)]
    Config(#[from] TldConfigError),

    /// 409: someone (possibly the caller) already holds the name.
    #[error("name `{name}` is already registered to {owner}")]
    Taken { name: String, owner: Address },

    /// 404.
    #[error("name `{name}` is not registered")]
    NotFound { name: String },

    /// 403: only the owner may change a name.
    #[error("only the owner {owner} may {action} `{name}`")]
    NotOwner {
        name: String,
        owner: Address,
        action: &'static str,
    },

    /// The database file could not be opened or created (startup only).
    #[error("cannot open the registrar database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },

    /// The database file was written by an incompatible version (startup only).
    #[error("registrar database has schema version {found}; this node reads version {expected}")]
    Schema { found: u64, expected: u64 },

    /// 500: redb failed. Nothing was acknowledged; if `during` is the commit, the caller
    /// should resolve the name again before retrying.
    #[error("registrar storage failed while {during}: {source}")]
    Storage {
        during: &'static str,
        #[source]
        source: redb::Error,
    },

    /// 500: a stored record does not decode (or is filed under the wrong key).
    #[error("stored record for `{name}` is unreadable: {reason}")]
    Corrupt { name: String, reason: String },

    /// 500: a record could not be encoded (should not happen for valid records).
    #[error("cannot encode the record for `{name}`: {reason}")]
    Encode { name: String, reason: String },
}

impl RegistrarError {
    /// The CMTP status this error replies with.
    pub fn status(&self) -> Status {
        match self {
            RegistrarError::Name(_) | RegistrarError::Target(_) => Status::UNPROCESSABLE,
            RegistrarError::Taken { .. } => Status::CONFLICT,
            RegistrarError::NotFound { .. } => Status::NOT_FOUND,
            RegistrarError::NotOwner { .. } => Status::FORBIDDEN,
            RegistrarError::Config(_)
            | RegistrarError::Open { .. }
            | RegistrarError::Schema { .. }
            | RegistrarError::Storage { .. }
            | RegistrarError::Corrupt { .. }
            | RegistrarError::Encode { .. } => Status::INTERNAL,
        }
    }
}

impl From<RegistrarError> for CmtpError {
    fn from(error: RegistrarError) -> Self {
        CmtpError::new(error.status(), error.to_string())
    }
}

/// Attaches "while doing what" to any redb error.
pub(crate) trait StorageContext<T> {
    fn during(self, during: &'static str) -> Result<T, RegistrarError>;
}

impl<T, E: Into<redb::Error>> StorageContext<T> for Result<T, E> {
    fn during(self, during: &'static str) -> Result<T, RegistrarError> {
        self.map_err(|source| RegistrarError::Storage {
            during,
            source: source.into(),
        })
    }
}
