//! The events actor: publishes this node's events, keeps recent events from the whole
//! mesh, and appends to the audit chain.
//!
//! It is meant to run on its own arbiter: audit commits block for about a millisecond
//! each, which must not stall the arbiter that drives the router's NATS traffic. NATS
//! publishes go through one outbox, drained by a single background task: they leave in
//! the order they were made (audit entries by seq), the handlers never wait on NATS,
//! and the outbox is bounded so a disconnected server cannot grow memory without limit.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::StreamExt;
use tracing::{debug, error, warn};

use cmesh_common::event_name::is_context_event_name;
use cmesh_common::{keccak256, Address};

use crate::audit::{audit_subject, AuditEntry, AuditLog, AUDIT_FILE};
use crate::envelope::{
    check_subject_part, check_topics_for_service, context_topics, event_id, parse_remote, EventEnvelope, APP_SERVICE,
    CONTEXT_SERVICE, MAX_KIND_LEN, MAX_SERVICE_LEN, REMOTE_SUBJECTS,
};
use crate::error::EventsError;
use crate::messages::{
    AuditAppend, Emit, EmitApp, EmitContext, EventsStats, Flush, Ready, Recent, Record, Shutdown, Stats, VerifyAudit,
};
use crate::recent::RecentStore;

/// Event sequence numbers are reserved durably in blocks this big, so ids stay unique
/// across restarts even if the clock steps back.
const EVENT_SEQ_BLOCK: u64 = 1 << 32;
/// Longest wait between retries of a failing audit commit.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Tunables; the defaults suit a production node.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Events kept per topic key.
    pub per_topic: usize,
    /// Topic keys kept; the least recently written is forgotten first.
    pub max_topics: usize,
    /// Event ids remembered to drop duplicates.
    pub max_seen_ids: usize,
    /// Largest encoded event accepted, local or remote.
    pub max_event_bytes: usize,
    /// Longest time an audit entry waits for its group commit.
    pub flush_interval: Duration,
    /// Pending audit entries that trigger a commit at once.
    pub flush_batch: usize,
    /// Pending audit entries beyond which new ones are refused (only reached while
    /// commits keep failing).
    pub max_pending_audit: usize,
    /// Publications allowed to wait for NATS before new ones are dropped.
    pub max_outbox: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            per_topic: 100,
            max_topics: 10_000,
            max_seen_ids: 65_536,
            max_event_bytes: 64 * 1024,
            flush_interval: Duration::from_millis(10),
            flush_batch: 1_024,
            max_pending_audit: 1 << 20,
            max_outbox: 16_384,
        }
    }
}

/// The events actor; see the module docs. Start it on its own arbiter with
/// `EventsActor::start_in_arbiter`.
pub struct EventsActor {
    client: async_nats::Client,
    node: Address,
    config: EventsConfig,
    recent: RecentStore,
    audit: AuditLog,
    audit_subject: String,
    next_event_seq: u64,
    event_seq_limit: u64,
    flush_timer: Option<SpawnHandle>,
    commit_failures: u32,
    /// Why other nodes' events are not received, if they are not.
    subscription_error: Option<EventsError>,
    outbox: VecDeque<Outgoing>,
    draining: bool,
    stats: EventsStats,
}

/// One publication waiting in the outbox; `done` learns how it went.
struct Outgoing {
    subject: String,
    payload: Bytes,
    done: Option<oneshot::Sender<Result<(), EventsError>>>,
}

impl EventsActor {
    /// Opens `<data_dir>/audit.redb` (creating the directory if needed) with the
    /// default configuration.
    pub fn new(client: async_nats::Client, node: Address, data_dir: &Path) -> Result<Self, EventsError> {
        Self::with_config(client, node, data_dir, EventsConfig::default())
    }

    pub fn with_config(
        client: async_nats::Client,
        node: Address,
        data_dir: &Path,
        config: EventsConfig,
    ) -> Result<Self, EventsError> {
        std::fs::create_dir_all(data_dir)?;
        let mut audit = AuditLog::open(&data_dir.join(AUDIT_FILE))?;
        // Starting at the clock in microseconds keeps ids unique even if the store is
        // lost; the reservation keeps them unique if the clock steps back.
        let start = audit.reserve_event_seqs(now_us(), EVENT_SEQ_BLOCK)?;
        Ok(EventsActor {
            client,
            node,
            recent: RecentStore::new(config.per_topic, config.max_topics, config.max_seen_ids),
            config,
            audit,
            audit_subject: audit_subject(&node),
            next_event_seq: start,
            event_seq_limit: start.saturating_add(EVENT_SEQ_BLOCK),
            flush_timer: None,
            commit_failures: 0,
            subscription_error: None,
            outbox: VecDeque::new(),
            draining: false,
            stats: EventsStats::default(),
        })
    }

