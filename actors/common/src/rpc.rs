//! JSON-RPC 2.0 with Kami's extension (seed 004): an authenticated request carries the
//! login session as its `id`, a `nonce` and a `signature`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cmtp::{CmtpError, Status};
use crate::hash::keccak256_parts;
use crate::keys::{Signature65, SignatureError};
use crate::Address;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Generic server error; the CMTP status is in `error.data.status`.
pub const SERVER_ERROR: i64 = -32000;
/// Kami: the session (`id`) is unknown, expired or already used.
pub const SESSION_ERROR: i64 = -32001;
/// Kami: the nonce is not greater than the last one accepted.
pub const NONCE_ERROR: i64 = -32002;
/// Kami: the signature is malformed or not by the session's address.
pub const SIGNATURE_ERROR: i64 = -32003;

/// A request as sent. `id` is absent for notifications; for Kami-signed requests it is
/// the 32-byte session in 0x-hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpcRequest {
    pub jsonrpc: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// A Kami-signed request as its caller signed it: the request's canonical JSON without
/// its `signature` member, and the caller's personal_sign of those bytes. Whatever the
/// request causes can carry it, so that anyone can check the caller asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestProof {
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
    pub signature: Signature65,
}

impl RequestProof {
    /// Who signed the request.
    pub fn signer(&self) -> Result<Address, SignatureError> {
        self.signature.recover_personal(&self.request)
    }

    /// keccak256 of the signature and the signed bytes: one per signed request.
    pub fn digest(&self) -> [u8; 32] {
        keccak256_parts(&[&self.signature.0, &self.request])
    }

    /// The signed request's `method` and `params` (`null` if it has none), if the signed
    /// bytes are a JSON object with a string `method`.
    pub fn call(&self) -> Option<(String, Value)> {
        let mut request: serde_json::Map<String, Value> = serde_json::from_slice(&self.request).ok()?;
        let method = match request.remove("method")? {
            Value::String(method) => method,
            _ => return None,
        };
        Some((method, request.remove("params").unwrap_or(Value::Null)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpcErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpcResponse {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcErrorObject>,
    pub id: Value,
}

impl RpcResponse {
    pub fn success(id: Value, result: Value) -> Self {
        RpcResponse {
            jsonrpc: "2.0".into(),
            result: Some(result),
            error: None,
            id,
        }
    }

    pub fn failure(id: Value, error: &CmtpError) -> Self {
        RpcResponse {
            jsonrpc: "2.0".into(),
            result: None,
            error: Some(error_object(error)),
            id,
        }
    }
}

/// The JSON-RPC error object for a CMTP error: its own code if it has one, else one
/// derived from the status; the status is always in `data`.
pub fn error_object(error: &CmtpError) -> RpcErrorObject {
    let code = error.rpc_code.unwrap_or(match error.status {
        Status::BAD_REQUEST => INVALID_REQUEST,
        Status::INTERNAL => INTERNAL_ERROR,
        _ => SERVER_ERROR,
    });
    RpcErrorObject {
        code,
        message: error.message.clone(),
        data: Some(serde_json::json!({ "status": error.status.0 })),
    }
}

/// The status a JSON-RPC error code stands for when a node receives one.
pub fn status_of_code(code: i64) -> Status {
    match code {
        PARSE_ERROR | INVALID_REQUEST | INVALID_PARAMS => Status::BAD_REQUEST,
        METHOD_NOT_FOUND => Status::NOT_FOUND,
        SESSION_ERROR | NONCE_ERROR | SIGNATURE_ERROR => Status::UNAUTHORIZED,
        _ => Status::INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kami_fields_round_trip_and_stay_absent_when_unused() {
        let text = r#"{"jsonrpc":"2.0","method":"iam.whoami","id":"0xab","nonce":3,"signature":"0x01"}"#;
        let request: RpcRequest = serde_json::from_str(text).expect("parse");
        assert_eq!(request.nonce, Some(3));
        let plain = RpcRequest {
            nonce: None,
            signature: None,
            ..request
        };
        let json = serde_json::to_string(&plain).expect("json");
        assert!(!json.contains("nonce") && !json.contains("signature"));
    }

    #[test]
    fn error_codes_follow_the_status_unless_set() {
        let denied = CmtpError::forbidden("no");
        assert_eq!(error_object(&denied).code, SERVER_ERROR);
        let nonce = CmtpError::unauthorized("old nonce").with_rpc_code(NONCE_ERROR);
        assert_eq!(error_object(&nonce).code, NONCE_ERROR);
        assert_eq!(error_object(&nonce).data, Some(serde_json::json!({"status": 401})));
        assert_eq!(status_of_code(METHOD_NOT_FOUND), Status::NOT_FOUND);
    }
}
