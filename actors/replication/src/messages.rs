//! The replicator's typed messages (`ctx.join`, `ctx.leave`, `ctx.status`) and replies.

use actix::Message;
use cmesh_common::Address;
use cmesh_state::Id;
use serde::Serialize;

use crate::error::ReplicationError;

/// `ctx.join {context, wait?}`: this node was invited; fetch the context from a member.
/// Without `wait`, answers once a member has accepted this node, and catching up goes on
/// in the background (`ctx.status`). With `wait`, answers once the catch-up is over: the
/// status (phase `in-sync`, with the local root), or the catch-up's failure as
/// [`ReplicationError::JoinFailed`] (its status kept). Asked while a join or catch-up of
/// the context runs, it answers that one's status (with `wait`, once it is over).
#[derive(Message)]
#[rtype(result = "Result<StatusReply, ReplicationError>")]
pub struct JoinContext {
    pub context: Id,
    pub wait: bool,
}

/// `ctx.leave {context}`: says so to the other members (a `Leave` transaction), then
/// deletes this node's copy of the context.
#[derive(Message)]
#[rtype(result = "Result<LeftReply, ReplicationError>")]
pub struct LeaveContext {
    pub context: Id,
}

/// Whether calls to a context may run here now: `Ok` unless the context is being joined,
/// catching up with transactions it knows it lacks, or its join failed; then
/// [`ReplicationError::NotReady`] (503) says what is going on and to retry, with the
/// progress. `context` is what the client gave: an id or a hex prefix of any length,
/// with or without `0x`; text that names no such context here is `Ok` (the call itself
/// says what is wrong with it). Cheap: no round trip to the state actor.
#[derive(Message)]
#[rtype(result = "Result<(), ReplicationError>")]
pub struct CheckReady {
    pub context: String,
}

/// `ctx.status {context}`.
#[derive(Message)]
#[rtype(result = "Result<StatusReply, ReplicationError>")]
pub struct ContextStatus {
    pub context: Id,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Fetching a context this node was invited to.
    Joining,
    /// Fetching what it lacks of a context it holds.
    CatchingUp,
    /// Holds everything it knows of.
    InSync,
    /// The join failed (see `error`); `ctx.join` again to retry.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReply {
    pub context: Id,
    pub phase: Phase,
    /// Transactions fetched by the current (or last) catch-up, and how many the member
    /// it fetches from had beyond this node's when it started.
    pub fetched: u64,
    pub expected: u64,
    /// Fetched per second over the current (or last) catch-up.
    pub rate: f64,
    /// The member it catches up from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Received transactions this node refused (bad signature, encoding, context, or
    /// causal past) and those dropped from a full waiting buffer.
    pub invalid: u64,
    pub dropped: u64,
    /// Transactions waiting for their parents.
    pub waiting: u64,
    /// Since the node started: catch-ups run, and broadcast transactions that arrived
    /// before their parents and had to wait.
    pub catch_ups: u64,
    pub parked: u64,
    /// This node's copy, once it holds the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads: Option<Vec<Id>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeftReply {
    pub context: Id,
    /// The `Leave` transaction (none if this node was no longer a member).
    pub tx: Option<Id>,
    /// Transactions deleted here.
    pub deleted: u64,
}
