//! The `app.*` and `ctx.*` methods: typed params in, typed messages to the state actor
//! (apps, contexts, calls) and to the replicator (join, leave, status) out. `S:`, `SW:`,
//! `A:` and `AW:` FQMNs arrive here as `ctx.view` / `ctx.call`, `S:<context>` as
//! `ctx.root`.

use base64::Engine;
use cmesh_common::{Address, CmtpError};
use cmesh_iam::Caller;
use cmesh_replication::{CheckReady, ContextStatus, JoinContext, LeaveContext};
use cmesh_state::messages::{
    CallContext, ContextMembers, ContextRoot, CreateContext, Deploy, Invite, ListApps, ListContexts, Requester,
    ResolveContext, SetRole,
};
use cmesh_state::tx::CallerProof;
use cmesh_state::{Id, Role};
use serde::Deserialize;
use serde_json::Value;

use crate::services::{caller_address, mailbox, Services};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployParams {
    name: String,
    version: String,
    /// The module, base64.
    wasm: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateParams {
    app: String,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallParams {
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
pub(crate) struct GrantParams {
    context: String,
    address: Address,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeParams {
    context: String,
    address: Address,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteParams {
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
pub(crate) struct ContextParams {
    context: String,
}

/// `ctx.join`: with `wait`, answered once this node is in sync (the CLI's default).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinParams {
    context: Id,
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FullContextParams {
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
    pub(crate) async fn app_deploy(&self, caller: &Caller, p: DeployParams) -> Result<Value, CmtpError> {
        let wasm = base64::engine::general_purpose::STANDARD
            .decode(p.wasm.as_bytes())
            .map_err(|e| CmtpError::bad_request(format!("`wasm` is not base64: {e}")))?;
        let msg = Deploy {
            by: caller_address(caller)?,
            name: p.name,
            version: p.version,
            wasm,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn app_list(&self) -> Result<Value, CmtpError> {
        to_json(self.state.send(ListApps).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_create(&self, caller: &Caller, p: CreateParams) -> Result<Value, CmtpError> {
        let msg = CreateContext {
            by: requester(caller)?,
            app: p.app,
            version: p.version,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_list(&self, caller: &Caller) -> Result<Value, CmtpError> {
        let msg = ListContexts {
            by: caller_address(caller)?,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    /// `ctx.call` (`write`: a transaction) or `ctx.view`.
    pub(crate) async fn ctx_call(&self, caller: &Caller, p: CallParams, write: bool) -> Result<Value, CmtpError> {
        self.ready(&p.context).await?;
        let args = serde_json::to_vec(&p.args).map_err(|e| CmtpError::bad_request(e.to_string()))?;
        let msg = CallContext {
            by: requester(caller)?,
            context: p.context,
            method: p.method,
            args,
            version_req: p.version,
            write,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_grant(&self, caller: &Caller, p: GrantParams) -> Result<Value, CmtpError> {
        self.ready(&p.context).await?;
        let msg = SetRole {
            by: requester(caller)?,
            context: p.context,
            user: p.address,
            role: Some(p.role),
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_revoke(&self, caller: &Caller, p: RevokeParams) -> Result<Value, CmtpError> {
        self.ready(&p.context).await?;
        let msg = SetRole {
            by: requester(caller)?,
            context: p.context,
            user: p.address,
            role: None,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_root(&self, caller: &Caller, p: ContextParams) -> Result<Value, CmtpError> {
        let msg = ContextRoot {
            by: caller_address(caller)?,
            context: p.context,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_invite(&self, caller: &Caller, p: InviteParams) -> Result<Value, CmtpError> {
        self.ready(&p.context).await?;
        let msg = Invite {
            by: requester(caller)?,
            context: p.context,
            member: p.member,
            seats: p.seats,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_members(&self, caller: &Caller, p: ContextParams) -> Result<Value, CmtpError> {
        let msg = ContextMembers {
            by: caller_address(caller)?,
            context: p.context,
        };
        to_json(self.state.send(msg).await.map_err(mailbox("state"))??)
    }

    pub(crate) async fn ctx_join(&self, p: JoinParams) -> Result<Value, CmtpError> {
        let msg = JoinContext {
            context: p.context,
            wait: p.wait,
        };
        to_json(self.replicator.send(msg).await.map_err(mailbox("replicator"))??)
    }

    pub(crate) async fn ctx_leave(&self, p: FullContextParams) -> Result<Value, CmtpError> {
        let msg = LeaveContext { context: p.context };
        to_json(self.replicator.send(msg).await.map_err(mailbox("replicator"))??)
    }

    pub(crate) async fn ctx_status(&self, p: FullContextParams) -> Result<Value, CmtpError> {
        let msg = ContextStatus { context: p.context };
        to_json(self.replicator.send(msg).await.map_err(mailbox("replicator"))??)
    }

    /// 503 while the context `context` names is being joined or caught up on this node
    /// (its copy is not yet what its members hold), with how far it got. Calls, role and
    /// member changes and context events wait for it; `ctx.root` and `ctx.members` do not:
    /// they say what this node holds, which is how far it got.
    async fn ready(&self, context: &str) -> Result<(), CmtpError> {
        let check = CheckReady {
            context: context.to_string(),
        };
        Ok(self.replicator.send(check).await.map_err(mailbox("replicator"))??)
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
        self.ready(context).await?;
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
            cmesh_common::Method::CtxCall,
            serde_json::json!({"context": "0x12345678", "method": "m", "extra": 1}),
        )
        .err()
        .map(|e| e.message);
        assert!(err.is_some_and(|m| m.contains("unknown field `extra`")));
    }
}