    pub fn node(&self) -> Address {
        self.node
    }

    fn next_event_id(&mut self) -> Result<String, EventsError> {
        if self.next_event_seq >= self.event_seq_limit {
            let start = self.audit.reserve_event_seqs(self.next_event_seq, EVENT_SEQ_BLOCK)?;
            self.next_event_seq = start;
            self.event_seq_limit = start.saturating_add(EVENT_SEQ_BLOCK);
        }
        let seq = self.next_event_seq;
        self.next_event_seq = seq.saturating_add(1);
        Ok(event_id(&self.node, seq))
    }

    /// Checks the fields of a local event and builds its envelope and payload.
    fn build(
        &mut self,
        service: &str,
        kind: &str,
        topics: Vec<String>,
        caller: Option<Address>,
        data: serde_json::Value,
    ) -> Result<(EventEnvelope, Bytes), EventsError> {
        let invalid = |what, value: &str, reason| EventsError::Invalid {
            what,
            value: value.to_string(),
            reason,
        };
        check_subject_part(service, false, MAX_SERVICE_LEN).map_err(|reason| invalid("service", service, reason))?;
        check_subject_part(kind, true, MAX_KIND_LEN).map_err(|reason| invalid("kind", kind, reason))?;
        check_topics_for_service(service, kind, &topics)
            .map_err(|reason| invalid("topics", &topics.join(", "), reason))?;
        let envelope = EventEnvelope {
            id: self.next_event_id()?,
            node: self.node,
            ts: now_ms(),
            service: service.to_string(),
            kind: kind.to_string(),
            topics,
            caller,
            data,
        };
        let payload = serde_json::to_vec(&envelope)?;
        if payload.len() > self.config.max_event_bytes {
            return Err(EventsError::TooLarge {
                size: payload.len(),
                max: self.config.max_event_bytes,
            });
        }
        Ok((envelope, Bytes::from(payload)))
    }

    /// Publishes an event a caller asked for and answers once NATS has it (or why not).
    fn emit_for_caller(
        &mut self,
        service: &str,
        kind: &str,
        topics: Vec<String>,
        caller: Address,
        data: serde_json::Value,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<EventEnvelope, EventsError>> {
        let (envelope, payload) = match self.build(service, kind, topics, Some(caller), data) {
            Ok(built) => built,
            Err(err) => return Box::pin(async move { Err(err) }),
        };
        self.stats.emitted += 1;
        self.record(envelope.clone());
        let (done, published) = oneshot::channel();
        let item = Outgoing {
            subject: envelope.subject(),
            payload,
            done: Some(done),
        };
        self.publish(item, ctx);
        Box::pin(async move {
            match published.await {
                Ok(Ok(())) => Ok(envelope),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(EventsError::Stopped),
            }
        })
    }

    /// Keeps an event for queries; false if it is a duplicate.
    fn record(&mut self, envelope: EventEnvelope) -> bool {
        if envelope.topics.is_empty() {
            // Nothing to keep, and nothing to de-duplicate: such events are this node's
            // own and never come back from the network.
            return true;
        }
        if !self.recent.insert(Arc::new(envelope)) {
            self.stats.duplicates += 1;
            return false;
        }
        true
    }

    /// Queues a publication; it leaves after everything queued before it.
    fn publish(&mut self, item: Outgoing, ctx: &mut Context<Self>) {
        if self.outbox.len() >= self.config.max_outbox {
            if self.stats.dropped_publishes == 0 {
                warn!("too many publications waiting on NATS; dropping new ones");
            }
            self.stats.dropped_publishes += 1;
            if let Some(done) = item.done {
                let _ = done.send(Err(EventsError::OutboxFull));
            }
            return;
        }
        self.outbox.push_back(item);
        self.drain(ctx);
    }

    /// Starts the publishing task unless it runs; it takes the whole outbox, publishes
    /// it in order and comes back for more.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.outbox.is_empty() {
            return;
        }
        self.draining = true;
        let batch: Vec<Outgoing> = self.outbox.drain(..).collect();
        let client = self.client.clone();
        let fut = async move {
            let mut errors = 0u64;
            for item in batch {
                let result = client
                    .publish(item.subject, item.payload)
                    .await
                    .map_err(EventsError::Publish);
                if let Err(err) = &result {
                    if errors == 0 {
                        warn!(error = %err, "publishing to NATS failed");
                    }
                    errors += 1;
                }
                if let Some(done) = item.done {
                    let _ = done.send(result);
                }
            }
            errors
        };
        ctx.spawn(fut.into_actor(self).map(|errors, act, ctx| {
            act.draining = false;
            act.stats.publish_errors += errors;
            act.drain(ctx);
        }));
    }

    /// Commits pending audit entries and publishes them; answers the durable head.
    fn commit_audit(&mut self, ctx: &mut Context<Self>) -> Result<u64, EventsError> {
        if let Some(timer) = self.flush_timer.take() {
            ctx.cancel_future(timer);
        }
        match self.audit.commit() {
            Ok(entries) => {
                self.commit_failures = 0;
                if !entries.is_empty() {
                    self.publish_audit(&entries, ctx);
                }
                Ok(self.audit.head())
            }
            Err(err) => {
                self.commit_failures = self.commit_failures.saturating_add(1);
                self.stats.audit_commit_errors += 1;
                error!(error = %err, pending = self.audit.pending(), "audit commit failed; will retry");
                self.schedule_commit(ctx);
                Err(err.into())
            }
        }
    }

    /// Arms the group-commit timer unless it is armed; backs off while commits fail.
    fn schedule_commit(&mut self, ctx: &mut Context<Self>) {
        if self.flush_timer.is_some() || self.audit.pending() == 0 {
            return;
        }
        let backoff = 1u32 << self.commit_failures.min(10);
        let delay = self
            .config
            .flush_interval
            .saturating_mul(backoff)
            .min(MAX_RETRY_DELAY.max(self.config.flush_interval));
        self.flush_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.flush_timer = None;
            let _ = act.commit_audit(ctx);
        }));
    }

    fn publish_audit(&mut self, entries: &[AuditEntry], ctx: &mut Context<Self>) {
        for entry in entries {
            match serde_json::to_vec(&entry.to_record(self.node)) {
                Ok(json) => {
                    let item = Outgoing {
                        subject: self.audit_subject.clone(),
                        payload: Bytes::from(json),
                        done: None,
                    };
                    self.publish(item, ctx);
                }
                Err(err) => warn!(seq = entry.seq, error = %err, "audit entry not published"),
            }
        }
    }
}

