//! The `app.*` and `ctx.*` methods: JSON params in, typed messages to the state actor
//! out. `S:`, `SW:`, `A:` and `AW:` FQMNs arrive here as `ctx.view` / `ctx.call`.

use base64::Engine;
use cmesh_common::{Address, CmtpError};
use cmesh_iam::Caller;
use cmesh_replication::{ContextStatus, JoinContext, LeaveContext};
use cmesh_state::messages::{
    CallContext, ContextMembers, ContextRoot, CreateContext, Deploy, Invite, ListApps, ListContexts, Requester,
    ResolveContext, SetRole,
};
use cmesh_state::tx::CallerProof;
use cmesh_state::{Id, Role};
use serde::Deserialize;
use serde_json::Value;

use crate::services::{caller_address, mailbox, params, Services};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployParams {
    name: String,
    version: String,
    /// The module, base64.
    wasm: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    app: String,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams {
    context: String,
    method: String,
    #[serde(default)]
    args: Value,
    /// A semver requirement the context's app version must meet.
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantParams {
    context: String,
    address: Address,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeParams {
    context: String,
    address: Address,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteParams {
    context: String,
    /// The node's address.
    member: Address,
    #[serde(default = "one_seat")]
    seats: u32,
}

fn one_seat() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextParams {
    context: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullContextParams {
    /// The context's full id (0x + 64 hex digits).
    context: Id,
}

/// The caller as the state service sees it: address, and the signed request if any.
fn requester(caller: &Caller) -> Result<Requester, CmtpError> {
    Ok(Requester {
        address: caller_address(caller)?,
        proof: caller.signed.as_ref().map(|signed| CallerProof {
            request: signed.request.clone(),
            signature: signed.signature,
        }),
    })
}

fn to_json<T: serde::Serialize>(value: T) -> Result<Value, CmtpError> {
    serde_json::to_value(value).map_err(|e| CmtpError::internal(format!("encoding the reply: {e}")))
}

impl Services {
    /// Runs an `app.*` or `ctx.*` method.
    pub(crate) async fn call_state(
        &self,
        caller: &Caller,
        method: &str,
        params_value: Value,
    ) -> Result<Value, CmtpError> {
        let state = &self.state;
        let unavailable = mailbox("state");
        match method {
            "app.deploy" => {
                let p: DeployParams = params(method, params_value, "{name, version, wasm: base64}")?;
                let wasm = base64::engine::general_purpose::STANDARD
                    .decode(p.wasm.as_bytes())
                    .map_err(|e| CmtpError::bad_request(format!("`wasm` is not base64: {e}")))?;
                let msg = Deploy {
                    by: caller_address(caller)?,
                    name: p.name,
                    version: p.version,
                    wasm,
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "app.list" => {
                let _: Value = params(method, params_value, "no params")?;
                to_json(state.send(ListApps).await.map_err(unavailable)??)
            }
            "ctx.create" => {
                let p: CreateParams = params(method, params_value, "{app, version?}")?;
                let msg = CreateContext {
                    by: requester(caller)?,
                    app: p.app,
                    version: p.version,
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.list" => {
                let _: Value = params(method, params_value, "no params")?;
                let msg = ListContexts {
                    by: caller_address(caller)?,
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.call" | "ctx.view" => {
                let p: CallParams = params(method, params_value, "{context, method, args?, version?}")?;
                let args = serde_json::to_vec(&p.args).map_err(|e| CmtpError::bad_request(e.to_string()))?;
                let msg = CallContext {
                    by: requester(caller)?,
                    context: p.context,
                    method: p.method,
                    args,
                    version_req: p.version,
                    write: method == "ctx.call",
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.grant" => {
                let p: GrantParams = params(method, params_value, "{context, address, role: reader|writer|admin}")?;
                let msg = SetRole {
                    by: requester(caller)?,
                    context: p.context,
                    user: p.address,
                    role: Some(p.role),
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.revoke" => {
                let p: RevokeParams = params(method, params_value, "{context, address}")?;
                let msg = SetRole {
                    by: requester(caller)?,
                    context: p.context,
                    user: p.address,
                    role: None,
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.root" => {
                let p: ContextParams = params(method, params_value, "{context}")?;
                let msg = ContextRoot {
                    by: caller_address(caller)?,
                    context: p.context,
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.invite" => {
                let p: InviteParams = params(method, params_value, "{context, member: node address, seats?}")?;
                let msg = Invite {
                    by: requester(caller)?,
                    context: p.context,
                    member: p.member,
                    seats: p.seats,
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.members" => {
                let p: ContextParams = params(method, params_value, "{context}")?;
                let msg = ContextMembers {
                    by: caller_address(caller)?,
                    context: p.context,
                };
                to_json(state.send(msg).await.map_err(unavailable)??)
            }
            "ctx.join" | "ctx.leave" | "ctx.status" => {
                let p: FullContextParams = params(method, params_value, "{context: full id}")?;
                let replicator = &self.replicator;
                let unavailable = mailbox("replicator");
                let context = p.context;
                match method {
                    "ctx.join" => to_json(
                        replicator
                            .send(JoinContext { context, wait: false })
                            .await
                            .map_err(unavailable)??,
                    ),
                    "ctx.leave" => to_json(replicator.send(LeaveContext { context }).await.map_err(unavailable)??),
                    _ => to_json(
                        replicator
                            .send(ContextStatus { context })
                            .await
                            .map_err(unavailable)??,
                    ),
                }
            }
            m => Err(CmtpError::not_found(format!(
                "unknown method `{m}`; apps: app.deploy, app.list; contexts: ctx.create, ctx.list, ctx.call, \
                 ctx.view, ctx.grant, ctx.revoke, ctx.root, ctx.invite, ctx.members, ctx.join, ctx.leave, ctx.status"
            ))
            .with_rpc_code(cmesh_common::rpc::METHOD_NOT_FOUND)),
        }
    }

    /// `S:<context>[:<event>]` topics name a context by id or prefix: resolves it to the
    /// full id (the caller must be able to read the context).
    pub(crate) async fn context_topic(&self, caller: &Caller, topic: String) -> Result<String, CmtpError> {
        let Some(rest) = topic.strip_prefix("S:") else {
            return Ok(topic);
        };
        let (context, event) = match rest.split_once(':') {
            Some((context, event)) => (context, Some(event)),
            None => (rest, None),
        };
        let id = self.resolve_context(caller, context, Role::Reader).await?;
        Ok(match event {
            Some(event) => format!("S:{id}:{event}"),
            None => format!("S:{id}"),
        })
    }

    /// The full id of the context `context` (an id or a unique prefix) names, if the
    /// caller holds at least `role` in it.
    pub(crate) async fn resolve_context(&self, caller: &Caller, context: &str, role: Role) -> Result<Id, CmtpError> {
        let msg = ResolveContext {
            by: caller_address(caller)?,
            context: context.to_string(),
            role,
        };
        Ok(self.state.send(msg).await.map_err(mailbox("state"))??)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_reject_unknown_fields() {
        let err = crate::services::params::<super::CallParams>(
            "ctx.call",
            serde_json::json!({"context": "0x12345678", "method": "m", "extra": 1}),
            "{context, method}",
        )
        .err()
        .map(|e| e.message);
        assert!(err.is_some_and(|m| m.contains("unknown field `extra`")));
    }
}
