//! The NATS front door: subscribes the endpoint subjects (queue group `cmesh`), hands each
//! request to the router actor, and answers with CMTP headers in the encoding the client
//! asked for. It only does I/O; decoding, authentication and dispatch happen behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, CmtpError, Status};
use cmesh_events::{AuditAppend, Emit, EventsActor, Record};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;

use crate::micro::{reply_headers, EndpointSpec, Micro};
use crate::request::{Encoding, Endpoint, Inbound, Reply, FORWARDED_HEADER};
use crate::router::{Route, RouterActor};

pub const QUEUE_GROUP: &str = "cmesh";
/// Default cap on a request's payload; larger ones get 413.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The front-door endpoints, in the order `Micro` counts them.
pub fn endpoint_specs(node: &Address) -> Vec<(EndpointSpec, Endpoint)> {
    let spec = |name: &str, subject: String| EndpointSpec {
        name: name.to_string(),
        subject,
        queue_group: QUEUE_GROUP.to_string(),
        metadata: HashMap::new(),
    };
    vec![
        (spec("fqmn", "cmesh.fqmn".into()), Endpoint::Fqmn),
        (spec("rpc", "cmesh.rpc".into()), Endpoint::Rpc),
        (spec("node-fqmn", format!("cmesh.node.{node}.fqmn")), Endpoint::Fqmn),
        (spec("node-rpc", format!("cmesh.node.{node}.rpc")), Endpoint::Rpc),
    ]
}

struct Shared {
    client: async_nats::Client,
    router: Addr<RouterActor>,
    events: Addr<EventsActor>,
    micro: Micro,
    max_payload: usize,
    in_flight: AtomicUsize,
}

/// The running front door. `stop` unsubscribes; `wait_idle` waits for requests in flight.
pub struct Gateway {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Subscribes every endpoint and starts serving on the current actix arbiter.
    pub async fn start(
        client: async_nats::Client,
        router: Addr<RouterActor>,
        events: Addr<EventsActor>,
        micro: Micro,
        endpoints: Vec<(EndpointSpec, Endpoint)>,
        max_payload: usize,
    ) -> Result<Gateway, async_nats::SubscribeError> {
        let shared = Arc::new(Shared {
            client,
            router,
            events,
            micro,
            max_payload,
            in_flight: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let mut loops = Vec::new();
        for (index, (spec, kind)) in endpoints.into_iter().enumerate() {
            let subscriber = shared
                .client
                .queue_subscribe(spec.subject.clone(), spec.queue_group.clone())
                .await?;
            loops.push(actix::spawn(serve_endpoint(
                shared.clone(),
                subscriber,
                index,
                kind,
                stopped.clone(),
            )));
        }
        Ok(Gateway { shared, stop, loops })
    }

    /// Stops taking requests: unsubscribes every endpoint.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for handle in self.loops.drain(..) {
            let _ = handle.await;
        }
    }

    /// Waits until no request is in flight, or `limit` passes. True when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.shared.in_flight.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

async fn serve_endpoint(
    shared: Arc<Shared>,
    mut subscriber: async_nats::Subscriber,
    index: usize,
    kind: Endpoint,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => {
                    shared.in_flight.fetch_add(1, Ordering::AcqRel);
                    actix::spawn(serve_one(shared.clone(), message, index, kind));
                }
                None => break,
            },
            _ = stopped.changed() => {
                let _ = subscriber.unsubscribe().await;
                break;
            }
        }
    }
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn bearer_of(message: &async_nats::Message) -> Option<String> {
    let value = header(message, "Authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

async fn serve_one(shared: Arc<Shared>, message: async_nats::Message, index: usize, kind: Endpoint) {
    let started = Instant::now();
    let Some(reply_to) = message.reply.clone() else {
        // Nobody to answer: a plain publish on a request subject is ignored.
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        return;
    };
    let encoding = Encoding::from_header(header(&message, "Content-Type"));
    let answer_in = match header(&message, "Accept") {
        Some(accept) => Encoding::from_header(Some(accept)),
        None => encoding,
    };
    let received = Emit::new(
        "router",
        "received",
        Vec::new(),
        json!({ "endpoint": kind_name(kind), "bytes": message.payload.len(), "at": unix_millis() }),
    );
    let reply = if message.payload.len() > shared.max_payload {
        let error = CmtpError::new(
            Status::PAYLOAD_TOO_LARGE,
            format!(
                "request of {} bytes is over this node's limit of {} bytes",
                message.payload.len(),
                shared.max_payload
            ),
        );
        match kind {
            Endpoint::Fqmn => Reply::error(&error),
            Endpoint::Rpc => Reply {
                status: error.status,
                body: json!(cmesh_common::rpc::RpcResponse::failure(serde_json::Value::Null, &error)),
                error: Some(error.message.clone()),
                events: Vec::new(),
            },
        }
    } else {
        let inbound = Inbound {
            endpoint: kind,
            payload: message.payload.clone(),
            encoding,
            bearer: bearer_of(&message),
            forwarded: header(&message, FORWARDED_HEADER).is_some(),
        };
        match shared.router.send(Route(inbound)).await {
            Ok(reply) => reply,
            Err(e) => Reply::error(&CmtpError::unavailable(format!("the router is unavailable: {e}"))),
        }
    };
    let body = answer_in.encode(&reply.body);
    let headers = reply_headers(reply.status.0, answer_in.content_type(), reply.error.as_deref());
    if let Err(e) = shared
        .client
        .publish_with_headers(reply_to, headers, body.clone())
        .await
    {
        tracing::warn!(error = %e, "could not send a reply");
    }
    let elapsed = started.elapsed();
    shared
        .micro
        .record(index, elapsed, reply.error.as_deref().map(|m| (m, reply.status.0)));
    // The request's lifecycle events and its audit entry go to the events actor in one
    // message: one wake-up of its thread per request.
    let answered = Emit::new(
        "router",
        "answered",
        Vec::new(),
        json!({ "endpoint": kind_name(kind), "status": reply.status.0, "duration_us": elapsed.as_micros() as u64 }),
    );
    let mut events = Vec::with_capacity(reply.events.len() + 2);
    events.push(received);
    events.extend(reply.events);
    events.push(answered);
    let audit = AuditAppend {
        request: message.payload,
        response: body,
        status: reply.status.0,
    };
    shared.events.do_send(Record {
        events,
        audit: Some(audit),
    });
    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
}

fn kind_name(kind: Endpoint) -> &'static str {
    match kind {
        Endpoint::Fqmn => "fqmn",
        Endpoint::Rpc => "rpc",
    }
}
