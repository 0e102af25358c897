//! The replicator: one per node. It owns which contexts this node replicates and how far
//! each got; the transactions themselves stay with the state actor.
//!
//! - This node's transactions, once durable (`Committed`), go out on the context's
//!   `txs` subject in batches that fit a NATS message.
//! - Other members' batches are checked on the verifier pool and handed to the state
//!   actor. Those that wait for parents are kept in a bounded buffer per author while a
//!   catch-up from that author fetches what is missing; then they are offered again.
//! - Every few seconds each held context's heads go out on its `heads` subject; a member
//!   that sees heads it lacks catches up from their sender. This is what repairs lost
//!   broadcasts (NATS core delivery is at most once) and a disconnect.
//! - On start, every held context catches up from any member (a restart).
//! - Sync requests of other members are answered by `responder.rs`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::HeaderMap;
use bytes::Bytes;
use cmesh_common::Address;
use cmesh_state::tx::VerifiedTx;
use cmesh_state::{Committed, FetchTransactions, Forget, GetSyncState, HeldContexts, Id, Leave, StateError};
use futures::channel::oneshot;
use futures::stream::{select_all, Stream, StreamExt};

use crate::error::ReplicationError;
use crate::messages::{ContextStatus, JoinContext, LeaveContext, LeftReply, Phase, StatusReply};
use crate::sync::{Link, Outcome, Progress, Turn};
use crate::wire::{self, HeadsNotice, TxBatch, MESSAGE_OVERHEAD, NODE_HEADER};

/// Transactions of one author kept while their parents are fetched; beyond it the oldest
/// are dropped (a catch-up fetches them again).
pub const WAITING_PER_AUTHOR: usize = 1_024;
/// How long heads named in a notice may be on their way before this node fetches them.
const HEADS_GRACE: Duration = Duration::from_secs(1);

/// What the replicator listens to, subscribed before the node says it is ready.
pub struct Subscriptions {
    streams: Vec<Pin<Box<dyn Stream<Item = Incoming> + Send>>>,
}

impl Subscriptions {
    pub async fn open(client: &async_nats::Client, node: &Address) -> Result<Subscriptions, ReplicationError> {
        let nats = |e: async_nats::SubscribeError| ReplicationError::Nats(e.to_string());
        let txs = client.subscribe(wire::TXS_WILDCARD).await.map_err(nats)?;
        let heads = client.subscribe(wire::HEADS_WILDCARD).await.map_err(nats)?;
        let any = client.subscribe(wire::SYNC_WILDCARD).await.map_err(nats)?;
        let own = client.subscribe(wire::own_sync_wildcard(node)).await.map_err(nats)?;
        client
            .flush()
            .await
            .map_err(|e| ReplicationError::Nats(e.to_string()))?;
        Ok(Subscriptions {
            streams: vec![
                Box::pin(txs.map(Incoming::Txs)),
                Box::pin(heads.map(Incoming::Heads)),
                Box::pin(any.map(Incoming::Sync)),
                Box::pin(own.map(Incoming::Sync)),
            ],
        })
    }
}

pub enum Incoming {
    Txs(async_nats::Message),
    Heads(async_nats::Message),
    Sync(async_nats::Message),
}

impl Message for Incoming {
    type Result = ();
}

/// A context this node replicates (or is joining).
struct Tracked {
    phase: Phase,
    syncing: bool,
    /// Another catch-up was asked for while one ran: from this member (or any).
    again: Option<Option<Address>>,
    waiting: HashMap<Address, VecDeque<VerifiedTx>>,
    progress: Progress,
    started: Option<Instant>,
    elapsed: Option<Duration>,
    peer: Option<Address>,
    error: Option<String>,
    invalid: u64,
    dropped: u64,
    /// Catch-ups started, and received transactions that had to wait for parents.
    catch_ups: u64,
    parked: u64,
    /// Fires once the last broadcast batch received was handed to the state actor.
    last_turn: Option<oneshot::Receiver<()>>,
}

impl Tracked {
    fn new(phase: Phase) -> Tracked {
        Tracked {
            phase,
            syncing: false,
            again: None,
            waiting: HashMap::new(),
            progress: Progress::default(),
            started: None,
            elapsed: None,
            peer: None,
            error: None,
            invalid: 0,
            dropped: 0,
            catch_ups: 0,
            parked: 0,
            last_turn: None,
        }
    }

