//! The protected services behind the router, and the dispatch that reaches them.
//!
//! Every request, JSON-RPC or FQMN, arrives here as a [`Method`] of the one method table
//! (`cmesh_common::method`) and its params. [`Services::call`] matches on every method, so
//! a method the table gains and nobody serves does not compile; each arm names the params
//! type it decodes.

use actix::Addr;
use cmesh_common::rpc::INVALID_PARAMS;
use cmesh_common::{Address, CmtpError, Method, Status};
use cmesh_consensus::{Command, Consistency};
use cmesh_events::{EmitApp, EmitContext, EventsActor, EventsError, Flush, Recent, Stats, VerifyAudit};
use cmesh_iam::{Caller, Challenge, IamActor, Login, Peers};
use cmesh_replication::Replicator;
use cmesh_state::{Role, StateActor};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::registry::{consistency, RegistryHandle};

/// Addresses of the actors a request may reach, and what the node says about itself.
#[derive(Clone)]
pub struct Services {
    pub node: Address,
    pub mesh: String,
    pub iam: Addr<IamActor>,
    pub events: Addr<EventsActor>,
    /// Names, admitted nodes and Raft's status, replicated with Raft.
    pub registry: RegistryHandle,
    pub state: Addr<StateActor>,
    pub replicator: Addr<Replicator>,
    /// For handing requests to other nodes.
    pub client: async_nats::Client,
}

/// Most recent events returned when the caller does not say how many.
const DEFAULT_RECENT: usize = 20;

/// Decodes `method`'s params (none is `{}`); 400 with the expected shape otherwise.
pub fn params<T: DeserializeOwned>(method: Method, params: Value) -> Result<T, CmtpError> {
    let params = if params.is_null() { json!({}) } else { params };
    serde_json::from_value(params).map_err(|e| invalid_params(method, e))
}

fn invalid_params(method: Method, error: impl std::fmt::Display) -> CmtpError {
    CmtpError::bad_request(format!(
        "invalid params for {method}: {error}; expected {}",
        method.params()
    ))
    .with_rpc_code(INVALID_PARAMS)
}

/// Turns a failed actor call into a 503 naming the service.
pub(crate) fn mailbox(service: &str) -> impl Fn(actix::MailboxError) -> CmtpError + '_ {
    move |e| CmtpError::unavailable(format!("the {service} service is unavailable: {e}"))
}

/// The audit chain could not be committed or read, or is broken: the node's fault.
fn events_failed(e: EventsError) -> CmtpError {
    CmtpError::internal(format!("the audit chain: {e}"))
}

pub(crate) fn caller_address(caller: &Caller) -> Result<Address, CmtpError> {
    caller
        .address
        .ok_or_else(|| CmtpError::unauthorized("this method needs a logged-in caller"))
}

