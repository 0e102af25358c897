//! The events actor against a real nats-server: what it publishes, what it accepts from
//! other nodes, and the audit chain it persists and publishes.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use cmesh_common::{keccak256, Address};
use cmesh_events::{
    audit_subject, verify_chain, AuditAppend, AuditRecord, Emit, EmitApp, EventEnvelope, EventsActor, EventsConfig,
    EventsError, Flush, Ready, Recent, Shutdown, Stats, VerifyAudit, AUDIT_FILE,
};
use cmesh_testkit::NatsServer;

const PATIENCE: Duration = Duration::from_secs(10);

fn node(byte: u8) -> Address {
    Address([byte; 20])
}

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match actix::clock::timeout(PATIENCE, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn connect(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url()).await.expect("connect to nats")
}

/// Starts an events actor on its own arbiter, as the node does, and waits until its
/// subscriptions are live.
async fn start(client: async_nats::Client, node: Address, dir: &Path) -> (Addr<EventsActor>, Arbiter) {
    start_with(client, node, dir, EventsConfig::default()).await
}

async fn start_with(
    client: async_nats::Client,
    node: Address,
    dir: &Path,
    config: EventsConfig,
) -> (Addr<EventsActor>, Arbiter) {
    let actor = EventsActor::with_config(client, node, dir, config).expect("events actor");
    let arbiter = Arbiter::new();
    let addr = EventsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
    within("ready", addr.send(Ready))
        .await
        .expect("mailbox")
        .expect("subscriptions live");
    (addr, arbiter)
}

