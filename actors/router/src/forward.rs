//! Reaching the registrar from any node.
//!
//! One node per mesh owns the names (until the registrar is replicated with Raft). Every
//! other node forwards registrar calls to it over NATS, signed with its node key so the
//! registrar knows the call comes from a node of the mesh and for which caller; a
//! timestamp window and an id cache stop replays of forwarded calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use cmesh_common::hash::to_hex0x;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, CmtpError, SigningKey, Status};
use cmesh_events::{Emit, EventsActor};
use cmesh_iam::{IamActor, VerifyNodeSignature};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use cmesh_registrar::{self as registrar, NameChange, RegistrarActor};

/// The subject the registrar node listens on for forwarded calls.
pub const REGISTRAR_SUBJECT: &str = "cmesh.registrar";
/// How far a forwarded call's timestamp may be from the registrar's clock.
const FORWARD_WINDOW_MS: u64 = 30_000;
/// How long a node waits for the registrar's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A registrar call, as forwarded between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum RegistrarOp {
    Register { name: String, target: String },
    Resolve { name: String },
    Transfer { name: String, to: Address },
    Release { name: String },
    List { owner: Option<Address> },
}

/// A forwarded call: which node sends it, for which caller, signed by the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forwarded {
    pub node: Address,
    pub caller: Address,
    pub call: RegistrarOp,
    pub ts: u64,
    pub id: String,
    pub signature: String,
}

impl Forwarded {
    fn signing_bytes(&self) -> Vec<u8> {
        let value =
            json!({ "node": self.node, "caller": self.caller, "call": self.call, "ts": self.ts, "id": self.id });
        cmesh_common::jcs::signing_bytes(&value)
    }
}

/// Where this node's registrar calls go.
#[derive(Clone)]
pub enum RegistrarHandle {
    /// This node is the registrar.
    Local {
        registrar: Addr<RegistrarActor>,
        events: Addr<EventsActor>,
    },
    /// Another node is: forward over NATS.
    Remote {
        client: async_nats::Client,
        key: Arc<SigningKey>,
    },
}

fn unavailable(e: impl std::fmt::Display) -> CmtpError {
    CmtpError::unavailable(format!("the registrar is unavailable: {e}"))
}

impl RegistrarHandle {
    /// Runs a registrar call for `caller`, here or on the registrar node.
    pub async fn call(&self, caller: Address, call: RegistrarOp) -> Result<Value, CmtpError> {
        match self {
            RegistrarHandle::Local { registrar, events } => run_local(registrar, events, caller, call).await,
            RegistrarHandle::Remote { client, key } => {
                let mut id = [0u8; 16];
                getrandom::fill(&mut id).map_err(|e| CmtpError::internal(format!("no entropy: {e}")))?;
                let mut forwarded = Forwarded {
                    node: key.address(),
                    caller,
                    call,
                    ts: unix_millis(),
                    id: to_hex0x(&id),
                    signature: String::new(),
                };
                forwarded.signature = key.sign_personal(&forwarded.signing_bytes()).to_string();
                let payload = rmp_serde::to_vec_named(&forwarded).map_err(|e| CmtpError::internal(e.to_string()))?;
                let request = client.request(REGISTRAR_SUBJECT, Bytes::from(payload));
                let reply = match tokio::time::timeout(FORWARD_TIMEOUT, request).await {
                    Err(_) => return Err(unavailable("no answer from the registrar node within 5 s")),
                    Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                        return Err(unavailable("no registrar node is running on this mesh"))
                    }
                    Ok(Err(e)) => return Err(unavailable(e)),
                    Ok(Ok(message)) => message,
                };
                rmp_serde::from_slice::<Result<Value, CmtpError>>(&reply.payload)
                    .map_err(|e| unavailable(format!("malformed answer: {e}")))?
            }
        }
    }
}

