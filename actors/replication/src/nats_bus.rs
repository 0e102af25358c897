//! The bus of a node: core NATS through async-nats. Publications carry the
//! `Cmesh-Node` header, so a node skips its own without decoding them.

use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use cmesh_common::Address;
use futures::future::BoxFuture;
use futures::StreamExt;

use crate::bus::{Bus, BusError, BusMessage, NatsError, Subscription};
use crate::wire::NODE_HEADER;

pub struct NatsBus {
    client: async_nats::Client,
    headers: HeaderMap,
}

impl NatsBus {
    /// The bus of `node` over `client`.
    pub fn new(client: async_nats::Client, node: &Address) -> NatsBus {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, node.to_string().as_str());
        NatsBus { client, headers }
    }
}

fn received(message: async_nats::Message) -> BusMessage {
    BusMessage {
        node: message
            .headers
            .as_ref()
            .and_then(|h| h.get(NODE_HEADER))
            .map(|v| v.as_str().to_string()),
        subject: message.subject.to_string(),
        reply: message.reply.map(|r| r.to_string()),
        payload: message.payload,
    }
}

impl Bus for NatsBus {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.client
                .publish_with_headers(subject, self.headers.clone(), payload)
                .await
                .map_err(|e| BusError::Nats(NatsError::Publish(e)))
        })
    }

    fn publish_request(&self, subject: String, reply: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.client
                .publish_with_reply(subject, reply, payload)
                .await
                .map_err(|e| BusError::Nats(NatsError::Publish(e)))
        })
    }

    fn respond(&self, reply: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.client
                .publish(reply, payload)
                .await
                .map_err(|e| BusError::Nats(NatsError::Publish(e)))
        })
    }

    fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BusMessage, BusError>> {
        Box::pin(async move {
            let request = self.client.request(subject.clone(), payload);
            match tokio::time::timeout(timeout, request).await {
                Err(_) => Err(BusError::TimedOut(timeout)),
                Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Err(BusError::NoResponders(subject)),
                Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => Err(BusError::TimedOut(timeout)),
                Ok(Err(e)) => Err(BusError::Nats(NatsError::Request(e))),
                Ok(Ok(message)) => Ok(received(message)),
            }
        })
    }

    fn new_inbox(&self) -> String {
        self.client.new_inbox()
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>> {
        Box::pin(async move {
            let subscriber = self
                .client
                .subscribe(subject)
                .await
                .map_err(|e| BusError::Nats(NatsError::Subscribe(e)))?;
            Ok(Box::pin(subscriber.map(received)) as Subscription)
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.client
                .flush()
                .await
                .map_err(|e| BusError::Nats(NatsError::Flush(e)))
        })
    }
}
