//! The CLI's side of a request: where it goes (`--nats`, `--node`, `--timeout`, global
//! flags of `cmesh`, so they may stand before or after the command), and this client's
//! own files in `$CMESH_HOME` (its key, its token). The wire itself is the testkit's
//! [`Client`], the same one the tests and benches use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cmesh_common::keys::write_private;
use cmesh_common::time::unix_seconds;
use cmesh_common::{Address, SigningKey};
use cmesh_testkit::{auth_headers, Client, Reply, To, MSGPACK};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::DEFAULT_NATS_URL;

/// Where to send requests: global flags of `cmesh`.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// NATS server URL [default: nats://127.0.0.1:4222]
    #[arg(long = "nats", env = "CMESH_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Send requests to this node only (its 0x address) instead of any node of the mesh
    #[arg(long, env = "CMESH_NODE", global = true)]
    pub node: Option<Address>,
    /// Seconds to wait for an answer
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout: u64,
}

impl Target {
    pub fn nats_url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }
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

fn load_token() -> Option<SavedToken> {
    let text = std::fs::read_to_string(token_path()).ok()?;
    let saved: SavedToken = serde_json::from_str(&text).ok()?;
    (saved.expires_at > unix_seconds()).then_some(saved)
}

/// A connection to the mesh with this client's token (if it logged in), sending to the
/// target's node or to any node.
pub struct Session {
    client: Client,
    to: To,
    nats_url: String,
    token: Option<String>,
}

impl Session {
    pub async fn open(target: &Target) -> anyhow::Result<Self> {
        let client = Client::try_connect(target.nats_url(), "cmesh-cli")
            .await?
            .with_timeout(Duration::from_secs(target.timeout));
        Ok(Session {
            client,
            to: To::from(target.node),
            nats_url: target.nats_url().to_string(),
            token: load_token().map(|t| t.token),
        })
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.client.nats
    }

    /// Sends an FQMN; the reply decoded (a MessagePack one too, if asked for).
    pub async fn fqmn(&self, fqmn: &str, msgpack: bool) -> anyhow::Result<Reply> {
        let mut headers = auth_headers(self.token.as_deref());
        if msgpack {
            headers.insert("Accept", MSGPACK);
        }
        let subject = self.to.fqmn_subject();
        Ok(self.client.try_send(&subject, headers, fqmn.to_string()).await?)
    }

    /// Calls a JSON-RPC method; the result, or the error's status and message.
    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        Ok(self
            .client
            .try_call(self.to, method, params, self.token.as_deref())
            .await?)
    }

    /// Logs in with `key` and keeps the token for later commands.
    pub async fn login(&self, key: &SigningKey) -> anyhow::Result<SavedToken> {
        let login = self.client.try_login(key, self.to).await?;
        let saved = SavedToken {
            token: login.token,
            address: key.address(),
            expires_at: login.expires_at,
            nats_url: self.nats_url.clone(),
        };
        let path = token_path();
        write_private(&path, serde_json::to_string_pretty(&saved)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(saved)
    }
}
