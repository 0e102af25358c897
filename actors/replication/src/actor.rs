//! The replicator: one per node. It owns which contexts this node replicates and how far
//! each got; the transactions themselves stay with the state actor.
//!
//! - This node's transactions, once durable (`Committed`), go out on the context's
//!   `txs` subject in batches that fit a bus message.
//! - Other members' batches are checked on the verifier pool and handed to the state
//!   actor (`receive.rs`). Those that wait for parents are kept in a bounded buffer per
//!   author while a catch-up from that author fetches what is missing; then they are
//!   offered again.
//! - Every few seconds each held context's heads go out on its `heads` subject; a member
//!   that sees heads it lacks catches up from their sender. This is what repairs lost
//!   broadcasts (delivery is at most once) and a disconnect.
//! - On start, every held context catches up from any member (a restart).
//! - `ctx.join`, `ctx.status`, `ctx.leave` are answered in `requests.rs`, readiness in
//!   `readiness.rs`, other members' sync requests in `responder.rs`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use cmesh_common::Address;
use cmesh_state::tx::VerifiedTx;
use cmesh_state::{Committed, GetSyncState, HeldContexts, Id};
use futures::channel::oneshot;
use futures::stream::{select_all, Stream, StreamExt};

use crate::bus::{Bus, BusMessage};
use crate::error::ReplicationError;
use crate::messages::{Phase, StatusReply};
use crate::sync::{Link, Outcome, Progress};
use crate::wire::{self, HeadsNotice, TxBatch, MESSAGE_OVERHEAD};

/// Transactions of one author kept while their parents are fetched; beyond it the oldest
/// are dropped (a catch-up fetches them again).
pub const WAITING_PER_AUTHOR: usize = 1_024;

/// What the replicator listens to, subscribed before the node says it is ready.
pub struct Subscriptions {
    streams: Vec<Pin<Box<dyn Stream<Item = Incoming> + Send>>>,
}

impl Subscriptions {
    pub async fn open(bus: &dyn Bus, node: &Address) -> Result<Subscriptions, ReplicationError> {
        let txs = bus.subscribe(wire::TXS_WILDCARD.into()).await?;
        let heads = bus.subscribe(wire::HEADS_WILDCARD.into()).await?;
        let any = bus.subscribe(wire::SYNC_WILDCARD.into()).await?;
        let own = bus.subscribe(wire::own_sync_wildcard(node)).await?;
        bus.flush().await?;
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
    Txs(BusMessage),
    Heads(BusMessage),
    Sync(BusMessage),
}

impl Message for Incoming {
    type Result = ();
}

/// What a `ctx.join` with `wait` is told once the catch-up is over.
pub(crate) type Waiter = oneshot::Sender<Result<StatusReply, Arc<ReplicationError>>>;

/// A context this node replicates (or is joining).
pub(crate) struct Tracked {
    pub(crate) phase: Phase,
    pub(crate) syncing: bool,
    /// Another catch-up was asked for while one ran: from this member (or any).
    again: Option<Option<Address>>,
    pub(crate) waiting: HashMap<Address, VecDeque<VerifiedTx>>,
    pub(crate) progress: Progress,
    started: Option<Instant>,
    elapsed: Option<Duration>,
    peer: Option<Address>,
    pub(crate) error: Option<Arc<ReplicationError>>,
    pub(crate) invalid: u64,
    pub(crate) dropped: u64,
    /// Catch-ups started, and received transactions that had to wait for parents.
    catch_ups: u64,
    pub(crate) parked: u64,
    /// Fires once the last broadcast batch received was handed to the state actor.
    pub(crate) last_turn: Option<oneshot::Receiver<()>>,
    /// Told when the running catch-up is over.
    pub(crate) waiters: Vec<Waiter>,
}

impl Tracked {
    pub(crate) fn new(phase: Phase) -> Tracked {
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
            waiters: Vec::new(),
        }
    }

    fn waiting_count(&self) -> u64 {
        self.waiting.values().map(|q| q.len() as u64).sum()
    }

