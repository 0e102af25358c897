//! How nodes learn each other: each node publishes its signed announcement on
//! `cmesh.announce` when it starts and every 30 s, and answers a newcomer's with its own,
//! so the newcomer learns it at once. IAM checks each announcement (`PeerAnnounced`) and
//! keeps the keys it uses to verify other nodes' tokens and signatures. The NATS side
//! lives here, beside the actor, so the node's wiring only starts it.

use std::future::Future;
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use futures::StreamExt;

use crate::actor::IamActor;
use crate::messages::{OwnAnnouncement, PeerAnnounced};
use crate::peers::Announcement;

pub const ANNOUNCE_SUBJECT: &str = "cmesh.announce";
/// How often a node says again that it is there.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);

/// Publishes this node's announcement (freshly signed by IAM) on `cmesh.announce`.
pub async fn publish_own(client: &async_nats::Client, iam: &Addr<IamActor>) {
    match iam.send(OwnAnnouncement).await {
        Ok(announcement) => match serde_json::to_vec(&announcement) {
            Ok(bytes) => {
                if let Err(e) = client.publish(ANNOUNCE_SUBJECT, Bytes::from(bytes)).await {
                    tracing::warn!(error = %e, "could not announce this node");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not encode the announcement"),
        },
        Err(e) => tracing::warn!(error = %e, "IAM gone; cannot announce"),
    }
}

/// Subscribes to announcements and announces this node (once the subscription is in
/// place, so no answer is missed); returns the loop that keeps learning nodes, to be
/// spawned by the caller.
pub async fn discovery(
    client: async_nats::Client,
    iam: Addr<IamActor>,
) -> Result<impl Future<Output = ()>, DiscoveryError> {
    let mut subscriber = client.subscribe(ANNOUNCE_SUBJECT).await?;
    client.flush().await?;
    publish_own(&client, &iam).await;
    Ok(async move {
        let mut ticker = tokio::time::interval(ANNOUNCE_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                message = subscriber.next() => {
                    let Some(message) = message else { break };
                    let Ok(announcement) = serde_json::from_slice::<Announcement>(&message.payload) else {
                        tracing::debug!("ignored a malformed announcement");
                        continue;
                    };
                    match iam.send(PeerAnnounced(announcement)).await {
                        Ok(Ok(Some(_))) => publish_own(&client, &iam).await,
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e.message, "ignored an announcement"),
                        Err(_) => break,
                    }
                }
                _ = ticker.tick() => publish_own(&client, &iam).await,
            }
        }
    })
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("subscribing to {ANNOUNCE_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("flushing the {ANNOUNCE_SUBJECT} subscription: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}