impl Actor for EventsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Subscribing before any message is handled means that once `Ready` answers,
        // the subscriptions are on the wire ahead of its probe.
        let client = self.client.clone();
        let subscribe = async move {
            let mut subscribers = Vec::with_capacity(REMOTE_SUBJECTS.len());
            for subject in REMOTE_SUBJECTS {
                subscribers.push(client.subscribe(subject).await?);
            }
            Ok::<_, async_nats::SubscribeError>(subscribers)
        };
        ctx.wait(subscribe.into_actor(self).map(|result, act, ctx| match result {
            Ok(subscribers) => {
                for subscriber in subscribers {
                    ctx.add_stream(subscriber);
                }
            }
            Err(err) => {
                error!(error = %err, "cannot subscribe to mesh events; only local events will be kept");
                act.subscription_error = Some(EventsError::Subscribe(Arc::new(err)));
            }
        }));
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        // Errors are logged by commit_audit; AuditLog's Drop tries once more.
        let _ = self.commit_audit(ctx);
        Running::Stop
    }
}

impl StreamHandler<async_nats::Message> for EventsActor {
    fn handle(&mut self, message: async_nats::Message, _ctx: &mut Context<Self>) {
        self.stats.received += 1;
        match parse_remote(&message.subject, &message.payload, self.config.max_event_bytes) {
            Ok(envelope) => {
                if self.record(envelope) {
                    self.stats.recorded_remote += 1;
                }
            }
            Err(reason) => {
                self.stats.malformed += 1;
                debug!(subject = %message.subject, %reason, "ignoring event from the network");
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The default would stop the actor; losing remote events must not stop auditing.
        warn!("an event subscription ended; events from other nodes are no longer received");
        self.subscription_error = Some(EventsError::SubscriptionEnded);
    }
}

impl Handler<Emit> for EventsActor {
    type Result = ();

    fn handle(&mut self, msg: Emit, ctx: &mut Context<Self>) {
        self.emit(msg, ctx);
    }
}

impl Handler<Record> for EventsActor {
    type Result = ();

    fn handle(&mut self, msg: Record, ctx: &mut Context<Self>) {
        for event in msg.events {
            self.emit(event, ctx);
        }
        if let Some(audit) = msg.audit {
            self.append_audit(audit, ctx);
        }
    }
}

impl EventsActor {
    fn emit(&mut self, msg: Emit, ctx: &mut Context<Self>) {
        match self.build(&msg.service, &msg.kind, msg.topics, None, msg.data) {
            Ok((envelope, payload)) => {
                self.stats.emitted += 1;
                let subject = envelope.subject();
                self.record(envelope);
                let item = Outgoing {
                    subject,
                    payload,
                    done: None,
                };
                self.publish(item, ctx);
            }
            Err(err) => {
                self.stats.rejected_local += 1;
                warn!(service = %msg.service, kind = %msg.kind, error = %err, "event not emitted");
            }
        }
    }
}

impl Handler<EmitApp> for EventsActor {
    type Result = ResponseFuture<Result<EventEnvelope, EventsError>>;

    fn handle(&mut self, msg: EmitApp, ctx: &mut Context<Self>) -> Self::Result {
        let topics = vec![msg.topic.clone()];
        self.emit_for_caller(APP_SERVICE, &msg.topic, topics, msg.caller, msg.data, ctx)
    }
}

impl Handler<EmitContext> for EventsActor {
    type Result = ResponseFuture<Result<EventEnvelope, EventsError>>;

    fn handle(&mut self, msg: EmitContext, ctx: &mut Context<Self>) -> Self::Result {
        if !is_context_event_name(&msg.event) {
            let err = EventsError::Invalid {
                what: "event",
                value: msg.event,
                reason: "must be letters, digits, `_` or `-`",
            };
            return Box::pin(async move { Err(err) });
        }
        let kind = format!("{}.{}", msg.context, msg.event);
        let topics = context_topics(&msg.context, &msg.event);
        self.emit_for_caller(CONTEXT_SERVICE, &kind, topics, msg.caller, msg.data, ctx)
    }
}

impl Handler<Recent> for EventsActor {
    type Result = MessageResult<Recent>;

    fn handle(&mut self, msg: Recent, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.recent.recent(&msg.topic, msg.limit))
    }
}

impl Handler<AuditAppend> for EventsActor {
    type Result = ();

