//! What `bench replicate` observed: when each transaction was sent, answered, and applied
//! at each member (from the `state.received` events the members publish), and what
//! settling the received ones cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmesh_common::Address;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::round;

/// How long transactions may take to reach every member once the load stops.
pub(super) const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// When each transaction was sent, acknowledged, and applied at each member.
#[derive(Default)]
pub(super) struct Ledger {
    /// tx id → (sent, members that applied it, when the last did).
    pub(super) txs: HashMap<String, Seen>,
    /// Sums over the `state.received` events: where a member's time goes when a
    /// received transaction sorts before ones it had applied.
    settling: Settling,
}

/// Transactions received, and what settling them cost: transactions undone and applied
/// again (a received one that sorts last costs one application and no undo).
#[derive(Clone, Copy, Default)]
pub(super) struct Settling {
    settles: u64,
    added: u64,
    undone: u64,
    applied: u64,
}

impl Settling {
    pub(super) fn since(self, before: Settling) -> Value {
        let added = self.added - before.added;
        let per_added = |n: u64| round(n as f64 / added.max(1) as f64, 2);
        json!({
            "settles": self.settles - before.settles,
            "received": added,
            "undone_per_received": per_added(self.undone - before.undone),
            "applied_per_received": per_added(self.applied - before.applied),
        })
    }
}

#[derive(Clone, Default)]
pub(super) struct Seen {
    pub(super) sent: Option<Instant>,
    /// When the author answered.
    pub(super) answered: Option<Instant>,
    applied_at: Vec<(Address, Instant)>,
}

impl Ledger {
    pub(super) fn applied(&mut self, tx: String, member: Address, at: Instant) {
        let seen = self.txs.entry(tx).or_default();
        if !seen.applied_at.iter().any(|(m, _)| *m == member) {
            seen.applied_at.push((member, at));
        }
    }

    /// When every member had applied `tx`, if all have.
    pub(super) fn everywhere(&self, tx: &str, members: usize) -> Option<Instant> {
        let seen = self.txs.get(tx)?;
        (seen.applied_at.len() >= members).then(|| seen.applied_at.iter().map(|(_, at)| *at).max())?
    }
}

/// Follows every member's `state.received` events into the ledger.
pub(super) async fn follow_events(events: async_nats::Subscriber, ledger: Arc<Mutex<Ledger>>) {
    let mut events = events;
    while let Some(message) = events.next().await {
        let at = Instant::now();
        let Ok(envelope) = serde_json::from_slice::<Value>(&message.payload) else {
            continue;
        };
        let Some(node) = envelope["node"].as_str().and_then(|n| n.parse::<Address>().ok()) else {
            continue;
        };
        let Some(txs) = envelope["data"]["txs"].as_array() else {
            continue;
        };
        let count = |field: &str| envelope["data"][field].as_u64().unwrap_or(0);
        let Ok(mut ledger) = ledger.lock() else { return };
        ledger.settling.settles += 1;
        ledger.settling.added += count("added");
        ledger.settling.undone += count("undone");
        ledger.settling.applied += count("applied");
        for tx in txs.iter().filter_map(Value::as_str) {
            ledger.applied(tx.to_string(), node, at);
        }
    }
}

/// Records a write this node made: the author applied it when it answered.
pub(super) fn acknowledged(ledger: &Mutex<Ledger>, tx: String, author: Address, sent: Instant, at: Instant) {
    if let Ok(mut ledger) = ledger.lock() {
        ledger.applied(tx.clone(), author, at);
        if let Some(seen) = ledger.txs.get_mut(&tx) {
            seen.sent = Some(sent);
            seen.answered = Some(at);
        }
    }
}

/// Waits until every transaction in `txs` is applied on `members` members; the instant
/// the last one was, and how many never got everywhere.
pub(super) async fn settle(ledger: &Mutex<Ledger>, txs: &[String], members: usize) -> (Option<Instant>, usize) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let (last, missing) = {
            let Ok(ledger) = ledger.lock() else {
                return (None, txs.len());
            };
            let mut last: Option<Instant> = None;
            let mut missing = 0;
            for tx in txs {
                match ledger.everywhere(tx, members) {
                    Some(at) => last = Some(last.map_or(at, |l| l.max(at))),
                    None => missing += 1,
                }
            }
            (last, missing)
        };
        if missing == 0 || Instant::now() > deadline {
            return (last, missing);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) fn settling_of(ledger: &Mutex<Ledger>) -> anyhow::Result<Settling> {
    Ok(ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?.settling)
}
