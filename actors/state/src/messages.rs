//! The typed messages the state actor answers, and their replies (which are also the
//! JSON the caller sees).

use actix::Message;
use cmesh_common::Address;
use serde::Serialize;
use serde_json::Value;

use crate::error::StateError;
use crate::ids::Id;
use crate::roles::Role;
use crate::store::AppRecord;
use crate::tx::CallerProof;

/// Who asks: the user's address and, when the request was Kami-signed, the user's own
/// signature of it (carried into the transaction).
#[derive(Debug, Clone)]
pub struct Requester {
    pub address: Address,
    pub proof: Option<CallerProof>,
}

impl Requester {
    pub fn new(address: Address) -> Self {
        Requester { address, proof: None }
    }
}

/// `app.deploy {name, version, wasm}`: validates, compiles and stores a module.
#[derive(Message)]
#[rtype(result = "Result<AppRecord, StateError>")]
pub struct Deploy {
    pub by: Address,
    pub name: String,
    pub version: String,
    pub wasm: Vec<u8>,
}

/// `app.list`: every deployed app version, by name then version.
#[derive(Message)]
#[rtype(result = "Result<Vec<AppRecord>, StateError>")]
pub struct ListApps;

/// `ctx.create {app, version?}`: a new context whose first admin is the requester.
#[derive(Message)]
#[rtype(result = "Result<ContextInfo, StateError>")]
pub struct CreateContext {
    pub by: Requester,
    /// An app id (0x…) or name.
    pub app: String,
    pub version: Option<String>,
}

/// `ctx.list`: the contexts the requester has a role in.
#[derive(Message)]
#[rtype(result = "Result<Vec<ContextInfo>, StateError>")]
pub struct ListContexts {
    pub by: Address,
}

/// `ctx.call` (write) / `ctx.view`: runs a method of a context's app.
#[derive(Message)]
#[rtype(result = "Result<CallReply, StateError>")]
pub struct CallContext {
    pub by: Requester,
    /// A context id or a unique prefix of it.
    pub context: String,
    pub method: String,
    /// JSON text.
    pub args: Vec<u8>,
    /// Run only if the context's app version matches (`A:` FQMNs).
    pub version_req: Option<String>,
    /// A mutation (a transaction) rather than a view.
    pub write: bool,
}

/// `ctx.grant` (role) / `ctx.revoke` (no role).
#[derive(Message)]
#[rtype(result = "Result<RoleReply, StateError>")]
pub struct SetRole {
    pub by: Requester,
    pub context: String,
    pub user: Address,
    pub role: Option<Role>,
}

/// `ctx.root {context}`.
#[derive(Message)]
#[rtype(result = "Result<RootReply, StateError>")]
pub struct ContextRoot {
    pub by: Address,
    pub context: String,
}

/// The full id of the context `context` names, if `by` holds at least `role` in it
/// (`E:S:` topics need a reader, `EW:S:` a writer).
#[derive(Message)]
#[rtype(result = "Result<Id, StateError>")]
pub struct ResolveContext {
    pub by: Address,
    pub context: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContextInfo {
    pub context: Id,
    pub app: Id,
    pub name: String,
    pub version: String,
    /// The requester's role.
    pub role: Role,
    pub applied: u64,
    pub root: Id,
    /// The genesis transaction (on create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx: Option<Id>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallReply {
    pub result: Value,
    /// The transaction (mutations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx: Option<Id>,
    pub gas_used: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleReply {
    pub context: Id,
    pub user: Address,
    pub role: Option<Role>,
    pub tx: Id,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootReply {
    pub context: Id,
    pub root: Id,
    pub heads: Vec<Id>,
    pub applied: u64,
}

/// Counters of the write path, for tests, benchmarks and metrics.
#[derive(Message)]
#[rtype(result = "WriteStats")]
pub struct Stats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Durable commits (one per batch).
    pub commits: u64,
    /// Jobs answered (transactions and refusals).
    pub jobs: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Calls the app or the caller got wrong (nothing kept).
    pub rejected: u64,
    /// Batches abandoned on a storage failure.
    pub aborted: u64,
}
