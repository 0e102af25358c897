//! The CLI's side of the wire: connects to NATS, logs in, keeps the token, and sends FQMN
//! and JSON-RPC requests the same way any other NATS client would.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use cmesh_common::keys::write_private;
use cmesh_common::time::unix_seconds;
use cmesh_common::{Address, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::DEFAULT_NATS_URL;

/// Where to send requests; shared by every client command.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// NATS server URL
    #[arg(long = "nats", env = "CMESH_NATS_URL", default_value = DEFAULT_NATS_URL, global = true)]
    pub nats_url: String,
    /// Send to this node only (its 0x address) instead of any node of the mesh
    #[arg(long, env = "CMESH_NODE", global = true)]
    pub node: Option<Address>,
    /// Seconds to wait for an answer
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout: u64,
}

/// The client's own files: key and token. `$CMESH_HOME`, else `~/.cmesh`.
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("CMESH_HOME") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".cmesh")
}

pub fn key_path() -> PathBuf {
    home().join("key")
}

fn token_path() -> PathBuf {
    home().join("token.json")
}

pub fn load_key() -> anyhow::Result<SigningKey> {
    let path = key_path();
    SigningKey::load(&path).with_context(|| format!("no client key at {}: run `cmesh key new` first", path.display()))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedToken {
    pub token: String,
    pub address: Address,
    pub expires_at: u64,
    pub nats_url: String,
}

pub fn load_token() -> Option<SavedToken> {
    let text = std::fs::read_to_string(token_path()).ok()?;
    let saved: SavedToken = serde_json::from_str(&text).ok()?;
    (saved.expires_at > unix_seconds()).then_some(saved)
}

/// A reply: its CMTP status and decoded body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub struct MeshClient {
    nats: async_nats::Client,
    target: Target,
    token: Option<String>,
}

impl MeshClient {
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let nats = async_nats::ConnectOptions::new()
            .name("cmesh-cli")
            .connection_timeout(Duration::from_secs(5))
            .connect(&target.nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {}", target.nats_url))?;
        Ok(MeshClient {
            nats,
            target: target.clone(),
            token: load_token().map(|t| t.token),
        })
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    fn subject(&self, kind: &str) -> String {
        match &self.target.node {
            Some(node) => format!("cmesh.node.{node}.{kind}"),
            None => format!("cmesh.{kind}"),
        }
    }

    /// Sends one request on the `fqmn` or `rpc` endpoint.
    pub async fn request(&self, kind: &str, payload: Bytes, msgpack: bool) -> anyhow::Result<Answer> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(token) = &self.token {
            headers.insert("Authorization", format!("Bearer {token}").as_str());
        }
        if msgpack {
            headers.insert("Accept", "application/msgpack");
        }
        let subject = self.subject(kind);
        let request = self.nats.request_with_headers(subject.clone(), headers, payload);
        let message = tokio::time::timeout(Duration::from_secs(self.target.timeout), request)
            .await
            .map_err(|_| anyhow!("no answer on {subject} within {} s", self.target.timeout))?
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => anyhow!("no cmesh node answers on {subject}"),
                _ => anyhow!("request on {subject}: {e}"),
            })?;
        let status = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Cmtp-Status"))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(200);
        let body = if message.payload.is_empty() {
            Value::Null
        } else if msgpack {
            rmp_serde::from_slice(&message.payload).context("decoding a MessagePack reply")?
        } else {
            serde_json::from_slice(&message.payload).context("decoding a JSON reply")?
        };
        Ok(Answer { status, body })
    }

    pub async fn fqmn(&self, fqmn: &str, msgpack: bool) -> anyhow::Result<Answer> {
        self.request("fqmn", Bytes::from(fqmn.to_string()), msgpack).await
    }

    /// Calls a JSON-RPC method; the result, or the error's message and status.
    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let request = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let answer = self
            .request("rpc", Bytes::from(serde_json::to_vec(&request)?), false)
            .await?;
        if let Some(error) = answer.body.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("error");
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
            bail!("{} {message} (JSON-RPC {code})", answer.status);
        }
        Ok(answer.body.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Challenge, personal_sign, login: a fresh token for `key`, used by later requests of
    /// this client.
    pub async fn obtain_token(&mut self, key: &SigningKey) -> anyhow::Result<SavedToken> {
        let challenge = self.rpc("iam.challenge", json!({ "address": key.address() })).await?;
        let message = challenge
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("challenge without message"))?;
        let session = challenge
            .get("session")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("challenge without session"))?;
        let signature = key.sign_personal(message.as_bytes()).to_string();
        let login = self
            .rpc("iam.login", json!({ "session": session, "signature": signature }))
            .await?;
        let saved = SavedToken {
            token: login
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("login without token"))?
                .to_string(),
            address: key.address(),
            expires_at: login.get("expires_at").and_then(Value::as_u64).unwrap_or(0),
            nats_url: self.target.nats_url.clone(),
        };
        self.token = Some(saved.token.clone());
        Ok(saved)
    }

    /// Logs in and keeps the token for later commands.
    pub async fn login(&mut self, key: &SigningKey) -> anyhow::Result<SavedToken> {
        let saved = self.obtain_token(key).await?;
        let path = token_path();
        write_private(&path, serde_json::to_string_pretty(&saved)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(saved)
    }
}
