//! Errors of setting up IAM (storage, configuration). Request errors are `CmtpError`s.

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("IAM store {path}: {message}")]
    Store { path: String, message: String },
    #[error("invalid permission rule for `{method}`: {message}")]
    Permission { method: String, message: String },
}
