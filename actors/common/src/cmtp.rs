//! CMTP: the envelope every reply carries. Status codes are HTTP-like, and each error
//! has a message a person can act on.

use serde::{Deserialize, Serialize};

pub const HEADER_VERSION: &str = "Cmtp-Version";
pub const HEADER_STATUS: &str = "Cmtp-Status";
pub const VERSION: &str = "CMTP/0";

/// HTTP-like status of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Status(pub u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const CONFLICT: Status = Status(409);
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    pub const UNPROCESSABLE: Status = Status(422);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const INTERNAL: Status = Status(500);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const UNAVAILABLE: Status = Status(503);

    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// The short reason phrase, used where a protocol wants a status text.
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            409 => "Conflict",
            413 => "Payload Too Large",
            422 => "Unprocessable",
            429 => "Too Many Requests",
            500 => "Internal Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }
}

/// An error that ends a request: its status, a message for the caller and, for JSON-RPC
/// callers, the JSON-RPC error code that goes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{status:?} {message}")]
pub struct CmtpError {
    pub status: Status,
    pub message: String,
    /// JSON-RPC code; `None` lets the status pick one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_code: Option<i64>,
}

impl CmtpError {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        CmtpError {
            status,
            message: message.into(),
            rpc_code: None,
        }
    }

    pub fn with_rpc_code(mut self, code: i64) -> Self {
        self.rpc_code = Some(code);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Status::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Status::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Status::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Status::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Status::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::INTERNAL, message)
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(Status::NOT_IMPLEMENTED, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Status::UNAVAILABLE, message)
    }
}
