//! A reply of the node's front door, decoded as any client would: the `Cmtp-Status`
//! header, and the body by its `Content-Type` (JSON or MessagePack). The `assert_*`
//! methods are the tests' checks of the CMTP and micro error headers.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::Value;

/// A body that does not decode as its `Content-Type` says.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("a reply that is not JSON: {excerpt}")]
    Json {
        excerpt: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("a reply that says MessagePack but does not decode")]
    MessagePack(#[source] rmp_serde::decode::Error),
}

/// A reply from the front door, decoded.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `Cmtp-Status` (0 when the header is missing).
    pub status: u16,
    pub headers: HeaderMap,
    pub raw: Bytes,
    /// The body decoded by its `Content-Type` (JSON or MessagePack); `Null` when empty.
    pub body: Value,
}

impl Reply {
    pub fn decode(message: async_nats::Message) -> Result<Reply, DecodeError> {
        let headers = message.headers.unwrap_or_default();
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        let status = header("Cmtp-Status").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let is_msgpack = header("Content-Type").is_some_and(|c| c.contains("msgpack"));
        let raw = message.payload;
        let body = if raw.is_empty() {
            Value::Null
        } else if is_msgpack {
            rmp_serde::from_slice(&raw).map_err(DecodeError::MessagePack)?
        } else {
            serde_json::from_slice(&raw).map_err(|source| DecodeError::Json {
                excerpt: String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned(),
                source,
            })?
        };
        Ok(Reply {
            status,
            headers,
            raw,
            body,
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_string())
    }

    /// JSON-RPC `result` (panics with the reply if there is none).
    pub fn result(&self) -> &Value {
        match self.body.get("result") {
            Some(result) => result,
            None => panic!("expected a JSON-RPC result, got status {}: {}", self.status, self.body),
        }
    }

    /// JSON-RPC `error.code`.
    pub fn rpc_code(&self) -> Option<i64> {
        self.body.pointer("/error/code").and_then(Value::as_i64)
    }

    /// JSON-RPC `error.data.status`.
    pub fn rpc_status(&self) -> Option<u64> {
        self.body.pointer("/error/data/status").and_then(Value::as_u64)
    }

    /// The error message of either endpoint (`error.message`).
    pub fn error_message(&self) -> Option<&str> {
        self.body.pointer("/error/message").and_then(Value::as_str)
    }

    /// Asserts the common CMTP headers and, for errors, the micro error headers.
    pub fn assert_cmtp(&self) {
        assert_eq!(
            self.header("Cmtp-Version").as_deref(),
            Some("CMTP/0"),
            "Cmtp-Version in {self:?}"
        );
        assert!(self.status != 0, "Cmtp-Status missing in {self:?}");
        assert!(
            self.header("Content-Type").is_some(),
            "Content-Type missing in {self:?}"
        );
        if self.status >= 400 {
            assert_eq!(
                self.header("Nats-Service-Error-Code"),
                Some(self.status.to_string()),
                "Nats-Service-Error-Code must equal Cmtp-Status in {self:?}"
            );
            let message = self.header("Nats-Service-Error").unwrap_or_default();
            assert!(
                !message.trim().is_empty(),
                "Nats-Service-Error must carry a message in {self:?}"
            );
        } else {
            assert!(
                self.header("Nats-Service-Error").is_none(),
                "success with Nats-Service-Error: {self:?}"
            );
            assert!(
                self.header("Nats-Service-Error-Code").is_none(),
                "success with error code: {self:?}"
            );
        }
    }

    /// Asserts an FQMN error reply: `status`, CMTP headers, `{"error":{status,message}}`.
    #[track_caller]
    pub fn assert_fqmn_error(&self, status: u16) {
        assert_eq!(
            self.status, status,
            "expected FQMN status {status}, got {}: {}",
            self.status, self.body
        );
        self.assert_cmtp();
        assert_eq!(
            self.body.pointer("/error/status").and_then(Value::as_u64),
            Some(u64::from(status)),
            "FQMN error body must carry the status: {}",
            self.body
        );
        let message = self.error_message().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "FQMN error body must carry a message: {}",
            self.body
        );
    }

    /// Asserts a JSON-RPC error reply with `code` and `status` (in `data` and headers).
    #[track_caller]
    pub fn assert_rpc_error(&self, code: i64, status: u16) {
        assert_eq!(
            (self.rpc_code(), self.status),
            (Some(code), status),
            "expected JSON-RPC error {code} with status {status}, got: {}",
            self.body
        );
        assert_eq!(
            self.rpc_status(),
            Some(u64::from(status)),
            "error.data.status in {}",
            self.body
        );
        self.assert_cmtp();
        let message = self.error_message().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "JSON-RPC error must carry a message: {}",
            self.body
        );
    }

    /// Asserts a 200 reply and returns the JSON-RPC result.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {}: {}", self.status, self.body);
        self.assert_cmtp();
        self.result().clone()
    }
}
