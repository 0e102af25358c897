//! Signed requests to other nodes, and only their own signed answers.
//!
//! Why not `Client::request`: it takes the first message on the reply inbox, and anyone
//! who sees the request can answer first. Here every request gets a token on one inbox
//! subscription of this node; an answer completes its request only if it is signed by
//! the node that was asked and names the request's digest. Anything else on the inbox is
//! logged and dropped, and the request goes on waiting for the real answer.
//!
//! Requests and answers between nodes that know each other's keys carry a MAC instead
//! of a signature ([`PeerKeys`]); a receiver that lost the key asks for a signature
//! (`SignAgain`), and the request is sent again, signed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cmesh_common::genesis::MeshId;
use cmesh_common::{Address, SigningKey};
use futures::StreamExt;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::peer_keys::PeerKeys;
use crate::wire::{node_subject, Proven, ReplyBody, RequestBody, Rpc, RpcReply};

/// Why a request got no answer that counts.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no signed answer from {to} within {timeout:?}")]
    TimedOut { to: Address, timeout: Duration },
    #[error("no node listens for {to}")]
    NoResponders { to: Address },
    #[error("cannot send to {to}: {reason}")]
    Send { to: Address, reason: String },
    #[error("cannot sign the request: {0}")]
    Seal(String),
    #[error("{to} is larger than the bus takes: {size} bytes, at most {max}")]
    TooLarge { to: Address, size: usize, max: usize },
}

struct Pending {
    to: Address,
    digest: [u8; 32],
    answer: oneshot::Sender<Result<RpcReply, CallError>>,
}

type PendingMap = Arc<Mutex<HashMap<u64, Pending>>>;

pub struct Requester {
    client: async_nats::Client,
    keys: Arc<PeerKeys>,
    mesh: MeshId,
    inbox: String,
    next: AtomicU64,
    pending: PendingMap,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Requester {
    /// Subscribes this node's reply inbox.
    pub async fn start(client: async_nats::Client, key: SigningKey, mesh: MeshId) -> Result<Requester, CallError> {
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|error| CallError::Send {
                to: key.address(),
                reason: format!("cannot subscribe the reply inbox: {error}"),
            })?;
        let pending: PendingMap = Arc::default();
        let keys = Arc::new(PeerKeys::new(key, mesh));
        let listener = tokio::spawn({
            let (pending, keys) = (pending.clone(), keys.clone());
            async move {
                while let Some(message) = replies.next().await {
                    deliver(&pending, &keys, message);
                }
            }
        });
        Ok(Requester {
            client,
            keys,
            mesh,
            inbox,
            next: AtomicU64::new(1),
            pending,
            listener,
        })
    }

    pub fn key(&self) -> &SigningKey {
        self.keys.own()
    }

    /// The keys this node shares with the peers it heard from (the server uses them too).
    pub fn keys(&self) -> &Arc<PeerKeys> {
        &self.keys
    }

    pub fn mesh(&self) -> MeshId {
        self.mesh
    }

    /// Sends `rpc` to `to` and waits for its signed (or MAC'd) answer.
    pub async fn call(&self, to: Address, rpc: Rpc, timeout: Duration) -> Result<RpcReply, CallError> {
        let request = RequestBody::new(self.mesh, self.keys.own(), to, rpc);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (bytes, digest, with_mac) = request
                .seal_for(&self.keys)
                .map_err(|e| CallError::Seal(e.to_string()))?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.send(to, bytes, digest, remaining).await {
                // It lost the key we share (a restart): sign, once; its answer teaches it.
                Ok(RpcReply::SignAgain) if with_mac => self.keys.forget(&to),
                outcome => return outcome,
            }
        }
    }

    async fn send(
        &self,
        to: Address,
        bytes: Vec<u8>,
        digest: [u8; 32],
        timeout: Duration,
    ) -> Result<RpcReply, CallError> {
        let max = self.client.server_info().max_payload;
        if bytes.len() > max {
            return Err(CallError::TooLarge {
                to,
                size: bytes.len(),
                max,
            });
        }
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.lock().insert(token, Pending { to, digest, answer });
        let sent = self
            .client
            .publish_with_reply(
                node_subject(&self.mesh, &to),
                format!("{}.{token}", self.inbox),
                bytes.into(),
            )
            .await;
        if let Err(error) = sent {
            self.lock().remove(&token);
            return Err(CallError::Send {
                to,
                reason: error.to_string(),
            });
        }
        let outcome = tokio::time::timeout(timeout, answered).await;
        self.lock().remove(&token);
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(CallError::TimedOut { to, timeout }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn deliver(pending: &PendingMap, keys: &PeerKeys, message: async_nats::Message) {
    let Some(token) = message.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok()) else {
        return;
    };
    let lock = || pending.lock().unwrap_or_else(PoisonError::into_inner);
    // The server's own "no responders" notice carries no body to sign. Anyone could send
    // one, but all it can do is end the wait early, which dropping the request would do too.
    if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        if let Some(waiting) = lock().remove(&token) {
            let _ = waiting.answer.send(Err(CallError::NoResponders { to: waiting.to }));
        }
        return;
    }
    // Nothing waits for it (a late answer, or noise): not worth a signature check.
    let Some((asked, digest)) = lock().get(&token).map(|waiting| (waiting.to, waiting.digest)) else {
        return;
    };
    // Checked without the lock, so that a slow signature check holds up no caller.
    match ReplyBody::open_with(&message.payload, keys) {
        Ok((reply, proven)) if reply.from == asked && reply.request == digest => {
            if let Proven::Signed(public) = proven {
                keys.learn(asked, &public);
            }
            if let Some(waiting) = lock().remove(&token) {
                let _ = waiting.answer.send(Ok(reply.reply));
            }
        }
        Ok((reply, _)) => warn!(
            expected = %asked,
            from = %reply.from,
            "ignored a consensus reply not from the node asked, or not for this request"
        ),
        Err(error) => debug!(expected = %asked, %error, "ignored an unsigned consensus reply"),
    }
}