    fn waiting_count(&self) -> u64 {
        self.waiting.values().map(|q| q.len() as u64).sum()
    }
}

pub struct Replicator {
    link: Link,
    subscriptions: Option<Subscriptions>,
    contexts: HashMap<Id, Tracked>,
    gossip_every: Duration,
}

impl Replicator {
    pub fn new(link: Link, subscriptions: Subscriptions, gossip_every: Duration) -> Replicator {
        Replicator {
            link,
            subscriptions: Some(subscriptions),
            contexts: HashMap::new(),
            gossip_every,
        }
    }

    /// Starts a catch-up of `context` from `member` (any if `None`), or queues one
    /// behind the one running.
    fn catch_up(&mut self, context: Id, member: Option<Address>, ctx: &mut Context<Self>) {
        let Some(tracked) = self.contexts.get_mut(&context) else {
            return;
        };
        if tracked.syncing {
            tracked.again = Some(member.or(tracked.again.flatten()));
            return;
        }
        tracked.syncing = true;
        tracked.catch_ups += 1;
        tracked.started = Some(Instant::now());
        tracked.elapsed = None;
        tracked.progress = Progress::default();
        tracked.error = None;
        let joining = tracked.phase == Phase::Joining;
        if !joining {
            tracked.phase = Phase::CatchingUp;
        }
        let link = self.link.clone();
        let me = ctx.address();
        let work = async move {
            let report = move |progress: Progress| me.do_send(Reported { context, progress });
            link.catch_up(context, member, joining, &report).await
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |result, act, ctx| act.caught_up(context, result, ctx)),
        );
    }

    fn caught_up(&mut self, context: Id, result: Result<Outcome, ReplicationError>, ctx: &mut Context<Self>) {
        let Some(tracked) = self.contexts.get_mut(&context) else {
            return;
        };
        tracked.syncing = false;
        tracked.elapsed = tracked.started.map(|s| s.elapsed());
        match result {
            Ok(outcome) => {
                tracing::info!(%context, peer = %outcome.peer, fetched = outcome.fetched, added = outcome.added, "caught up");
                tracked.peer = Some(outcome.peer);
                tracked.phase = Phase::InSync;
            }
            // Alone: nobody else online to catch up from.
            Err(ReplicationError::NoMember(why)) if tracked.phase != Phase::Joining => {
                tracing::debug!(%context, %why, "no member to catch up from");
                tracked.phase = Phase::InSync;
            }
            Err(e) => {
                tracing::warn!(%context, error = %e, "catch-up failed");
                tracked.error = Some(e.to_string());
                tracked.phase = if tracked.phase == Phase::Joining {
                    Phase::Failed
                } else {
                    Phase::InSync
                };
            }
        }
        let again = tracked.again.take();
        let waiting: Vec<VerifiedTx> = tracked.waiting.drain().flat_map(|(_, q)| q).collect();
        if !waiting.is_empty() {
            self.offer_again(context, waiting, ctx);
        }
        if let Some(member) = again {
            self.catch_up(context, member, ctx);
        }
    }

    /// Hands transactions that waited for parents to the state actor again; those still
    /// waiting are dropped (the next catch-up fetches them).
    fn offer_again(&mut self, context: Id, txs: Vec<VerifiedTx>, ctx: &mut Context<Self>) {
        let link = self.link.clone();
        let work = async move { link.deliver_with(context, Vec::new(), txs, false).await };
        ctx.spawn(work.into_actor(self).map(move |result, act, _| {
            if let (Ok(delivered), Some(tracked)) = (result, act.contexts.get_mut(&context)) {
                tracked.dropped += delivered.waiting.len() as u64;
                tracked.invalid += delivered.report.invalid.len() as u64;
            }
        }));
    }

    fn on_txs(&mut self, message: async_nats::Message, ctx: &mut Context<Self>) {
        if self.published_here(&message) {
            return;
        }
        let Some(context) = wire::context_of_subject(&message.subject) else {
            return;
        };
        let Some(tracked) = self.contexts.get_mut(&context) else {
            return;
        };
        let batch: TxBatch = match wire::decode(&message.payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracked.invalid += 1;
                let rejected = crate::verify::Rejected {
                    id: None,
                    reason: format!("a malformed batch: {e}"),
                };
                self.link.report_rejected(context, &[rejected]);
                return;
            }
        };
        let link = self.link.clone();
        let encoded = batch.txs.into_iter().map(|tx| tx.into_vec()).collect();
        let turn = Turn::next(&mut tracked.last_turn);
        let work = async move { link.deliver(context, encoded, turn).await };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            let delivered = match result {
                Ok(delivered) => delivered,
                Err(e) => {
                    tracing::warn!(%context, error = %e, "could not take received transactions");
                    return;
                }
            };
            let Some(tracked) = act.contexts.get_mut(&context) else {
                return;
            };
            tracked.invalid += (delivered.rejected.len() + delivered.report.invalid.len()) as u64;
            if delivered.waiting.is_empty() {
                return;
            }
            tracked.parked += delivered.waiting.len() as u64;
            let mut authors = Vec::new();
            for tx in delivered.waiting.into_values() {
                let author = tx.tx().body.author;
                let queue = tracked.waiting.entry(author).or_default();
                if queue.len() == WAITING_PER_AUTHOR {
                    queue.pop_front();
                    tracked.dropped += 1;
                }
                queue.push_back(tx);
                if !authors.contains(&author) {
                    authors.push(author);
                }
            }
            for author in authors {
                act.catch_up(context, Some(author), ctx);
            }
        }));
    }

    fn on_heads(&mut self, message: async_nats::Message, ctx: &mut Context<Self>) {
        if self.published_here(&message) {
            return;
        }
        let Some(context) = wire::context_of_subject(&message.subject) else {
            return;
        };
        match self.contexts.get(&context) {
            Some(tracked) if tracked.phase == Phase::InSync && !tracked.syncing => {}
            _ => return,
        }
        let Ok(notice) = wire::decode::<HeadsNotice>(&message.payload) else {
            tracing::debug!(%context, "ignored a malformed heads notice");
            return;
        };
        self.check_heads(context, notice.node, notice.heads, true, ctx);
    }

    /// Catches up from `node` if this node lacks some of its `heads`. On a notice
    /// (`first`), heads still lacking are checked once more after [`HEADS_GRACE`]: under
    /// load most are broadcasts on their way, and fetching them would be wasted work.
    fn check_heads(&mut self, context: Id, node: Address, heads: Vec<Id>, first: bool, ctx: &mut Context<Self>) {
        let state = self.link.state.clone();
        let lacking = async move { state.send(cmesh_state::Lacking { context, ids: heads }).await };
        ctx.spawn(lacking.into_actor(self).map(move |result, act, ctx| {
            let Ok(Ok(lacking)) = result else { return };
            if lacking.is_empty() {
                return;
            }
            if first {
                ctx.run_later(HEADS_GRACE, move |act, ctx| {
                    act.check_heads(context, node, lacking, false, ctx)
                });
            } else {
                tracing::debug!(%context, from = %node, lacking = lacking.len(), "heads this node lacks");
                act.catch_up(context, Some(node), ctx);
            }
        }));
    }

    fn on_sync(&mut self, message: async_nats::Message, ctx: &mut Context<Self>) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let link = self.link.clone();
        ctx.spawn(
            async move {
                if let Some(answer) = crate::responder::answer(&link, &message.subject, &message.payload).await {
                    if let Err(e) = link.client.publish(reply, answer).await {
                        tracing::debug!(error = %e, "could not answer a sync request");
                    }
                }
            }
            .into_actor(self),
        );
    }

    fn published_here(&self, message: &async_nats::Message) -> bool {
        let node = self.link.node().to_string();
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(NODE_HEADER))
            .is_some_and(|v| v.as_str() == node)
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, self.link.node().to_string().as_str());
        headers
    }

    /// Publishes each held context's heads.
    fn gossip(&mut self, ctx: &mut Context<Self>) {
        let contexts: Vec<Id> = self
            .contexts
            .iter()
            .filter(|(_, t)| t.phase != Phase::Joining && t.phase != Phase::Failed)
            .map(|(id, _)| *id)
            .collect();
        if contexts.is_empty() {
            return;
        }
        let link = self.link.clone();
        let headers = self.headers();
        ctx.spawn(
            async move {
                for context in contexts {
                    let Ok(Ok(state)) = link.state.send(GetSyncState { context }).await else {
                        continue;
                    };
                    let notice = HeadsNotice {
                        node: link.node(),
                        heads: state.heads,
                        applied: state.applied,
                    };
                    let Ok(payload) = wire::encode(&notice) else { continue };
                    let subject = wire::heads_subject(&context);
                    if let Err(e) = link
                        .client
                        .publish_with_headers(subject, headers.clone(), payload.into())
                        .await
                    {
                        tracing::debug!(error = %e, "could not publish heads");
                    }
                }
            }
            .into_actor(self),
        );
    }

    fn status(&self, context: Id) -> Option<StatusReply> {
        let tracked = self.contexts.get(&context)?;
        let elapsed = tracked
            .elapsed
            .or_else(|| tracked.started.map(|s| s.elapsed()))
            .map_or(0.0, |d| d.as_secs_f64());
        Some(StatusReply {
            context,
            phase: tracked.phase,
            fetched: tracked.progress.fetched,
            expected: tracked.progress.expected,
            rate: if elapsed > 0.0 {
                tracked.progress.fetched as f64 / elapsed
            } else {
                0.0
            },
            peer: tracked.peer,
            error: tracked.error.clone(),
            invalid: tracked.invalid,
            dropped: tracked.dropped,
            waiting: tracked.waiting_count(),
            catch_ups: tracked.catch_ups,
            parked: tracked.parked,
            applied: None,
            root: None,
            heads: None,
        })
    }
}

