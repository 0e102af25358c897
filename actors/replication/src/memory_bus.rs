//! An in-process bus, for tests (this crate's and, later, other crates'): the nodes of a
//! [`MemoryNetwork`] talk through it as through one NATS server, with nothing to start.
//!
//! It really delivers: subjects match as on NATS (`*` one token, `>` one or more), every
//! subscriber of a subject gets its own copy (the publisher too), requests are answered
//! through inboxes, and a request nobody listens to fails at once with no responders.
//! Delivery is at most once, as on core NATS.
//!
//! A test makes the network misbehave with [`Fault`]s (drop, delay, duplicate, reorder
//! or hold messages, chosen by subject, publishing node and receiving node) and can cut
//! a node off entirely ([`MemoryNetwork::cut`]). A fault acts on deliveries: one message
//! to one subscriber.
//!
//! Not for nodes: they talk over NATS ([`crate::nats_bus::NatsBus`]).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cmesh_common::Address;
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::sync::Notify;

use crate::bus::{Bus, BusError, BusMessage, Subscription};

/// What a [`Fault`] does to the deliveries it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// They are lost.
    Drop,
    /// They arrive this much later (so later messages overtake them).
    Delay(Duration),
    /// They arrive twice.
    Duplicate,
    /// They are held `n` at a time, then delivered newest first.
    Reorder(usize),
    /// They are held until the fault is removed, then delivered in the order held.
    Hold,
}

/// A misbehaviour of the network: `action` on the deliveries of messages whose subject
/// matches `subjects` (wildcards allowed), optionally only those published by one node
/// or to one node, after the first `skip` of them, at most `times` of them.
#[derive(Debug, Clone)]
pub struct Fault {
    subjects: String,
    action: Action,
    from: Option<Address>,
    to: Option<Address>,
    skip: usize,
    times: Option<usize>,
}

impl Fault {
    pub fn new(subjects: impl Into<String>, action: Action) -> Fault {
        Fault {
            subjects: subjects.into(),
            action,
            from: None,
            to: None,
            skip: 0,
            times: None,
        }
    }

    /// Only messages `node` publishes (answers included).
    pub fn from(mut self, node: Address) -> Fault {
        self.from = Some(node);
        self
    }

    /// Only deliveries to `node`.
    pub fn to(mut self, node: Address) -> Fault {
        self.to = Some(node);
        self
    }

    /// Lets the first `count` matching deliveries through untouched.
    pub fn skip(mut self, count: usize) -> Fault {
        self.skip = count;
        self
    }

    /// Acts on at most `count` deliveries, then lets everything through.
    pub fn times(mut self, count: usize) -> Fault {
        self.times = Some(count);
        self
    }

    fn picks(&self, subject: &str, from: &Address, to: &Address) -> bool {
        matches(&self.subjects, subject)
            && self.from.is_none_or(|node| node == *from)
            && self.to.is_none_or(|node| node == *to)
    }
}

/// A fault installed on a network, to wait on or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

/// Whether `subject` matches `pattern`, as NATS matches them.
fn matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

type Outbox = UnboundedSender<BusMessage>;

struct Subscriber {
    id: u64,
    node: Address,
    subject: String,
    outbox: Outbox,
}

struct Installed {
    id: FaultId,
    fault: Fault,
    seen: usize,
    acted: usize,
    held: Vec<Delivery>,
}

/// One message on its way to one subscriber.
struct Delivery {
    to: Address,
    outbox: Outbox,
    message: BusMessage,
}

impl Delivery {
    /// Hands the message over, unless its receiver was cut off while it was on its way.
    fn arrive(self, cut: &HashSet<Address>) {
        if !cut.contains(&self.to) {
            let _ = self.outbox.unbounded_send(self.message);
        }
    }
}

impl Installed {
    fn done(&self) -> bool {
        self.fault.times.is_some_and(|times| self.acted >= times)
    }
}

#[derive(Default)]
struct Network {
    subscribers: Vec<Subscriber>,
    faults: Vec<Installed>,
    cut: HashSet<Address>,
    published: HashMap<String, u64>,
    next_id: u64,
}