    fn handle(&mut self, msg: AuditAppend, ctx: &mut Context<Self>) {
        self.append_audit(msg, ctx);
    }
}

impl EventsActor {
    fn append_audit(&mut self, msg: AuditAppend, ctx: &mut Context<Self>) {
        if self.audit.pending() >= self.config.max_pending_audit {
            self.stats.audit_dropped += 1;
            error!("audit commits are failing and the backlog is full; entry dropped");
            return;
        }
        let request = keccak256(&msg.request);
        let response = keccak256(&msg.response);
        self.audit.append(now_ms(), request, response, msg.status);
        self.stats.audit_appended += 1;
        if self.audit.pending() >= self.config.flush_batch && self.commit_failures == 0 {
            let _ = self.commit_audit(ctx);
        } else {
            self.schedule_commit(ctx);
        }
    }
}

impl Handler<Flush> for EventsActor {
    type Result = Result<u64, EventsError>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        self.commit_audit(ctx)
    }
}

impl Handler<Shutdown> for EventsActor {
    type Result = Result<u64, EventsError>;

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let head = self.commit_audit(ctx);
        ctx.stop();
        head
    }
}

impl Handler<Ready> for EventsActor {
    type Result = ResponseFuture<Result<(), EventsError>>;

    fn handle(&mut self, _msg: Ready, _ctx: &mut Context<Self>) -> Self::Result {
        match &self.subscription_error {
            Some(EventsError::Subscribe(err)) => {
                let err = EventsError::Subscribe(Arc::clone(err));
                return Box::pin(async move { Err(err) });
            }
            Some(_) => return Box::pin(async { Err(EventsError::SubscriptionEnded) }),
            None => {}
        }
        // A message to ourselves: NATS handles one connection's commands in order, so
        // when it comes back, the subscriptions made before it are in place.
        let client = self.client.clone();
        Box::pin(async move {
            let inbox = client.new_inbox();
            let mut probe = client
                .subscribe(inbox.clone())
                .await
                .map_err(|err| EventsError::Subscribe(Arc::new(err)))?;
            client
                .publish(inbox, Bytes::new())
                .await
                .map_err(EventsError::Publish)?;
            match probe.next().await {
                Some(_) => Ok(()),
                None => Err(EventsError::ProbeLost),
            }
        })
    }
}

impl Handler<VerifyAudit> for EventsActor {
    type Result = Result<crate::audit::VerifyReport, EventsError>;

    fn handle(&mut self, _msg: VerifyAudit, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.audit.verify()?)
    }
}

impl Handler<Stats> for EventsActor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _msg: Stats, _ctx: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats;
        stats.audit_head = self.audit.head();
        stats.audit_pending = self.audit.pending() as u64;
        stats.topics = self.recent.topic_count() as u64;
        MessageResult(stats)
    }
}

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

fn now_us() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX)
}