/// A read of the registry: linearizable unless `consistency` is `local`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveParams {
    name: String,
    #[serde(default)]
    consistency: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConsistencyParams {
    #[serde(default)]
    consistency: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    owner: Option<Address>,
    #[serde(default)]
    consistency: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishParams {
    topic: String,
    #[serde(default)]
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentParams {
    topic: String,
    #[serde(default)]
    limit: Option<usize>,
}

/// `C:<body>` / `CW:<body>`, kept whole for the consensus service.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsensusParams {
    body: String,
}

impl Services {
    /// Runs `method` for an admitted `caller`.
    /// Methods that take no params ignore what they are sent, as they always have.
    pub async fn call(&self, caller: &Caller, method: Method, value: Value) -> Result<Value, CmtpError> {
        match method {
            Method::IamChallenge => {
                let request: Challenge = params(method, value)?;
                Ok(json!(self.iam.send(request).await.map_err(mailbox("IAM"))??))
            }
            Method::IamLogin => {
                let request: Login = params(method, value)?;
                Ok(json!(self.iam.send(request).await.map_err(mailbox("IAM"))??))
            }
            Method::IamWhoami => Ok(json!({
                "address": caller.address,
                "attributes": caller.attributes,
                "expires_at": caller.expires_at,
                "node": self.node,
            })),
            Method::IamPeers => Ok(json!(self.iam.send(Peers).await.map_err(mailbox("IAM"))?)),
            Method::RegistrarRegister
            | Method::RegistrarTransfer
            | Method::RegistrarRelease
            | Method::MeshAdmit
            | Method::MeshRemove
            | Method::IamGrant
            | Method::IamRevoke
            | Method::ConsensusWrite => {
                let command = match Command::of_call(method, &value) {
                    Some(Ok(command)) => command,
                    Some(Err(e)) => return Err(invalid_params(method, e)),
                    None => return Err(CmtpError::internal(format!("{method} makes no registry command"))),
                };
                if let Command::Register { target, .. } = &command {
                    check_target(target)?;
                }
                self.registry.write(caller, command).await
            }
            Method::RegistrarResolve => {
                let p: ResolveParams = params(method, value)?;
                caller_address(caller)?;
                let consistency = consistency(p.consistency.as_deref())?;
                self.registry.resolve(&p.name, consistency).await
            }
            Method::RegistrarList => {
                let p: ListParams = params(method, value)?;
                caller_address(caller)?;
                let consistency = consistency(p.consistency.as_deref())?;
                self.registry.list(p.owner, consistency).await
            }
            Method::MeshNodes => {
                let p: ConsistencyParams = params(method, value)?;
                self.registry.nodes(consistency(p.consistency.as_deref())?).await
            }
            Method::EventsPublish => self.publish(caller, params(method, value)?).await,
            Method::EventsRecent => {
                let p: RecentParams = params(method, value)?;
                let limit = p.limit.unwrap_or(DEFAULT_RECENT);
                let topic = self.context_topic(caller, p.topic).await?;
                let recent = self.events.send(Recent { topic, limit });
                Ok(json!(recent.await.map_err(mailbox("events"))?))
            }
            Method::EventsAudit => {
                let head = self.events.send(Flush).await.map_err(mailbox("events"))?;
                let chain = self.events.send(VerifyAudit).await.map_err(mailbox("events"))?;
                let stats = self.events.send(Stats).await.map_err(mailbox("events"))?;
                Ok(json!({
                    "durable_head": head.map_err(events_failed)?,
                    "chain": chain.map_err(events_failed)?,
                    "events": stats,
                }))
            }
            Method::RouterPing => Ok(json!({ "pong": true, "node": self.node })),
            Method::RouterInfo => {
                let peers = self.iam.send(Peers).await.map_err(mailbox("IAM"))?;
                let writes = self.state.send(cmesh_state::Stats).await.map_err(mailbox("state"))?;
                Ok(json!({
                    "node": self.node,
                    "mesh": self.mesh,
                    "consensus": self.registry.status().await,
                    "version": env!("CARGO_PKG_VERSION"),
                    "peers": peers,
                    "writes": writes,
                }))
            }
            Method::AppDeploy => self.app_deploy(caller, params(method, value)?).await,
            Method::AppList => self.app_list().await,
            Method::CtxCreate => self.ctx_create(caller, params(method, value)?).await,
            Method::CtxList => self.ctx_list(caller).await,
            Method::CtxCall => self.ctx_call(caller, params(method, value)?, true).await,
            Method::CtxView => self.ctx_call(caller, params(method, value)?, false).await,
            Method::CtxGrant => self.ctx_grant(caller, params(method, value)?).await,
            Method::CtxRevoke => self.ctx_revoke(caller, params(method, value)?).await,
            Method::CtxRoot => self.ctx_root(caller, params(method, value)?).await,
            Method::CtxInvite => self.ctx_invite(caller, params(method, value)?).await,
            Method::CtxMembers => self.ctx_members(caller, params(method, value)?).await,
            Method::CtxJoin => self.ctx_join(params(method, value)?).await,
            Method::CtxLeave => self.ctx_leave(params(method, value)?).await,
            Method::CtxStatus => self.ctx_status(params(method, value)?).await,
            Method::ConsensusRead => {
                let p: ConsensusParams = params(method, value)?;
                match p.body.as_str() {
                    "status" => Ok(self.registry.status().await),
                    "nodes" => self.registry.nodes(Consistency::Linearizable).await,
                    other => Err(CmtpError::not_found(format!(
                        "`C:{other}` names nothing: the consensus reads are `C:status` and `C:nodes`"
                    ))),
                }
            }
        }
    }

    /// `events.publish`: on an app topic, or on a context's (`S:<context>:<event>`, writers
    /// of the context only).
    async fn publish(&self, caller: &Caller, p: PublishParams) -> Result<Value, CmtpError> {
        let by = caller_address(caller)?;
        let published = match p.topic.strip_prefix("S:") {
            Some(rest) => {
                let (context, event) = rest.split_once(':').ok_or_else(|| {
                    CmtpError::bad_request(format!(
                        "topic `{}` names no event: a context topic is S:<context>:<event>",
                        p.topic
                    ))
                    .with_rpc_code(INVALID_PARAMS)
                })?;
                let context = self.resolve_context(caller, context, Role::Writer).await?;
                let request = EmitContext {
                    context: context.to_string(),
                    event: event.to_string(),
                    data: p.data,
                    caller: by,
                };
                self.events.send(request).await
            }
            None => {
                let request = EmitApp {
                    topic: p.topic,
                    data: p.data,
                    caller: by,
                };
                self.events.send(request).await
            }
        };
        let envelope = published
            .map_err(mailbox("events"))?
            .map_err(|e| CmtpError::new(Status::UNPROCESSABLE, e.to_string()))?;
        Ok(json!(envelope))
    }
}

/// A name's target must be an FQMN the router can dispatch.
fn check_target(target: &str) -> Result<(), CmtpError> {
    cmesh_registrar::check_target(target).map_err(|e| CmtpError::new(Status::UNPROCESSABLE, e.to_string()))?;
    target
        .parse::<crate::fqmn::Fqmn>()
        .map(|_| ())
        .map_err(|e| CmtpError::new(Status::UNPROCESSABLE, format!("target must be an FQMN: {e}")))
}