/// Splits encoded transactions into batches of at most `max_bytes` each (a transaction
/// larger than that goes alone).
fn batches(txs: Vec<Vec<u8>>, max_bytes: usize) -> Vec<TxBatch> {
    let mut out = Vec::new();
    let mut batch = TxBatch::default();
    let mut size = 0;
    for tx in txs {
        if !batch.txs.is_empty() && size + tx.len() > max_bytes {
            out.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += tx.len();
        batch.txs.push(serde_bytes::ByteBuf::from(tx));
    }
    if !batch.txs.is_empty() {
        out.push(batch);
    }
    out
}

impl Actor for Replicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(subscriptions) = self.subscriptions.take() {
            ctx.add_stream(select_all(subscriptions.streams));
        }
        ctx.run_interval(self.gossip_every, |act, ctx| act.gossip(ctx));
        let state = self.link.state.clone();
        ctx.spawn(
            async move { state.send(HeldContexts).await }
                .into_actor(self)
                .map(|held, act, ctx| match held {
                    Ok(Ok(held)) => {
                        for context in held {
                            act.contexts
                                .entry(context)
                                .or_insert_with(|| Tracked::new(Phase::InSync));
                            act.catch_up(context, None, ctx);
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "could not list the held contexts"),
                    Err(_) => tracing::error!("the state actor is gone"),
                }),
        );
    }
}

