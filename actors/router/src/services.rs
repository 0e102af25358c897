//! The protected services behind the router, and the method table that reaches them.
//!
//! Every method is `<service>.<name>` whether it came as JSON-RPC or as an FQMN, so IAM
//! checks one permission table and events name one method.

use actix::Addr;
use cmesh_common::rpc::{INVALID_PARAMS, METHOD_NOT_FOUND};
use cmesh_common::{Address, CmtpError, Status};
use cmesh_events::{EmitApp, EmitContext, EventsActor, Recent};
use cmesh_iam::{Caller, Challenge, Grant, IamActor, Login, Peers, Revoke};
use cmesh_replication::Replicator;
use cmesh_state::{Role, StateActor};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::forward::{RegistrarHandle, RegistrarOp};

/// Addresses of the actors a request may reach, and what the node says about itself.
#[derive(Clone)]
pub struct Services {
    pub node: Address,
    pub mesh: String,
    pub is_registrar: bool,
    pub iam: Addr<IamActor>,
    pub events: Addr<EventsActor>,
    pub registrar: RegistrarHandle,
    pub state: Addr<StateActor>,
    pub replicator: Addr<Replicator>,
    /// For handing requests to other nodes.
    pub client: async_nats::Client,
}

/// Most recent events returned when the caller does not say how many.
const DEFAULT_RECENT: usize = 20;

pub fn params<T: DeserializeOwned>(method: &str, params: Value, usage: &str) -> Result<T, CmtpError> {
    let params = if params.is_null() { json!({}) } else { params };
    serde_json::from_value(params).map_err(|e| {
        CmtpError::bad_request(format!("invalid params for {method}: {e}; expected {usage}"))
            .with_rpc_code(INVALID_PARAMS)
    })
}

/// Turns a failed actor call into a 503 naming the service.
pub(crate) fn mailbox(service: &str) -> impl Fn(actix::MailboxError) -> CmtpError + '_ {
    move |e| CmtpError::unavailable(format!("the {service} service is unavailable: {e}"))
}

pub(crate) fn caller_address(caller: &Caller) -> Result<Address, CmtpError> {
    caller
        .address
        .ok_or_else(|| CmtpError::unauthorized("this method needs a logged-in caller"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterParams {
    name: String,
    target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferParams {
    name: String,
    to: Address,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    owner: Option<Address>,
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

const NOT_YET: &str = "is not served yet: consensus (C, CW) arrives in a later release";

impl Services {
    /// Runs `method` for an admitted `caller`.
    pub async fn call(&self, caller: &Caller, method: &str, params_value: Value) -> Result<Value, CmtpError> {
        match method {
            "iam.challenge" => {
                let request: Challenge = params(method, params_value, "{address, client_nonce?}")?;
                let reply = self.iam.send(request).await.map_err(mailbox("IAM"))??;
                Ok(json!(reply))
            }
            "iam.login" => {
                let request: Login = params(method, params_value, "{session, signature}")?;
                let reply = self.iam.send(request).await.map_err(mailbox("IAM"))??;
                Ok(json!(reply))
            }
            "iam.whoami" => Ok(json!({
                "address": caller.address,
                "attributes": caller.attributes,
                "expires_at": caller.expires_at,
                "node": self.node,
            })),
            "iam.grant" => {
                let request: Grant = params(method, params_value, "{address, attribute}")?;
                let address = request.address;
                let attributes = self.iam.send(request).await.map_err(mailbox("IAM"))??;
                Ok(json!({ "address": address, "attributes": attributes }))
            }
            "iam.revoke" => {
                let request: Revoke = params(method, params_value, "{address, attribute}")?;
                let address = request.address;
                let attributes = self.iam.send(request).await.map_err(mailbox("IAM"))??;
                Ok(json!({ "address": address, "attributes": attributes }))
            }
            "iam.peers" => {
                let peers = self.iam.send(Peers).await.map_err(mailbox("IAM"))?;
                Ok(json!(peers))
            }
            "registrar.register" => {
                let p: RegisterParams = params(method, params_value, "{name, target}")?;
                check_target(&p.target)?;
                let op = RegistrarOp::Register {
                    name: p.name,
                    target: p.target,
                };
                self.registrar.call(caller_address(caller)?, op).await
            }
            "registrar.resolve" => {
                let p: NameParams = params(method, params_value, "{name}")?;
                self.registrar
                    .call(caller_address(caller)?, RegistrarOp::Resolve { name: p.name })
                    .await
            }
            "registrar.transfer" => {
                let p: TransferParams = params(method, params_value, "{name, to}")?;
                self.registrar
                    .call(
                        caller_address(caller)?,
                        RegistrarOp::Transfer { name: p.name, to: p.to },
                    )
                    .await
            }
            "registrar.release" => {
                let p: NameParams = params(method, params_value, "{name}")?;
                self.registrar
                    .call(caller_address(caller)?, RegistrarOp::Release { name: p.name })
                    .await
            }
            "registrar.list" => {
                let p: ListParams = params(method, params_value, "{owner?}")?;
                self.registrar
                    .call(caller_address(caller)?, RegistrarOp::List { owner: p.owner })
                    .await
            }
            "events.publish" => {
                let p: PublishParams = params(method, params_value, "{topic, data}")?;
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
            "events.recent" => {
                let p: RecentParams = params(method, params_value, "{topic, limit?}")?;
                let limit = p.limit.unwrap_or(DEFAULT_RECENT);
                let topic = self.context_topic(caller, p.topic).await?;
                let events = self
                    .events
                    .send(Recent { topic, limit })
                    .await
                    .map_err(mailbox("events"))?;
                Ok(json!(events))
            }
            "router.ping" => Ok(json!({ "pong": true, "node": self.node, "registrar": self.is_registrar })),
            "router.info" => {
                let peers = self.iam.send(Peers).await.map_err(mailbox("IAM"))?;
                Ok(json!({
                    "node": self.node,
                    "mesh": self.mesh,
                    "registrar": self.is_registrar,
                    "version": env!("CARGO_PKG_VERSION"),
                    "peers": peers,
                }))
            }
            m if m.starts_with("app.") || m.starts_with("ctx.") => self.call_state(caller, m, params_value).await,
            m if m.starts_with("consensus.") => Err(CmtpError::not_implemented(format!("`{m}` {NOT_YET}"))),
            m => Err(CmtpError::not_found(format!(
                "unknown method `{m}`; the node serves iam.*, registrar.*, events.*, app.*, ctx.* and router.* \
                 methods (see README)"
            ))
            .with_rpc_code(METHOD_NOT_FOUND)),
        }
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
