//! ADR-32 compatibility of `cmesh_router::micro` against a real nats-server: the replies
//! are decoded with async-nats's own `service` types, as the official clients would.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::service::{Info, PingResponse, Stats};
use cmesh_router::micro::{self, EndpointSpec, Micro, ServiceIdentity};
use cmesh_testkit::NatsServer;
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(5);

fn identity(id: &str) -> ServiceIdentity {
    ServiceIdentity {
        name: "cmesh".into(),
        id: id.into(),
        version: "0.3.1".into(),
        description: "cmesh node".into(),
        metadata: HashMap::from([
            ("address".to_string(), format!("node-{id}")),
            ("registrar".to_string(), "raft".to_string()),
        ]),
    }
}

fn endpoints() -> Vec<EndpointSpec> {
    vec![
        EndpointSpec {
            name: "call".into(),
            subject: "cmesh.call.>".into(),
            queue_group: "cmesh".into(),
            metadata: HashMap::from([("kind".to_string(), "fqmn".to_string())]),
        },
        EndpointSpec {
            name: "login".into(),
            subject: "cmesh.iam.login".into(),
            queue_group: "cmesh".into(),
            metadata: HashMap::new(),
        },
    ]
}

async fn start(url: &str, id: &str) -> (async_nats::Client, Micro, tokio::task::JoinHandle<()>) {
    let client = async_nats::connect(url).await.expect("connect");
    let (micro, task) = Micro::start(client.clone(), identity(id), endpoints())
        .await
        .expect("start micro");
    let handle = tokio::spawn(task);
    (client, micro, handle)
}

async fn request<T: serde::de::DeserializeOwned>(client: &async_nats::Client, subject: &str) -> T {
    let reply = tokio::time::timeout(WAIT, client.request(subject.to_string(), "".into()))
        .await
        .expect("reply in time")
        .expect("reply");
    serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
        panic!(
            "decode reply to {subject}: {e}: {}",
            String::from_utf8_lossy(&reply.payload)
        )
    })
}

#[tokio::test]
async fn micro_ping_info_stats_decode_with_async_nats_types() {
    let server = NatsServer::start();
    let (_service_client, micro, _task) = start(&server.url(), "NODEA1").await;
    assert_eq!(micro.id(), "NODEA1");
    let client = async_nats::connect(server.url()).await.expect("connect");

    let ping: PingResponse = request(&client, "$SRV.PING").await;
    assert_eq!(ping.kind, "io.nats.micro.v1.ping_response");
    assert_eq!(ping.name, "cmesh");
    assert_eq!(ping.id, "NODEA1");
    assert_eq!(ping.version, "0.3.1");
    assert_eq!(ping.metadata["address"], "node-NODEA1");
    assert_eq!(ping.metadata["registrar"], "raft");

    let info: Info = request(&client, "$SRV.INFO.cmesh").await;
    assert_eq!(info.kind, "io.nats.micro.v1.info_response");
    assert_eq!((info.name.as_str(), info.id.as_str()), ("cmesh", "NODEA1"));
    assert_eq!(info.version, "0.3.1");
    assert_eq!(info.description, "cmesh node");
    assert_eq!(info.metadata, identity("NODEA1").metadata);
    assert_eq!(info.endpoints.len(), 2);
    assert_eq!(info.endpoints[0].name, "call");
    assert_eq!(info.endpoints[0].subject, "cmesh.call.>");
    assert_eq!(info.endpoints[0].queue_group, "cmesh");
    assert_eq!(info.endpoints[0].metadata["kind"], "fqmn");
    assert_eq!(info.endpoints[1].name, "login");
    assert_eq!(info.endpoints[1].subject, "cmesh.iam.login");
    assert_eq!(info.endpoints[1].queue_group, "cmesh");
    assert!(info.endpoints[1].metadata.is_empty());

    micro.record(0, Duration::from_micros(100), None);
    micro.record(0, Duration::from_micros(200), None);
    micro.record(0, Duration::from_micros(300), Some(("boom", 500)));

    let stats: Stats = request(&client, "$SRV.STATS.cmesh.NODEA1").await;
    assert_eq!(stats.kind, "io.nats.micro.v1.stats_response");
    assert_eq!((stats.name.as_str(), stats.id.as_str()), ("cmesh", "NODEA1"));
    assert_eq!(stats.version, "0.3.1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - stats.started.unix_timestamp()).abs() < 60);
    assert_eq!(stats.endpoints.len(), 2);
    let call = &stats.endpoints[0];
    assert_eq!(call.name, "call");
    assert_eq!(call.subject, "cmesh.call.>");
    assert_eq!(call.queue_group, "cmesh");
    assert_eq!(call.requests, 3);
    assert_eq!(call.errors, 1);
    assert_eq!(call.processing_time, Duration::from_micros(600));
    assert_eq!(call.average_processing_time, Duration::from_micros(200));
    let last = call.last_error.as_ref().expect("last_error");
    assert_eq!(last.code, 500);
    assert!(last.status.contains("boom"), "{last:?}");
    let login = &stats.endpoints[1];
    assert_eq!((login.requests, login.errors), (0, 0));
    assert!(login.last_error.is_none());

    // The raw JSON also carries the identity metadata, as Go's micro does.
    let raw: serde_json::Value = request(&client, "$SRV.STATS.cmesh").await;
    assert_eq!(raw["metadata"]["registrar"], "raft");
    assert_eq!(raw["endpoints"][0]["processing_time"], 600_000);
}

/// Sends one request on `subject` and collects up to `want` replies, waiting at most
/// `WAIT` in all.
async fn collect_pings(client: &async_nats::Client, subject: &str, want: usize) -> Vec<PingResponse> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe inbox");
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .expect("publish");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        while out.len() < want {
            match replies.next().await {
                Some(m) => out.push(serde_json::from_slice(&m.payload).expect("ping json")),
                None => break,
            }
        }
    })
    .await;
    out
}