impl StreamHandler<Incoming> for Replicator {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item {
            Incoming::Txs(message) => self.on_txs(message, ctx),
            Incoming::Heads(message) => self.on_heads(message, ctx),
            Incoming::Sync(message) => self.on_sync(message, ctx),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::info!("replication subscriptions ended");
    }
}

impl Handler<Committed> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: Committed, ctx: &mut Context<Self>) {
        self.contexts
            .entry(msg.context)
            .or_insert_with(|| Tracked::new(Phase::InSync));
        let client = self.link.client.clone();
        let headers = self.headers();
        let subject = wire::txs_subject(&msg.context);
        let max_bytes = self.link.max_payload.saturating_sub(MESSAGE_OVERHEAD).max(1);
        let batches = batches(msg.txs, max_bytes);
        ctx.spawn(
            async move {
                for batch in batches {
                    let payload = match wire::encode(&batch) {
                        Ok(payload) => Bytes::from(payload),
                        Err(e) => {
                            tracing::error!(error = %e, "could not encode a batch");
                            continue;
                        }
                    };
                    if let Err(e) = client
                        .publish_with_headers(subject.clone(), headers.clone(), payload)
                        .await
                    {
                        tracing::warn!(error = %e, "could not broadcast transactions; members catch up later");
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// A catch-up's progress, from the task running it.
#[derive(Message)]
#[rtype(result = "()")]
struct Reported {
    context: Id,
    progress: Progress,
}

impl Handler<Reported> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: Reported, _: &mut Context<Self>) {
        if let Some(tracked) = self.contexts.get_mut(&msg.context) {
            tracked.progress = msg.progress;
        }
    }
}

impl Handler<JoinContext> for Replicator {
    type Result = ResponseActFuture<Self, Result<StatusReply, ReplicationError>>;

    fn handle(&mut self, msg: JoinContext, _: &mut Context<Self>) -> Self::Result {
        let context = msg.context;
        match self.contexts.get(&context).map(|t| t.phase) {
            Some(Phase::Joining) | Some(Phase::CatchingUp) => {
                let status = self.status(context).ok_or(ReplicationError::Gone("status"));
                return Box::pin(fut::ready(status));
            }
            Some(Phase::InSync) => {
                return Box::pin(fut::ready(Err(ReplicationError::Conflict(format!(
                    "this node holds context {context} already"
                )))))
            }
            Some(Phase::Failed) | None => {}
        }
        // A member must accept this node before the join is under way: a node that was
        // not invited hears so now, not from `ctx.status`.
        let link = self.link.clone();
        let accepted = async move { link.remote_state(context, None).await };
        Box::pin(accepted.into_actor(self).map(move |remote, act, ctx| {
            let remote = remote?;
            let tracked = act
                .contexts
                .entry(context)
                .or_insert_with(|| Tracked::new(Phase::Joining));
            tracked.phase = Phase::Joining;
            act.catch_up(context, Some(remote.node), ctx);
            act.status(context).ok_or(ReplicationError::Gone("status"))
        }))
    }
}

impl Handler<ContextStatus> for Replicator {
    type Result = ResponseActFuture<Self, Result<StatusReply, ReplicationError>>;

    fn handle(&mut self, msg: ContextStatus, _: &mut Context<Self>) -> Self::Result {
        let context = msg.context;
        let state = self.link.state.clone();
        let local = async move { state.send(GetSyncState { context }).await };
        Box::pin(local.into_actor(self).map(move |local, act, _| {
            let local = match local {
                Ok(Ok(local)) => Some(local),
                Ok(Err(StateError::NotFound(_))) => None,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(ReplicationError::Gone("state")),
            };
            let mut status = act.status(context).ok_or_else(|| {
                ReplicationError::NotFound(format!("context {context} is neither held nor being joined here"))
            })?;
            if let Some(local) = local {
                status.applied = Some(local.applied);
                status.root = Some(local.root);
                status.heads = Some(local.heads);
            }
            Ok(status)
        }))
    }
}

impl Handler<LeaveContext> for Replicator {
    type Result = ResponseActFuture<Self, Result<LeftReply, ReplicationError>>;

    fn handle(&mut self, msg: LeaveContext, _: &mut Context<Self>) -> Self::Result {
        let context = msg.context;
        let link = self.link.clone();
        let headers = self.headers();
        let leave = async move {
            let left = link
                .state
                .send(Leave { context })
                .await
                .map_err(|_| ReplicationError::Gone("state"))??;
            // The others hear of the leave before this node forgets the context: once
            // forgotten, it could not answer for the transaction.
            if let Some(tx) = left.tx {
                let txs = link
                    .state
                    .send(FetchTransactions { context, ids: vec![tx] })
                    .await
                    .map_err(|_| ReplicationError::Gone("state"))??;
                let payload = wire::encode(&TxBatch {
                    txs: txs.into_iter().map(serde_bytes::ByteBuf::from).collect(),
                })?;
                link.client
                    .publish_with_headers(wire::txs_subject(&context), headers, payload.into())
                    .await
                    .map_err(|e| ReplicationError::Nats(e.to_string()))?;
                link.client
                    .flush()
                    .await
                    .map_err(|e| ReplicationError::Nats(e.to_string()))?;
                link.confirm_held(context, tx).await?;
            }
            let forgotten = link
                .state
                .send(Forget { context })
                .await
                .map_err(|_| ReplicationError::Gone("state"))??;
            Ok(LeftReply {
                context,
                tx: left.tx,
                deleted: forgotten.transactions,
            })
        };
        Box::pin(leave.into_actor(self).map(move |result, act, _| {
            if result.is_ok() {
                act.contexts.remove(&context);
            }
            result
        }))
    }
}
