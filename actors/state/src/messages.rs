//! The typed messages the state actor answers, and their replies (which are also the
//! JSON the caller sees).

use actix::Message;
use cmesh_common::Address;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::dag::OrderKey;
use crate::error::StateError;
use crate::ids::Id;
use crate::roles::Role;
use crate::store::AppRecord;
use crate::tx::{CallerProof, VerifiedTx};

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

/// `ctx.invite {context, member, seats?}`: makes a node a member (or changes its seats).
#[derive(Message)]
#[rtype(result = "Result<MemberReply, StateError>")]
pub struct Invite {
    pub by: Requester,
    pub context: String,
    pub member: Address,
    pub seats: u32,
}

/// `ctx.leave {context}`: this node stops being a member. If it still is one, it
/// authors a `Leave` transaction (`tx`); nothing is deleted ([`Forget`] does that once
/// the others have the `Leave`).
#[derive(Message)]
#[rtype(result = "Result<LeaveReply, StateError>")]
pub struct Leave {
    pub context: Id,
}

/// Deletes everything this node holds of a context (its transactions, DAG, state, roles
/// and tree), not the app's code. The other members carry on; there is no global delete.
#[derive(Message)]
#[rtype(result = "Result<ForgetReply, StateError>")]
pub struct Forget {
    pub context: Id,
}

/// `ctx.members {context}`: the members as of everything this node holds.
#[derive(Message)]
#[rtype(result = "Result<MembersReply, StateError>")]
pub struct ContextMembers {
    pub by: Address,
    pub context: String,
}

/// Transactions of other members, checked on their own ([`VerifiedTx`]). Added to the
/// DAG if their causal past allows, applied in order.
#[derive(Message)]
#[rtype(result = "Result<ReceiveReport, StateError>")]
pub struct Receive {
    pub txs: Vec<VerifiedTx>,
    /// The context being joined: its genesis may start it here. Without it, only
    /// transactions of contexts this node holds are taken.
    pub joining: Option<Id>,
}

/// This node's transactions of one batch, encoded, once they are durable: what the
/// replicator broadcasts to the other members.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Committed {
    pub context: Id,
    pub txs: Vec<Vec<u8>>,
}

/// Every context this node holds.
#[derive(Message)]
#[rtype(result = "Result<Vec<Id>, StateError>")]
pub struct HeldContexts;

/// The encoded transactions `ids` of a context this node holds (those it has).
#[derive(Message)]
#[rtype(result = "Result<Vec<Vec<u8>>, StateError>")]
pub struct FetchTransactions {
    pub context: Id,
    pub ids: Vec<Id>,
}

/// What a member needs to ask another for the transactions it lacks.
#[derive(Message)]
#[rtype(result = "Result<SyncState, StateError>")]
pub struct GetSyncState {
    pub context: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub heads: Vec<Id>,
    /// The highest `seq` held of each author.
    pub seqs: Vec<(Address, u64)>,
    pub applied: u64,
    pub root: Id,
    /// The members as of everything held.
    pub members: Vec<Member>,
}

/// One page of the transactions a member lacks, in apply order: those after `after`
/// whose author's `seq` is above what the member holds (`have`). A page holds at most
/// `limit` transactions and, beyond its first, at most `max_bytes` of them.
#[derive(Message)]
#[rtype(result = "Result<SyncPage, StateError>")]
pub struct MissingTransactions {
    pub context: Id,
    pub have: Vec<(Address, u64)>,
    pub after: Option<OrderKey>,
    pub limit: usize,
    pub max_bytes: usize,
}

/// Which of `ids` this node does not hold in `context` (all of them if it does not hold
/// the context).
#[derive(Message)]
#[rtype(result = "Result<Vec<Id>, StateError>")]
pub struct Lacking {
    pub context: Id,
    pub ids: Vec<Id>,
}

/// The module of a deployed app, for a node joining a context that runs it.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StateError>")]
pub struct AppCode {
    pub app: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPage {
    /// Encoded transactions, parents before children.
    pub txs: Vec<Vec<u8>>,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<OrderKey>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaveReply {
    pub context: Id,
    /// The `Leave` transaction; `None`: this node was no longer a member.
    pub tx: Option<Id>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetReply {
    pub context: Id,
    /// Transactions deleted.
    pub transactions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberReply {
    pub context: Id,
    pub member: Address,
    pub seats: u32,
    pub tx: Id,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub member: Address,
    pub seats: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct MembersReply {
    pub context: Id,
    pub members: Vec<Member>,
}

/// What became of received transactions.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReceiveReport {
    /// Added to the DAG (and applied).
    pub added: Vec<Id>,
    pub duplicates: u64,
    /// Transactions waiting for these parents (not kept).
    pub missing: Vec<(Id, Vec<Id>)>,
    /// Transactions that break a rule of their causal past, and why (not kept).
    pub invalid: Vec<(Id, String)>,
    /// Transactions of contexts this node does not hold (not kept).
    pub unknown_context: u64,
    /// Applied transactions taken back because a received one sorts before them.
    pub undone: u64,
    /// Transactions applied (the added ones and those taken back and applied again).
    pub applied: u64,
    /// Applied transactions that changed nothing (the caller's role, the app failed).
    pub failed: u64,
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

/// Makes everything committed so far durable (a batch of broadcast transactions alone
/// skips the fsync): what a node does before it stops.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StateError>")]
pub struct Persist;

/// Counters of the write path (`router.info` shows them as `writes`).
#[derive(Message)]
#[rtype(result = "WriteStats")]
pub struct Stats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Commits (one per batch).
    pub commits: u64,
    /// Commits without fsync (batches of broadcast transactions alone).
    pub unsynced: u64,
    /// Jobs answered (transactions and refusals).
    pub jobs: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Calls the app or the caller got wrong (nothing kept).
    pub rejected: u64,
    /// Batches abandoned on a storage failure.
    pub aborted: u64,
}