#[derive(Default)]
struct Shared {
    network: Mutex<Network>,
    /// Fires whenever a fault acts.
    acted: Notify,
}

/// The nodes of one test and what lies between them.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    shared: Arc<Shared>,
}

/// How a publication went.
enum Sent {
    /// To this many subscribers (before faults).
    To(usize),
    /// The publisher is cut off.
    Lost,
}

impl MemoryNetwork {
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    /// `node`'s connection.
    pub fn connect(&self, node: Address) -> MemoryBus {
        MemoryBus {
            network: self.clone(),
            node,
        }
    }

    pub fn inject(&self, fault: Fault) -> FaultId {
        let mut network = self.lock();
        network.next_id += 1;
        let id = FaultId(network.next_id);
        network.faults.push(Installed {
            id,
            fault,
            seen: 0,
            acted: 0,
            held: Vec::new(),
        });
        id
    }

    /// Removes a fault; what it held is delivered, in the order it was held (but not to
    /// nodes cut off meanwhile).
    pub fn remove(&self, id: FaultId) {
        let mut network = self.lock();
        let Some(at) = network.faults.iter().position(|f| f.id == id) else {
            return;
        };
        let removed = network.faults.remove(at);
        for delivery in removed.held {
            delivery.arrive(&network.cut);
        }
    }

    /// Waits until fault `id` has acted on `count` deliveries (or is removed).
    pub async fn acted(&self, id: FaultId, count: usize) {
        loop {
            let notified = self.shared.acted.notified();
            {
                let network = self.lock();
                match network.faults.iter().find(|f| f.id == id) {
                    Some(installed) if installed.acted < count => {}
                    _ => return,
                }
            }
            notified.await;
        }
    }

    /// Cuts `node` off: what it publishes is lost, and nothing reaches it, until
    /// [`MemoryNetwork::restore`]. Its subscriptions stay (a NATS client subscribes
    /// again when it reconnects).
    pub fn cut(&self, node: Address) {
        self.lock().cut.insert(node);
    }

    pub fn restore(&self, node: Address) {
        self.lock().cut.remove(&node);
    }

    /// How many messages were published on subjects matching `pattern`.
    pub fn published(&self, pattern: &str) -> u64 {
        self.lock()
            .published
            .iter()
            .filter(|(subject, _)| matches(pattern, subject))
            .map(|(_, count)| count)
            .sum()
    }

    fn lock(&self) -> MutexGuard<'_, Network> {
        // A test that panicked while holding the lock has failed already.
        self.shared
            .network
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn subscribe(&self, node: Address, subject: String) -> MemorySubscription {
        let (outbox, inbox) = unbounded();
        let mut network = self.lock();
        network.next_id += 1;
        let id = network.next_id;
        network.subscribers.push(Subscriber {
            id,
            node,
            subject,
            outbox,
        });
        MemorySubscription {
            id,
            inbox,
            network: self.clone(),
        }
    }

    fn send(&self, from: Address, message: BusMessage) -> Sent {
        let mut network = self.lock();
        *network.published.entry(message.subject.clone()).or_default() += 1;
        if network.cut.contains(&from) {
            return Sent::Lost;
        }
        let deliveries: Vec<Delivery> = network
            .subscribers
            .iter()
            .filter(|s| !network.cut.contains(&s.node) && matches(&s.subject, &message.subject))
            .map(|s| Delivery {
                to: s.node,
                outbox: s.outbox.clone(),
                message: message.clone(),
            })
            .collect();
        let count = deliveries.len();
        let mut acted = false;
        for delivery in deliveries {
            acted |= self.deliver(&mut network, &from, delivery);
        }
        drop(network);
        if acted {
            self.shared.acted.notify_waiters();
        }
        Sent::To(count)
    }