#[tokio::test]
async fn micro_two_instances_both_answer_ping() {
    let server = NatsServer::start();
    let (_ca, _a, _ta) = start(&server.url(), "NODEA2").await;
    let (_cb, _b, _tb) = start(&server.url(), "NODEB2").await;
    let client = async_nats::connect(server.url()).await.expect("connect");

    for subject in ["$SRV.PING", "$SRV.PING.cmesh"] {
        let pings = collect_pings(&client, subject, 2).await;
        let ids: HashSet<_> = pings.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, HashSet::from(["NODEA2", "NODEB2"]), "{subject}");
    }
    let only_b = collect_pings(&client, "$SRV.PING.cmesh.NODEB2", 1).await;
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].id, "NODEB2");
}

#[tokio::test]
async fn micro_stop_unsubscribes_discovery() {
    let server = NatsServer::start();
    let (_ca, a, task_a) = start(&server.url(), "NODEA3").await;
    let (_cb, _b, _tb) = start(&server.url(), "NODEB3").await;
    let client = async_nats::connect(server.url()).await.expect("connect");

    let ping: PingResponse = request(&client, "$SRV.PING.cmesh.NODEA3").await;
    assert_eq!(ping.id, "NODEA3");

    tokio::time::timeout(WAIT, a.stop()).await.expect("stop in time");
    a.stop().await; // idempotent
    tokio::time::timeout(WAIT, task_a)
        .await
        .expect("task ends after stop")
        .expect("task did not panic");

    let reply = client
        .send_request(
            "$SRV.PING.cmesh.NODEA3",
            async_nats::Request::new()
                .payload("".into())
                .timeout(Some(Duration::from_secs(1))),
        )
        .await;
    assert!(reply.is_err(), "a stopped instance must not answer");

    // The other instance still answers, and is the only one to.
    let pings = collect_pings(&client, "$SRV.PING", 1).await;
    let ids: Vec<_> = pings.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["NODEB3"]);
}

#[tokio::test]
async fn micro_task_ends_when_every_handle_is_dropped() {
    let server = NatsServer::start();
    let (_client, micro, task) = start(&server.url(), "NODEA4").await;
    let clone = micro.clone();
    drop(micro);
    assert!(!task.is_finished());
    drop(clone);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("task ends once no handle is left")
        .expect("task did not panic");
}

#[tokio::test]
async fn micro_start_rejects_invalid_identity() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut bad = identity("x");
    bad.version = "one".into();
    let err = Micro::start(client.clone(), bad, endpoints()).await.unwrap_err();
    assert!(matches!(err, micro::MicroError::InvalidVersion(_)), "{err}");
    let mut bad = identity("has.dot");
    bad.id = "has.dot".into();
    let err = Micro::start(client, bad, endpoints()).await.unwrap_err();
    assert!(matches!(err, micro::MicroError::InvalidId(_)), "{err}");
}

#[tokio::test]
async fn micro_reply_headers_cross_the_wire() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut requests = client.subscribe("test.echo").await.expect("subscribe");
    let responder = client.clone();
    tokio::spawn(async move {
        if let Some(msg) = requests.next().await {
            let headers = micro::reply_headers(500, "application/json", Some("boom\r\nX-Evil: 1"));
            let reply = msg.reply.expect("reply subject");
            responder
                .publish_with_headers(reply, headers, r#"{"error":"boom"}"#.into())
                .await
                .expect("reply");
        }
    });
    let reply = tokio::time::timeout(WAIT, client.request("test.echo", "".into()))
        .await
        .expect("in time")
        .expect("reply");
    let h = reply.headers.expect("headers");
    assert_eq!(h.get("Cmtp-Version").unwrap().as_str(), "CMTP/0");
    assert_eq!(h.get("Cmtp-Status").unwrap().as_str(), "500");
    assert_eq!(h.get("Content-Type").unwrap().as_str(), "application/json");
    assert_eq!(h.get("Nats-Service-Error").unwrap().as_str(), "boom  X-Evil: 1");
    assert_eq!(h.get("Nats-Service-Error-Code").unwrap().as_str(), "500");
    assert!(h.get("X-Evil").is_none());
    assert_eq!(&reply.payload[..], br#"{"error":"boom"}"#);
}