    /// The status as the replicator knows it (without the local root).
    pub(crate) fn status(&self, context: Id) -> StatusReply {
        let elapsed = self
            .elapsed
            .or_else(|| self.started.map(|s| s.elapsed()))
            .map_or(0.0, |d| d.as_secs_f64());
        StatusReply {
            context,
            phase: self.phase,
            fetched: self.progress.fetched,
            expected: self.progress.expected,
            rate: if elapsed > 0.0 {
                self.progress.fetched as f64 / elapsed
            } else {
                0.0
            },
            peer: self.peer,
            error: self.error.as_ref().map(|e| e.to_string()),
            invalid: self.invalid,
            dropped: self.dropped,
            waiting: self.waiting_count(),
            catch_ups: self.catch_ups,
            parked: self.parked,
            applied: None,
            root: None,
            heads: None,
        }
    }
}

pub struct Replicator {
    pub(crate) link: Link,
    subscriptions: Option<Subscriptions>,
    pub(crate) contexts: HashMap<Id, Tracked>,
}

impl Replicator {
    pub fn new(link: Link, subscriptions: Subscriptions) -> Replicator {
        Replicator {
            link,
            subscriptions: Some(subscriptions),
            contexts: HashMap::new(),
        }
    }

    /// Starts a catch-up of `context` from `member` (any if `None`), or queues one
    /// behind the one running. A failed join stays failed until `ctx.join` is asked
    /// again: a catch-up of a context this node may hold only in part would end
    /// `in-sync` (or, holding nothing, fail as not held) and hide the failure.
    pub(crate) fn catch_up(&mut self, context: Id, member: Option<Address>, ctx: &mut Context<Self>) {
        let Some(tracked) = self.contexts.get_mut(&context) else {
            return;
        };
        if tracked.phase == Phase::Failed {
            return;
        }
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
        let run = tracked.catch_ups;
        let work = async move {
            let report = move |progress: Progress| me.do_send(Reported { context, run, progress });
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
                tracing::info!(%context, peer = %outcome.peer, fetched = outcome.progress.fetched, added = outcome.added, "caught up");
                tracked.peer = Some(outcome.peer);
                // Progress reports may still be on their way.
                tracked.progress = outcome.progress;
                tracked.phase = Phase::InSync;
            }
            // Alone: nobody else online to catch up from.
            Err(ReplicationError::NoMember(why)) if tracked.phase != Phase::Joining => {
                tracing::debug!(%context, %why, "no member to catch up from");
                tracked.phase = Phase::InSync;
            }
            Err(e) => {
                tracing::warn!(%context, error = %e, "catch-up failed");
                tracked.error = Some(Arc::new(e));
                tracked.phase = if tracked.phase == Phase::Joining {
                    Phase::Failed
                } else {
                    Phase::InSync
                };
            }
        }
        let answer = match (&tracked.error, tracked.phase) {
            (Some(error), Phase::Failed) => Err(error.clone()),
            _ => Ok(tracked.status(context)),
        };
        for waiter in tracked.waiters.drain(..) {
            let _ = waiter.send(answer.clone());
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
                    if let Err(e) = link.bus.publish(wire::heads_subject(&context), payload.into()).await {
                        tracing::debug!(error = %e, "could not publish heads");
                    }
                }
            }
            .into_actor(self),
        );
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
        ctx.run_interval(self.link.settings.gossip_every, |act, ctx| act.gossip(ctx));
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
        let bus = self.link.bus.clone();
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
                    if let Err(e) = bus.publish(subject.clone(), payload).await {
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
    /// Which catch-up (`Tracked::catch_ups` when it started): a late report of an
    /// earlier one is ignored.
    run: u64,
    progress: Progress,
}

impl Handler<Reported> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: Reported, _: &mut Context<Self>) {
        if let Some(tracked) = self.contexts.get_mut(&msg.context) {
            if tracked.catch_ups == msg.run {
                tracked.progress = msg.progress;
            }
        }
    }
}
