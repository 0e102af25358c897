//! What arrives at the front door and what goes back: the payload kind, its encoding,
//! the caller's bearer token, and a reply with its CMTP status.

use bytes::Bytes;
use cmesh_common::{CmtpError, Status};
use cmesh_events::Emit;
use serde_json::{json, Value};

pub const JSON: &str = "application/json";
pub const MSGPACK: &str = "application/msgpack";

/// How a payload is (or a reply must be) encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MsgPack,
}

impl Encoding {
    /// MessagePack when the header names it (`application/msgpack` or `application/x-msgpack`).
    pub fn from_header(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.to_ascii_lowercase().contains("msgpack") => Encoding::MsgPack,
            _ => Encoding::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON,
            Encoding::MsgPack => MSGPACK,
        }
    }

    /// Encodes a reply body. Encoding a `serde_json::Value` cannot fail in either format.
    pub fn encode(self, value: &Value) -> Bytes {
        let bytes = match self {
            Encoding::Json => serde_json::to_vec(value).unwrap_or_default(),
            Encoding::MsgPack => rmp_serde::to_vec_named(value).unwrap_or_default(),
        };
        Bytes::from(bytes)
    }

    /// Decodes a request body into JSON values, with a message fit for the caller.
    pub fn decode(self, bytes: &[u8]) -> Result<Value, String> {
        match self {
            Encoding::Json => serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}")),
            Encoding::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| format!("invalid MessagePack: {e}")),
        }
    }
}

/// Which front-door endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Payload is an FQMN string.
    Fqmn,
    /// Payload is JSON-RPC 2.0 (single or batch).
    Rpc,
}

/// A request as the gateway hands it to the router.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub endpoint: Endpoint,
    pub payload: Bytes,
    /// Encoding of the payload (`Content-Type`).
    pub encoding: Encoding,
    /// Token from `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// Another node handed this request on (header `Cmesh-Forwarded`): never forward again.
    pub forwarded: bool,
}

/// Header a node sets on a request it hands to another node.
pub const FORWARDED_HEADER: &str = "Cmesh-Forwarded";

/// A reply: its status, the body to encode, and for errors the message for
/// `Nats-Service-Error`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: Status,
    pub body: Value,
    pub error: Option<String>,
    /// Lifecycle events the router produced (dispatched or denied, per request of a
    /// batch); the gateway publishes them with the rest of the request's events.
    pub events: Vec<Emit>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Reply {
            status: Status::OK,
            body,
            error: None,
            events: Vec::new(),
        }
    }

    /// An error reply of the FQMN endpoint: `{"error": {"status", "message"}}`.
    pub fn error(error: &CmtpError) -> Self {
        Reply {
            status: error.status,
            body: json!({ "error": { "status": error.status.0, "message": error.message } }),
            error: Some(error.message.clone()),
            events: Vec::new(),
        }
    }

    pub fn with_events(mut self, events: Vec<Emit>) -> Self {
        self.events = events;
        self
    }
}