/// Waits until `events` keeps `count` events under `topic` (what NATS delivered to it has
/// been handled), and answers them, newest last.
async fn kept(events: &Addr<EventsActor>, topic: &str, count: usize) -> Vec<EventEnvelope> {
    within(&format!("{count} events kept under {topic}"), async {
        loop {
            let recent = events
                .send(Recent {
                    topic: topic.into(),
                    limit: 0,
                })
                .await
                .expect("mailbox");
            if recent.len() >= count {
                return recent;
            }
            actix::clock::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Stops the arbiter and waits for its thread, so the actor (and its database) is gone.
fn stop(arbiter: Arbiter) {
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
}

/// A valid envelope as another node would publish it.
fn foreign_app_event(from: Address, seq: u64, topic: &str, data: serde_json::Value) -> EventEnvelope {
    EventEnvelope {
        id: format!("{from}:{seq}"),
        node: from,
        ts: 1_700_000_000_000 + seq,
        service: "app".into(),
        kind: topic.into(),
        topics: vec![topic.into()],
        caller: None,
        data,
    }
}

async fn publish_json(client: &async_nats::Client, envelope: &EventEnvelope) {
    let payload = serde_json::to_vec(envelope).expect("encode");
    client
        .publish(envelope.subject(), Bytes::from(payload))
        .await
        .expect("publish");
}

#[test]
fn emit_publishes_the_envelope_on_its_subject() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    System::new().block_on(async {
        let client = connect(&server).await;
        // Same connection as the actor: our subscription reaches the server first.
        let mut received = client
            .subscribe("cmesh.events.router.received")
            .await
            .expect("subscribe");
        let mut transferred = client
            .subscribe("cmesh.events.registrar.transferred")
            .await
            .expect("subscribe");
        let (events, arbiter) = start(client.clone(), node(0xa1), dir.path()).await;

        events.do_send(Emit::new(
            "router",
            "received",
            vec![],
            json!({"fqmn": "0Rx:helloworld.mcom:[\"Dexter\"]"}),
        ));
        let message = within("router event", received.next()).await.expect("message");
        let envelope: EventEnvelope = serde_json::from_slice(&message.payload).expect("envelope");
        assert_eq!(envelope.node, node(0xa1));
        assert_eq!(
            (envelope.service.as_str(), envelope.kind.as_str()),
            ("router", "received")
        );
        assert!(envelope.id.starts_with(&format!("{}:", node(0xa1))), "{}", envelope.id);
        assert!(envelope.topics.is_empty());
        assert!(envelope.ts > 0);
        assert_eq!(envelope.data["fqmn"], "0Rx:helloworld.mcom:[\"Dexter\"]");

        events.do_send(Emit::registrar(
            "transferred",
            "helloworld.mcom",
            json!({"to": node(0xb2)}),
        ));
        let message = within("registrar event", transferred.next()).await.expect("message");
        let envelope: EventEnvelope = serde_json::from_slice(&message.payload).expect("envelope");
        assert_eq!(
            envelope.topics,
            vec!["R:helloworld.mcom", "R:helloworld.mcom:transferred", "R:transferred"]
        );
        for topic in ["R:helloworld.mcom", "R:helloworld.mcom:transferred", "R:transferred"] {
            let recent = events
                .send(Recent {
                    topic: topic.into(),
                    limit: 10,
                })
                .await
                .expect("mailbox");
            assert_eq!(recent, vec![envelope.clone()], "topic {topic}");
        }

        // An invalid event is refused, not published.
        events.do_send(Emit::new("router", "bad kind", vec![], json!(null)));
        let stats = events.send(Stats).await.expect("mailbox");
        assert_eq!(stats.rejected_local, 1);
        assert_eq!(stats.emitted, 2);
        stop(arbiter);
    });
}

#[test]
fn emit_app_then_recent_returns_it() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    System::new().block_on(async {
        let client = connect(&server).await;
        let mut app = client.subscribe("cmesh.events.app.>").await.expect("subscribe");
        let (events, arbiter) = start(client.clone(), node(0xa2), dir.path()).await;

        let caller = node(0xc3);
        let envelope = events
            .send(EmitApp {
                topic: "chat.room1".into(),
                data: json!({"text": "hello"}),
                caller,
            })
            .await
            .expect("mailbox")
            .expect("emitted");
        assert_eq!(envelope.subject(), "cmesh.events.app.chat.room1");
        assert_eq!(envelope.topics, vec!["chat.room1"]);
        assert_eq!(envelope.caller, Some(caller));

        let message = within("app event", app.next()).await.expect("message");
        assert_eq!(message.subject.as_str(), "cmesh.events.app.chat.room1");
        let published: EventEnvelope = serde_json::from_slice(&message.payload).expect("envelope");
        assert_eq!(published, envelope);

        let recent = events
            .send(Recent {
                topic: "chat.room1".into(),
                limit: 10,
            })
            .await
            .expect("mailbox");
        assert_eq!(recent, vec![envelope]);

        let bad_topic = events
            .send(EmitApp {
                topic: "chat.*".into(),
                data: json!(1),
                caller,
            })
            .await
            .expect("mailbox");
        assert!(matches!(bad_topic, Err(EventsError::Invalid { .. })), "{bad_topic:?}");
        let too_big = events
            .send(EmitApp {
                topic: "chat.room1".into(),
                data: json!("x".repeat(70_000)),
                caller,
            })
            .await
            .expect("mailbox");
        assert!(matches!(too_big, Err(EventsError::TooLarge { .. })), "{too_big:?}");
        stop(arbiter);
    });
}

#[test]
fn events_from_other_nodes_are_kept_once() {
    let server = NatsServer::start();
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    System::new().block_on(async {
        let (a, arbiter_a) = start(connect(&server).await, node(0xaa), dir_a.path()).await;
        let (b, arbiter_b) = start(connect(&server).await, node(0xbb), dir_b.path()).await;
        let sent = a
            .send(EmitApp {
                topic: "chat.room1".into(),
                data: json!({"n": 1}),
                caller: node(0xcc),
            })
            .await
            .expect("mailbox")
            .expect("emitted");
        let seen = kept(&b, "chat.room1", 1).await;
        assert_eq!(seen, vec![sent.clone()]);

        a.do_send(Emit::registrar(
            "registered",
            "helloworld.mcom",
            json!({"owner": node(0xcc)}),
        ));
        let registered = kept(&b, "R:helloworld.mcom", 1).await.remove(0);
        assert_eq!(registered.node, node(0xaa));
        assert_eq!(registered.kind, "registered");

        // The same event again, then a marker from a third node, on one connection: once
        // the marker is in, the duplicate has been handled.
        let raw = connect(&server).await;
        publish_json(&raw, &sent).await;
        let marker = foreign_app_event(node(0xdd), 1, "chat.room1", json!({"marker": true}));
        publish_json(&raw, &marker).await;
        let recent = kept(&b, "chat.room1", 2).await;
        assert_eq!(recent, vec![sent, marker]);
        let stats = b.send(Stats).await.expect("mailbox");
        assert_eq!(stats.duplicates, 1);
        assert_eq!(stats.recorded_remote, 3);
        stop(arbiter_a);
        stop(arbiter_b);
    });
}

#[test]
fn malformed_events_are_ignored() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    System::new().block_on(async {
        let (events, arbiter) = start(connect(&server).await, node(0xa3), dir.path()).await;
        let raw = connect(&server).await;
        let junk: [(&str, Vec<u8>); 4] = [
            ("cmesh.events.app.x", b"{not json".to_vec()),
            ("cmesh.events.app.x", vec![0xff; 100_000]),
            // Valid JSON, filed under a subject that does not match it.
            (
                "cmesh.events.app.x",
                serde_json::to_vec(&foreign_app_event(node(0xee), 1, "y", json!(null))).expect("encode"),
            ),
            // A registrar event trying to poison an app topic.
            ("cmesh.events.registrar.registered", {
                let mut envelope = foreign_app_event(node(0xee), 2, "registered", json!(null));
                envelope.service = "registrar".into();
                envelope.topics = vec!["x".into()];
                serde_json::to_vec(&envelope).expect("encode")
            }),
        ];
        for (subject, payload) in junk {
            raw.publish(subject, Bytes::from(payload)).await.expect("publish");
        }
        let valid = foreign_app_event(node(0xee), 3, "x", json!({"ok": true}));
        publish_json(&raw, &valid).await;

        // Published last on one connection: once it is kept, the junk has been handled.
        let seen = kept(&events, "x", 1).await;
        assert_eq!(seen, vec![valid.clone()]);
        let stats = events.send(Stats).await.expect("mailbox");
        assert_eq!(stats.malformed, 4);
        assert_eq!(stats.recorded_remote, 1);
        let recent = events
            .send(Recent {
                topic: "x".into(),
                limit: 10,
            })
            .await
            .expect("mailbox");
        assert_eq!(recent, vec![valid]);
        stop(arbiter);
    });
}

#[test]
fn audit_entries_are_published_persisted_and_verifiable() {
    const N: u64 = 50;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let me = node(0xa4);
    System::new().block_on(async {
        let client = connect(&server).await;
        let mut audit = client.subscribe(audit_subject(&me)).await.expect("subscribe");
        let (events, arbiter) = start(client.clone(), me, dir.path()).await;

        for i in 0..N {
            events.do_send(AuditAppend {
                request: Bytes::from(format!("request {i}")),
                response: Bytes::from(format!("response {i}")),
                status: if i % 7 == 0 { 404 } else { 200 },
            });
        }
        let head = events.send(Flush).await.expect("mailbox").expect("flushed");
        assert_eq!(head, N);

        let mut prev = [0u8; 32];
        for i in 0..N {
            let message = within("audit entry", audit.next()).await.expect("message");
            let record: AuditRecord = serde_json::from_slice(&message.payload).expect("record");
            assert_eq!(record.node, me);
            let entry = record.to_entry().expect("hex fields");
            assert_eq!(entry.seq, i + 1);
            assert_eq!(entry.prev, prev);
            assert_eq!(entry.request, keccak256(format!("request {i}").as_bytes()));
            assert_eq!(entry.response, keccak256(format!("response {i}").as_bytes()));
            assert_eq!(entry.status, if i % 7 == 0 { 404 } else { 200 });
            assert_eq!(entry.hash, entry.compute_hash());
            prev = entry.hash;
        }

        let report = events.send(VerifyAudit).await.expect("mailbox").expect("valid");
        assert_eq!((report.entries, report.head, report.head_hash), (N, N, prev));
        stop(arbiter);
        let report = verify_chain(&dir.path().join(AUDIT_FILE)).expect("valid chain");
        assert_eq!(report.entries, N);
    });
}

#[test]
fn audit_chain_continues_after_a_restart() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let me = node(0xa5);
    let append = |events: &Addr<EventsActor>, i: u32| {
        events.do_send(AuditAppend {
            request: Bytes::from(i.to_string()),
            response: Bytes::from_static(b"ok"),
            status: 200,
        })
    };
    let first_id = System::new().block_on(async {
        let client = connect(&server).await;
        let (events, arbiter) = start(client, me, dir.path()).await;
        for i in 0..3 {
            append(&events, i);
        }
        assert_eq!(events.send(Flush).await.expect("mailbox").expect("flushed"), 3);
        // Left pending: committed when the actor goes away.
        append(&events, 3);
        let event = events
            .send(EmitApp {
                topic: "t".into(),
                data: json!(null),
                caller: me,
            })
            .await
            .expect("mailbox")
            .expect("emitted");
        stop(arbiter);
        event.id
    });
    assert_eq!(verify_chain(&dir.path().join(AUDIT_FILE)).expect("valid").head, 4);

    System::new().block_on(async {
        let client = connect(&server).await;
        let (events, arbiter) = start(client, me, dir.path()).await;
        for i in 4..6 {
            append(&events, i);
        }
        assert_eq!(events.send(Flush).await.expect("mailbox").expect("flushed"), 6);
        let event = events
            .send(EmitApp {
                topic: "t".into(),
                data: json!(null),
                caller: me,
            })
            .await
            .expect("mailbox")
            .expect("emitted");
        let seq = |id: &str| -> u64 { id.rsplit(':').next().and_then(|s| s.parse().ok()).expect("numeric seq") };
        assert!(seq(&event.id) > seq(&first_id), "{} after {}", event.id, first_id);
        append(&events, 6);
        let head = events.send(Shutdown).await.expect("mailbox").expect("flushed");
        assert_eq!(head, 7);
        stop(arbiter);
    });
    let report = verify_chain(&dir.path().join(AUDIT_FILE)).expect("valid chain");
    assert_eq!((report.entries, report.head), (7, 7));
}

