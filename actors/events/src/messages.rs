//! The messages the events actor understands. Emitting and auditing are fire-and-forget
//! (`do_send`) so the request path never waits on the events actor; queries and
//! `Flush` answer.

use std::borrow::Cow;

use actix::Message;
use bytes::Bytes;

use cmesh_common::Address;

use crate::audit::VerifyReport;
use crate::envelope::{context_topics, registrar_topics, EventEnvelope, CONTEXT_SERVICE, REGISTRAR_SERVICE};
use crate::error::EventsError;

/// Publishes an event on `cmesh.events.<service>.<kind>` and keeps it under `topics`
/// (none: published only). Invalid events are logged and counted, not published.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Emit {
    pub service: Cow<'static, str>,
    pub kind: Cow<'static, str>,
    pub topics: Vec<String>,
    pub data: serde_json::Value,
}

impl Emit {
    pub fn new(
        service: impl Into<Cow<'static, str>>,
        kind: impl Into<Cow<'static, str>>,
        topics: Vec<String>,
        data: serde_json::Value,
    ) -> Self {
        Emit {
            service: service.into(),
            kind: kind.into(),
            topics,
            data,
        }
    }

    /// A registrar event about `name` (e.g. kind `transferred`), kept under `R:<name>`
    /// and `R:<name>:<kind>`.
    pub fn registrar(kind: impl Into<Cow<'static, str>>, name: &str, data: serde_json::Value) -> Self {
        let kind = kind.into();
        let topics = registrar_topics(name, &kind);
        Emit::new(REGISTRAR_SERVICE, kind, topics, data)
    }

    /// An event of context `context` (an app's, from a transaction), published on
    /// `cmesh.events.ctx.<context>.<event>` and kept under `S:<context>` and
    /// `S:<context>:<event>`.
    pub fn context(context: &str, event: &str, data: serde_json::Value) -> Self {
        Emit::new(
            CONTEXT_SERVICE,
            format!("{context}.{event}"),
            context_topics(context, event),
            data,
        )
    }
}

/// Publishes an application event on `cmesh.events.app.<topic>`, kept under `topic`,
/// on behalf of `caller`. Answers with the envelope once it is handed to NATS.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<EventEnvelope, EventsError>")]
pub struct EmitApp {
    pub topic: String,
    pub data: serde_json::Value,
    pub caller: Address,
}

/// Publishes `event` on context `context`'s topic (`cmesh.events.ctx.<context>.<event>`),
/// kept under `S:<context>` and `S:<context>:<event>`, on behalf of `caller` (`EW:S:`;
/// the caller's write access is checked before). Events an app emits carry no caller, so
/// subscribers can tell the two apart. Answers once the envelope is handed to NATS.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<EventEnvelope, EventsError>")]
pub struct EmitContext {
    /// The full context id, `0x` + 64 hex digits.
    pub context: String,
    pub event: String,
    pub data: serde_json::Value,
    pub caller: Address,
}

/// The most recent `limit` events kept under `topic` (0: all kept), oldest first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<EventEnvelope>")]
pub struct Recent {
    pub topic: String,
    pub limit: usize,
}

/// Adds the final message of a request to the audit chain. Durable after the next group
/// commit (or a `Flush`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct AuditAppend {
    pub request: Bytes,
    pub response: Bytes,
    pub status: u16,
}

/// Everything one request produced, in one message: its events in order, then its audit
/// entry. One message instead of several wakes the events thread once per request.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Record {
    pub events: Vec<Emit>,
    pub audit: Option<AuditAppend>,
}

/// Commits pending audit entries now; answers with the durable head seq (`events.audit`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, EventsError>")]
pub struct Flush;

/// Flushes the audit chain and stops the actor; answers with the durable head seq.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, EventsError>")]
pub struct Shutdown;

/// Answers once the subscriptions to other nodes' events are live on the server, so
/// events published after that are seen. Waits for a NATS round trip: use a timeout.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), EventsError>")]
pub struct Ready;

/// Verifies the committed audit chain of the running node, reading every entry
/// (`events.audit`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<VerifyReport, EventsError>")]
pub struct VerifyAudit;

/// Counters (`events.audit`, and tests).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "EventsStats")]
pub struct Stats;

/// What the actor has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventsStats {
    /// Events this node published.
    pub emitted: u64,
    /// Emit requests refused as invalid.
    pub rejected_local: u64,
    /// Event messages received from NATS (including echoes of this node's own).
    pub received: u64,
    /// Received events that were new and kept.
    pub recorded_remote: u64,
    /// Events ignored because their id was already kept (this includes the echoes of
    /// this node's own app and registrar events).
    pub duplicates: u64,
    /// Received messages ignored as malformed or not allowed.
    pub malformed: u64,
    /// Publications dropped because the outbox was full.
    pub dropped_publishes: u64,
    /// Publications NATS refused.
    pub publish_errors: u64,
    /// Audit entries appended.
    pub audit_appended: u64,
    /// Audit entries refused because too many were waiting for a commit.
    pub audit_dropped: u64,
    /// Failed audit commits (retried).
    pub audit_commit_errors: u64,
    /// Seq of the last durable audit entry.
    pub audit_head: u64,
    /// Audit entries waiting for a commit.
    pub audit_pending: u64,
    /// Topic keys kept for recent-events queries.
    pub topics: u64,
}