async fn run_local(
    registrar: &Addr<RegistrarActor>,
    events: &Addr<EventsActor>,
    caller: Address,
    call: RegistrarOp,
) -> Result<Value, CmtpError> {
    let written = match call {
        RegistrarOp::Resolve { name } => {
            let record = registrar
                .send(registrar::Resolve { name })
                .await
                .map_err(unavailable)??;
            return Ok(json!(record));
        }
        RegistrarOp::List { owner } => {
            let records = registrar.send(registrar::List { owner }).await.map_err(unavailable)??;
            return Ok(json!(records));
        }
        RegistrarOp::Register { name, target } => registrar
            .send(registrar::Register { caller, name, target })
            .await
            .map_err(unavailable)??,
        RegistrarOp::Transfer { name, to } => registrar
            .send(registrar::Transfer { caller, name, to })
            .await
            .map_err(unavailable)??,
        RegistrarOp::Release { name } => registrar
            .send(registrar::Release { caller, name })
            .await
            .map_err(unavailable)??,
    };
    let (record, change) = written;
    emit_change(events, &change);
    Ok(json!(record))
}

fn emit_change(events: &Addr<EventsActor>, change: &NameChange) {
    if change.is_noop() {
        return;
    }
    let kind = serde_json::to_value(change.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    events.do_send(Emit::registrar(kind, &change.name, json!(change)));
}

/// The registrar node's side: checks forwarded calls and runs them.
#[derive(Clone)]
pub struct ForwardedCalls {
    registrar: Addr<RegistrarActor>,
    events: Addr<EventsActor>,
    iam: Addr<IamActor>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
}

impl ForwardedCalls {
    pub fn new(registrar: Addr<RegistrarActor>, events: Addr<EventsActor>, iam: Addr<IamActor>) -> Self {
        ForwardedCalls {
            registrar,
            events,
            iam,
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Subscribes to [`REGISTRAR_SUBJECT`] and returns the loop that answers every
    /// forwarded call there, each in a task of its own; the caller spawns it.
    pub async fn listen(
        self,
        client: async_nats::Client,
    ) -> Result<impl std::future::Future<Output = ()>, async_nats::SubscribeError> {
        let mut subscriber = client.subscribe(REGISTRAR_SUBJECT).await?;
        Ok(async move {
            while let Some(message) = subscriber.next().await {
                let Some(reply) = message.reply.clone() else { continue };
                let calls = self.clone();
                let client = client.clone();
                actix::spawn(async move {
                    let answer = calls.serve(&message.payload).await;
                    if let Err(e) = client.publish(reply, answer).await {
                        tracing::warn!(error = %e, "could not answer a forwarded registrar call");
                    }
                });
            }
        })
    }

    /// Answers one forwarded call (MessagePack in, MessagePack out).
    pub async fn serve(&self, payload: &[u8]) -> Bytes {
        let result = self.check_and_run(payload).await;
        Bytes::from(rmp_serde::to_vec_named(&result).unwrap_or_default())
    }

    async fn check_and_run(&self, payload: &[u8]) -> Result<Value, CmtpError> {
        let forwarded: Forwarded = rmp_serde::from_slice(payload)
            .map_err(|e| CmtpError::bad_request(format!("malformed forwarded call: {e}")))?;
        let now = unix_millis();
        if forwarded.ts.abs_diff(now) > FORWARD_WINDOW_MS {
            return Err(CmtpError::new(
                Status::UNAUTHORIZED,
                "forwarded call is outside the 30 s window (clock skew or replay)",
            ));
        }
        let signer = self
            .iam
            .send(VerifyNodeSignature {
                message: forwarded.signing_bytes(),
                signature: forwarded.signature.clone(),
            })
            .await
            .map_err(unavailable)??;
        if signer != forwarded.node {
            return Err(CmtpError::unauthorized(
                "forwarded call is not signed by the node it names",
            ));
        }
        {
            let mut seen = self
                .seen
                .lock()
                .map_err(|_| CmtpError::internal("replay cache poisoned"))?;
            seen.retain(|_, ts| now.saturating_sub(*ts) <= 2 * FORWARD_WINDOW_MS);
            if seen.insert(forwarded.id.clone(), forwarded.ts).is_some() {
                return Err(CmtpError::unauthorized("forwarded call replayed"));
            }
        }
        run_local(&self.registrar, &self.events, forwarded.caller, forwarded.call).await
    }
}