#[test]
fn group_commit_happens_on_the_timer_and_on_a_full_batch() {
    let server = NatsServer::start();
    let me = node(0xa6);
    let entry = |i: u32| AuditAppend {
        request: Bytes::from(i.to_string()),
        response: Bytes::new(),
        status: 200,
    };
    System::new().block_on(async {
        let client = connect(&server).await;
        let mut audit = client.subscribe(audit_subject(&me)).await.expect("subscribe");
        let next_seq = |message: Option<async_nats::Message>| {
            let message = message.expect("message");
            let record: AuditRecord = serde_json::from_slice(&message.payload).expect("record");
            record.seq
        };

        // A timer that never fires: only a full batch commits.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EventsConfig {
            flush_interval: Duration::from_secs(3_600),
            flush_batch: 3,
            ..EventsConfig::default()
        };
        let (events, arbiter) = start_with(client.clone(), me, dir.path(), config).await;
        for i in 0..4 {
            events.do_send(entry(i));
        }
        for seq in 1..=3 {
            assert_eq!(next_seq(within("batch commit", audit.next()).await), seq);
        }
        let stats = events.send(Stats).await.expect("mailbox");
        assert_eq!((stats.audit_head, stats.audit_pending), (3, 1));
        stop(arbiter);
        // The pending fourth entry was committed when the actor went away.
        assert_eq!(verify_chain(&dir.path().join(AUDIT_FILE)).expect("valid").head, 4);

        // The default: a lone entry is committed by the timer, without a Flush.
        // Another node address, so nothing left from the first actor can interfere.
        let other = node(0xa7);
        let mut audit = client.subscribe(audit_subject(&other)).await.expect("subscribe");
        let dir = tempfile::tempdir().expect("tempdir");
        let (events, arbiter) = start(client.clone(), other, dir.path()).await;
        events.do_send(entry(0));
        assert_eq!(next_seq(within("timer commit", audit.next()).await), 1);
        let stats = events.send(Stats).await.expect("mailbox");
        assert_eq!((stats.audit_head, stats.audit_pending), (1, 0));
        stop(arbiter);
    });
}
