//! A NATS client of the node's front door: FQMN and JSON-RPC requests, login, Kami-signed
//! requests, micro discovery. The `cmesh` CLI and the benches use the `try_*` methods,
//! which answer errors; the tests use the others, which fail the test with the reply in
//! the message (and check what every reply must carry, such as the echoed JSON-RPC id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use cmesh_common::{Address, SigningKey};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::reply::{DecodeError, Reply};
use crate::{error_chain, within};

/// Longest wait for one request's reply, unless [`Client::with_timeout`] says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub const JSON: &str = "application/json";
pub const MSGPACK: &str = "application/msgpack";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("no answer on {subject} within {limit:?}")]
    Timeout { subject: String, limit: Duration },
    #[error("no cmesh node answers on {subject}")]
    NoResponders { subject: String },
    #[error("request on {subject}")]
    Request {
        subject: String,
        #[source]
        source: async_nats::RequestError,
    },
    #[error("the reply on {subject}")]
    Decode {
        subject: String,
        #[source]
        source: DecodeError,
    },
    /// A JSON-RPC error answer.
    #[error("{status} {message} (JSON-RPC {code})")]
    Rpc { status: u16, code: i64, message: String },
    #[error("{method} answered without {field}: {answer}")]
    Missing {
        method: &'static str,
        field: &'static str,
        answer: Value,
    },
}

/// Where a request goes: the shared subjects (any node of the queue group) or one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    Shared,
    Node(Address),
}

impl From<&crate::Node> for To {
    fn from(node: &crate::Node) -> To {
        To::Node(node.address())
    }
}

impl From<&mut crate::Node> for To {
    fn from(node: &mut crate::Node) -> To {
        To::Node(node.address())
    }
}

impl From<Address> for To {
    fn from(address: Address) -> To {
        To::Node(address)
    }
}

impl From<Option<Address>> for To {
    fn from(node: Option<Address>) -> To {
        node.map_or(To::Shared, To::Node)
    }
}

impl To {
    pub fn fqmn_subject(self) -> String {
        match self {
            To::Shared => "cmesh.fqmn".to_string(),
            To::Node(a) => format!("cmesh.node.{a}.fqmn"),
        }
    }

    pub fn rpc_subject(self) -> String {
        match self {
            To::Shared => "cmesh.rpc".to_string(),
            To::Node(a) => format!("cmesh.node.{a}.rpc"),
        }
    }
}

/// A session from `iam.challenge`, for login or Kami-signed requests.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub session: String,
    pub message: String,
    pub expires_at: u64,
}

/// What a login gives.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub expires_at: u64,
}

pub fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    headers
}

/// `Authorization: Bearer <token>` if there is a token; no headers otherwise.
pub fn auth_headers(token: Option<&str>) -> HeaderMap {
    token.map(bearer).unwrap_or_default()
}

/// A NATS client speaking the node's protocols.
pub struct Client {
    pub nats: async_nats::Client,
    next_id: AtomicU64,
    timeout: Duration,
}