    /// Delivers through the first fault that acts on the delivery; answers whether one
    /// did.
    fn deliver(&self, network: &mut Network, from: &Address, delivery: Delivery) -> bool {
        let Network { faults, cut, .. } = network;
        let mut picked = None;
        for installed in faults.iter_mut() {
            if installed.done() || !installed.fault.picks(&delivery.message.subject, from, &delivery.to) {
                continue;
            }
            installed.seen += 1;
            if installed.seen > installed.fault.skip {
                picked = Some(installed);
                break;
            }
        }
        let Some(installed) = picked else {
            delivery.arrive(cut);
            return false;
        };
        installed.acted += 1;
        match installed.fault.action {
            Action::Drop => {}
            Action::Duplicate => {
                let _ = delivery.outbox.unbounded_send(delivery.message.clone());
                delivery.arrive(cut);
            }
            Action::Delay(delay) => {
                let network = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    delivery.arrive(&network.lock().cut);
                });
            }
            Action::Hold => installed.held.push(delivery),
            Action::Reorder(n) => {
                installed.held.push(delivery);
                if installed.held.len() >= n.max(1) || installed.done() {
                    for delivery in installed.held.drain(..).rev() {
                        delivery.arrive(cut);
                    }
                }
            }
        }
        true
    }
}

/// A node's connection to a [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryBus {
    network: MemoryNetwork,
    node: Address,
}

impl MemoryBus {
    fn send(&self, subject: String, reply: Option<String>, node: Option<String>, payload: Bytes) -> Sent {
        let message = BusMessage {
            subject,
            reply,
            node,
            payload,
        };
        self.network.send(self.node, message)
    }
}

impl Bus for MemoryBus {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        self.send(subject, None, Some(self.node.to_string()), payload);
        Box::pin(async { Ok(()) })
    }

    fn publish_request(&self, subject: String, reply: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        self.send(subject, Some(reply), None, payload);
        Box::pin(async { Ok(()) })
    }

    fn respond(&self, reply: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        self.send(reply, None, None, payload);
        Box::pin(async { Ok(()) })
    }

    fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BusMessage, BusError>> {
        Box::pin(async move {
            let inbox = self.new_inbox();
            let mut answers = self.network.subscribe(self.node, inbox.clone());
            if let Sent::To(0) = self.send(subject.clone(), Some(inbox), None, payload) {
                return Err(BusError::NoResponders(subject));
            }
            match tokio::time::timeout(timeout, answers.next()).await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) | Err(_) => Err(BusError::TimedOut(timeout)),
            }
        })
    }

    fn new_inbox(&self) -> String {
        let mut network = self.network.lock();
        network.next_id += 1;
        format!("_INBOX.{}", network.next_id)
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>> {
        let subscription = self.network.subscribe(self.node, subject);
        Box::pin(async move { Ok(Box::pin(subscription) as Subscription) })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        // Publishing hands every message to its subscribers at once.
        Box::pin(async { Ok(()) })
    }
}

/// A subscription; dropped, it stops receiving.
struct MemorySubscription {
    id: u64,
    inbox: UnboundedReceiver<BusMessage>,
    network: MemoryNetwork,
}

impl Stream for MemorySubscription {
    type Item = BusMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BusMessage>> {
        self.inbox.poll_next_unpin(cx)
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        let id = self.id;
        self.network.lock().subscribers.retain(|s| s.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_as_on_nats() {
        assert!(matches("cmesh.ctx.*.txs", "cmesh.ctx.0xab.txs"));
        assert!(!matches("cmesh.ctx.*.txs", "cmesh.ctx.0xab.heads"));
        assert!(!matches("cmesh.ctx.*.sync", "cmesh.ctx.0xab.sync.0xcd"));
        assert!(matches("cmesh.ctx.*.sync.0xcd", "cmesh.ctx.0xab.sync.0xcd"));
        assert!(matches("cmesh.>", "cmesh.ctx.0xab.sync.0xcd"));
        assert!(!matches("cmesh.>", "cmesh"), "`>` takes at least one token");
        assert!(!matches("cmesh.*", "cmesh.ctx.x"));
        assert!(matches("_INBOX.7", "_INBOX.7"));
    }
}
