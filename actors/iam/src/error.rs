//! Errors of setting up IAM (configuration, an earlier version's store). Request errors
//! are `CmtpError`s.

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("IAM store {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("IAM store {path}: a corrupt attribute record: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// (getrandom's error is no `std::error::Error` without its `std` feature.)
    #[error("no randomness for the node's boot id: {0}")]
    Entropy(getrandom::Error),
    #[error("invalid permission rule for `{method}`: {message}")]
    Permission { method: String, message: String },
}