impl Client {
    /// Connects as `name` (shown by `nats server report connections`).
    pub async fn try_connect(url: &str, name: &str) -> Result<Client, ClientError> {
        let nats = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            // The request's own timeout (`with_timeout`) decides.
            .request_timeout(None)
            .connect(url)
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_string(),
                source,
            })?;
        Ok(Client {
            nats,
            next_id: AtomicU64::new(1),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Connects the test client (fails the test if NATS is not there).
    pub async fn connect(url: &str) -> Client {
        within(
            "connecting the test client to NATS",
            REQUEST_TIMEOUT,
            Client::try_connect(url, "cmesh-test"),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }

    /// How long a request waits for its reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A JSON-RPC request object with a fresh numeric id.
    fn rpc_body(&self, method: &str, params: Value) -> (u64, Value) {
        let id = self.next_id();
        (
            id,
            json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}),
        )
    }

    // -------------------------------------------------------------------- answering errors

    /// One request/reply.
    pub async fn try_request(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<async_nats::Message, ClientError> {
        let request = self
            .nats
            .request_with_headers(subject.to_string(), headers, payload.into());
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Err(ClientError::NoResponders {
                subject: subject.to_string(),
            }),
            Ok(Err(source)) => Err(ClientError::Request {
                subject: subject.to_string(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout {
                subject: subject.to_string(),
                limit: self.timeout,
            }),
        }
    }

    /// One request/reply, decoded.
    pub async fn try_send(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<Reply, ClientError> {
        let message = self.try_request(subject, headers, payload).await?;
        Reply::decode(message).map_err(|source| ClientError::Decode {
            subject: subject.to_string(),
            source,
        })
    }

    /// A JSON-RPC call: its result, or its error answer as [`ClientError::Rpc`].
    pub async fn try_call(
        &self,
        to: impl Into<To>,
        method: &str,
        params: Value,
        token: Option<&str>,
    ) -> Result<Value, ClientError> {
        let (_, body) = self.rpc_body(method, params);
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        let reply = self
            .try_send(&to.into().rpc_subject(), auth_headers(token), payload)
            .await?;
        if let Some(error) = reply.body.get("error") {
            return Err(ClientError::Rpc {
                status: reply.status,
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_string(),
            });
        }
        Ok(reply.body.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Challenge, personal_sign, login on `to`: a fresh token for `key`.
    pub async fn try_login(&self, key: &SigningKey, to: impl Into<To>) -> Result<Login, ClientError> {
        let to = to.into();
        let text = |answer: &Value, method, field| {
            answer[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ClientError::Missing {
                    method,
                    field,
                    answer: answer.clone(),
                })
        };
        let challenge = self
            .try_call(to, "iam.challenge", json!({ "address": key.address() }), None)
            .await?;
        let session = text(&challenge, "iam.challenge", "session")?;
        let message = text(&challenge, "iam.challenge", "message")?;
        let signature = key.sign_personal(message.as_bytes()).to_string();
        let login = self
            .try_call(
                to,
                "iam.login",
                json!({ "session": session, "signature": signature }),
                None,
            )
            .await?;
        Ok(Login {
            token: text(&login, "iam.login", "token")?,
            expires_at: login["expires_at"].as_u64().unwrap_or(0),
        })
    }

    // -------------------------------------------------------------------- failing the test

    /// One request/reply; fails the test if there is no reply in time.
    pub async fn request(&self, subject: &str, headers: HeaderMap, payload: impl Into<Bytes>) -> Reply {
        self.try_send(subject, headers, payload)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }

    /// Sends an FQMN (text payload), optionally with a bearer token.
    pub async fn fqmn(&self, to: impl Into<To>, fqmn: &str, token: Option<&str>) -> Reply {
        let to = to.into();
        self.request(&to.fqmn_subject(), auth_headers(token), fqmn.to_string())
            .await
    }

    /// Sends an FQMN and returns the result body of a 200 reply.
    pub async fn fqmn_ok(&self, to: impl Into<To>, fqmn: &str, token: Option<&str>) -> Value {
        let reply = self.fqmn(to, fqmn, token).await;
        assert_eq!(
            reply.status, 200,
            "`{fqmn}` failed with {}: {}",
            reply.status, reply.body
        );
        reply.assert_cmtp();
        reply.body
    }

    /// Sends any JSON body on the RPC endpoint.
    pub async fn rpc_value(&self, to: impl Into<To>, body: &Value, token: Option<&str>) -> Reply {
        let to = to.into();
        let payload = serde_json::to_vec(body).expect("encode JSON");
        self.request(&to.rpc_subject(), auth_headers(token), payload).await
    }

    /// One JSON-RPC request with a fresh numeric id; checks the reply echoes it.
    pub async fn rpc(&self, to: impl Into<To>, method: &str, params: Value, token: Option<&str>) -> Reply {
        let (id, body) = self.rpc_body(method, params);
        let reply = self.rpc_value(to, &body, token).await;
        if reply.status != 0 && reply.status != 413 && reply.body.is_object() {
            assert_eq!(
                reply.body.get("id"),
                Some(&json!(id)),
                "response id must echo the request id: {}",
                reply.body
            );
            assert_eq!(
                reply.body.get("jsonrpc"),
                Some(&json!("2.0")),
                "jsonrpc member: {}",
                reply.body
            );
        }
        reply
    }

    /// A JSON-RPC call that must succeed; returns its result.
    pub async fn call(&self, to: impl Into<To>, method: &str, params: Value, token: Option<&str>) -> Value {
        let reply = self.rpc(to, method, params.clone(), token).await;
        if reply.status != 200 || reply.body.get("result").is_none() {
            panic!("{method} {params} failed with status {}: {}", reply.status, reply.body);
        }
        reply.assert_cmtp();
        reply.body["result"].clone()
    }

    /// `iam.challenge` for `address`.
    pub async fn challenge(&self, to: impl Into<To>, address: Address) -> Challenge {
        let result = self
            .call(to, "iam.challenge", json!({ "address": address }), None)
            .await;
        Challenge {
            session: result["session"].as_str().expect("challenge.session").to_string(),
            message: result["message"].as_str().expect("challenge.message").to_string(),
            expires_at: result["expires_at"].as_u64().expect("challenge.expires_at"),
        }
    }

    /// `iam.login` answering `challenge` with `key`'s signature; the raw reply.
    pub async fn login_with(&self, to: impl Into<To>, key: &SigningKey, challenge: &Challenge) -> Reply {
        let signature = key.sign_personal(challenge.message.as_bytes()).to_string();
        self.rpc(
            to,
            "iam.login",
            json!({"session": challenge.session, "signature": signature}),
            None,
        )
        .await
    }

    /// Challenge + login on one node; returns the whole login result.
    pub async fn login_result(&self, key: &SigningKey, to: impl Into<To>) -> Value {
        let to = to.into();
        let challenge = self.challenge(to, key.address()).await;
        let reply = self.login_with(to, key, &challenge).await;
        let result = reply.ok();
        assert!(result["token"].is_string(), "login result without token: {result}");
        result
    }

    /// Challenge + login on one node; returns the token.
    pub async fn login(&self, key: &SigningKey, to: impl Into<To>) -> String {
        self.login_result(key, to).await["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// A Kami-signed JSON-RPC request object (session as `id`), signed by `key`.
    pub fn signed_body(key: &SigningKey, session: &str, nonce: u64, method: &str, params: Value) -> Value {
        let mut body = json!({
            "jsonrpc": "2.0",
            "method": method,
            "params": params,
            "id": session,
            "nonce": nonce,
        });
        let signature = key.sign_personal(&cmesh_common::jcs::signing_bytes(&body)).to_string();
        body["signature"] = json!(signature);
        body
    }

    /// Sends a Kami-signed request.
    pub async fn signed(
        &self,
        to: impl Into<To>,
        key: &SigningKey,
        session: &str,
        nonce: u64,
        method: &str,
        params: Value,
    ) -> Reply {
        let body = Self::signed_body(key, session, nonce, method, params);
        self.rpc_value(to, &body, None).await
    }

    /// Publishes a request with `reply` inbox and gathers `count` replies (discovery).
    pub async fn gather(&self, subject: &str, count: usize) -> Vec<async_nats::Message> {
        let inbox = self.nats.new_inbox();
        let mut sub = self.nats.subscribe(inbox.clone()).await.expect("subscribe inbox");
        self.nats
            .publish_with_reply(subject.to_string(), inbox, Bytes::new())
            .await
            .expect("publish");
        let mut out = Vec::new();
        while out.len() < count {
            match tokio::time::timeout(self.timeout, sub.next()).await {
                Ok(Some(message)) => out.push(message),
                Ok(None) => panic!("inbox subscription closed while gathering {subject}"),
                Err(_) => panic!(
                    "only {} of {count} replies on {subject} within {:?}",
                    out.len(),
                    self.timeout
                ),
            }
        }
        out
    }

    /// Subscribes and makes sure the server has the subscription before returning.
    pub async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let sub = self.nats.subscribe(subject.to_string()).await.expect("subscribe");
        self.sync().await;
        sub
    }

    /// A round trip through the server on this connection: once it returns, the server
    /// has processed everything this client sent before (subscriptions included).
    /// (`flush` only writes to the socket; it does not wait for the server.)
    pub async fn sync(&self) {
        let inbox = self.nats.new_inbox();
        let mut probe = self.nats.subscribe(inbox.clone()).await.expect("subscribe probe");
        self.nats.publish(inbox, Bytes::new()).await.expect("publish probe");
        next_message(&mut probe, "the sync probe to come back").await;
    }

    /// `P:ping` on a node must answer 200 (the node is alive and serving).
    pub async fn assert_alive(&self, to: impl Into<To>) {
        let to = to.into();
        let reply = self.fqmn(to, "P:ping", None).await;
        assert_eq!(reply.status, 200, "{to:?} does not answer P:ping: {}", reply.body);
        assert_eq!(reply.body["pong"], json!(true), "P:ping body: {}", reply.body);
    }
}

/// Next message of a subscription within the request timeout.
pub async fn next_message(sub: &mut async_nats::Subscriber, what: &str) -> async_nats::Message {
    match tokio::time::timeout(REQUEST_TIMEOUT, sub.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("subscription closed while waiting for {what}"),
        Err(_) => panic!("timed out after {REQUEST_TIMEOUT:?} waiting for {what}"),
    }
}
