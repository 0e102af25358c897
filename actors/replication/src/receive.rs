//! What the replicator hears from the bus: other members' batches (checked, handed over
//! in their turn, parked while their parents are fetched), heads notices (a catch-up if
//! this node still lacks some a moment later), and sync requests (answered by
//! `responder.rs`).

use actix::prelude::*;
use cmesh_common::Address;
use cmesh_state::tx::VerifiedTx;
use cmesh_state::{Id, Lacking};

use crate::actor::{Replicator, WAITING_PER_AUTHOR};
use crate::bus::BusMessage;
use crate::messages::Phase;
use crate::sync::{Delivered, Turn};
use crate::verify::Rejected;
use crate::wire::{self, HeadsNotice, TxBatch};

impl Replicator {
    pub(crate) fn on_txs(&mut self, message: BusMessage, ctx: &mut Context<Self>) {
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
                let rejected = Rejected {
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
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| match result {
            Ok(delivered) => act.received(context, delivered, ctx),
            Err(e) => tracing::warn!(%context, error = %e, "could not take received transactions"),
        }));
    }

    /// Counts what a received batch brought; parks what waits for parents and catches
    /// up from its authors.
    fn received(&mut self, context: Id, delivered: Delivered, ctx: &mut Context<Self>) {
        let Some(tracked) = self.contexts.get_mut(&context) else {
            return;
        };
        tracked.invalid += (delivered.rejected.len() + delivered.report.invalid.len()) as u64;
        if delivered.waiting.is_empty() {
            return;
        }
        tracked.parked += delivered.waiting.len() as u64;
        let mut authors: Vec<Address> = Vec::new();
        for tx in delivered.waiting.into_values() {
            let author = tx.tx().body.author;
            park(&mut tracked.waiting, &mut tracked.dropped, author, tx);
            if !authors.contains(&author) {
                authors.push(author);
            }
        }
        for author in authors {
            self.catch_up(context, Some(author), ctx);
        }
    }

    pub(crate) fn on_heads(&mut self, message: BusMessage, ctx: &mut Context<Self>) {
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
    /// (`first`), heads still lacking are checked once more after the heads grace
    /// (`Settings::heads_grace`): under load most are broadcasts on their way, and
    /// fetching them would be wasted work.
    fn check_heads(&mut self, context: Id, node: Address, heads: Vec<Id>, first: bool, ctx: &mut Context<Self>) {
        let state = self.link.state.clone();
        let grace = self.link.settings.heads_grace;
        let lacking = async move { state.send(Lacking { context, ids: heads }).await };
        ctx.spawn(lacking.into_actor(self).map(move |result, act, ctx| {
            let Ok(Ok(lacking)) = result else { return };
            if lacking.is_empty() {
                return;
            }
            if first {
                ctx.run_later(grace, move |act, ctx| {
                    act.check_heads(context, node, lacking, false, ctx)
                });
            } else {
                tracing::debug!(%context, from = %node, lacking = lacking.len(), "heads this node lacks");
                act.catch_up(context, Some(node), ctx);
            }
        }));
    }

    pub(crate) fn on_sync(&mut self, message: BusMessage, ctx: &mut Context<Self>) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let link = self.link.clone();
        ctx.spawn(
            async move {
                if let Some(answer) = crate::responder::answer(&link, &message.subject, &message.payload).await {
                    if let Err(e) = link.bus.respond(reply, answer).await {
                        tracing::debug!(error = %e, "could not answer a sync request");
                    }
                }
            }
            .into_actor(self),
        );
    }

    fn published_here(&self, message: &BusMessage) -> bool {
        message
            .node
            .as_deref()
            .is_some_and(|node| node == self.link.node().to_string())
    }
}

/// Keeps `tx` until its parents are fetched, dropping its author's oldest past
/// [`WAITING_PER_AUTHOR`].
fn park(
    waiting: &mut std::collections::HashMap<Address, std::collections::VecDeque<VerifiedTx>>,
    dropped: &mut u64,
    author: Address,
    tx: VerifiedTx,
) {
    let queue = waiting.entry(author).or_default();
    if queue.len() == WAITING_PER_AUTHOR {
        queue.pop_front();
        *dropped += 1;
    }
    queue.push_back(tx);
}
