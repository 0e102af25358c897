//! The message bus the replicator talks over, behind a small trait: NATS on a node
//! ([`crate::nats_bus::NatsBus`]), an in-process bus in tests
//! ([`crate::memory_bus::MemoryBus`]). Catch-up, parking and the ordering of received
//! batches can then be tested with real state actors while messages are dropped,
//! delayed, duplicated or reordered on purpose, without a NATS server.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;

use crate::settings::span;

/// A message as the replicator reads it.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub subject: String,
    /// Where an answer goes (requests).
    pub reply: Option<String>,
    /// The node that published it, as [`Bus::publish`] says (`wire::NODE_HEADER` on
    /// NATS); `None` for requests and answers.
    pub node: Option<String>,
    pub payload: Bytes,
}

/// The messages on the subjects subscribed to; the subscription ends when dropped.
pub type Subscription = Pin<Box<dyn Stream<Item = BusMessage> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Somebody listens on the subject, but no answer came in time.
    #[error("no answer within {}", span(*.0))]
    TimedOut(Duration),
    /// Nobody listens on the subject.
    #[error("nobody listens on {0}")]
    NoResponders(String),
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
}

/// What async-nats said, kept whole.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("publishing: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("requesting: {0}")]
    Request(#[from] async_nats::RequestError),
    #[error("subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("flushing: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// One node's connection to the bus. Delivery is at most once, as on core NATS; a node
/// receives its own publications too.
pub trait Bus: Send + Sync {
    /// Publishes to every subscriber of `subject`, saying which node published it
    /// ([`BusMessage::node`]).
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>>;

    /// Publishes `payload` as a request whose answers go to `reply` (an inbox this node
    /// subscribed to): for asking every member at once.
    fn publish_request(&self, subject: String, reply: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>>;

    /// Answers a request on its reply subject.
    fn respond(&self, reply: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>>;

    /// Asks whoever listens on `subject` and waits at most `timeout` for the first answer;
    /// [`BusError::NoResponders`] at once if nobody listens.
    fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BusMessage, BusError>>;

    /// A subject nobody else uses, for answers.
    fn new_inbox(&self) -> String;

    /// The messages on `subject` (wildcards `*` for one token, `>` for the rest).
    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>>;

    /// Returns once everything published so far has left this node.
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>>;
}
