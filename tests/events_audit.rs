//! Events on NATS (router lifecycle, registrar, application) and the audit chain, live
//! on `cmesh.audit.<node>` and offline with `cmesh audit verify`.

use std::process::Command;

use cmesh_common::Address;
use cmesh_events::{AuditRecord, EventEnvelope};
use cmesh_testkit::*;
use serde_json::{json, Value};

async fn next_envelope(sub: &mut async_nats::Subscriber, what: &str) -> (String, EventEnvelope) {
    let message = next_message(sub, what).await;
    let envelope: EventEnvelope = serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
        panic!(
            "event on {} is not an envelope ({e}): {}",
            message.subject,
            String::from_utf8_lossy(&message.payload)
        )
    });
    assert_eq!(
        message.subject.as_str(),
        format!("cmesh.events.{}.{}", envelope.service, envelope.kind),
        "subject matches the envelope's service and kind"
    );
    (message.subject.to_string(), envelope)
}

/// The router events of one request on `node`: skips events of earlier requests until a
/// `received` on `endpoint`, then collects that node's router events up to `answered`.
async fn router_events_of_next_request(
    sub: &mut async_nats::Subscriber,
    node: Address,
    endpoint: &str,
) -> Vec<EventEnvelope> {
    let mut seen = Vec::new();
    loop {
        let (_, envelope) = next_envelope(sub, "router events").await;
        if envelope.node != node || envelope.service != "router" {
            continue;
        }
        if seen.is_empty() && !(envelope.kind == "received" && envelope.data["endpoint"] == json!(endpoint)) {
            continue;
        }
        let done = envelope.kind == "answered";
        seen.push(envelope);
        if done {
            return seen;
        }
    }
}

fn kinds(events: &[EventEnvelope]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Waits for an envelope of `service.kind` satisfying `pred` on a subscription.
async fn wait_event(
    sub: &mut async_nats::Subscriber,
    what: &str,
    pred: impl Fn(&str, &EventEnvelope) -> bool,
) -> EventEnvelope {
    loop {
        let (subject, envelope) = next_envelope(sub, what).await;
        if pred(&subject, &envelope) {
            return envelope;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_audit_trail() {
    let mut mesh = Mesh::start(2).await;
    let (a, b) = (mesh.node(0).address(), mesh.node(1).address());
    let alice = new_key();
    let bob = new_key();
    let client = &mesh.client;
    let alice_token = client.login(&alice, b).await;

    let mut events = client.subscribe("cmesh.events.>").await;
    let mut audit_b = client.subscribe(&format!("cmesh.audit.{b}")).await;

    // One public request: received, dispatched, answered, in that order.
    client.assert_alive(b).await;
    let seq = router_events_of_next_request(&mut events, b, "fqmn").await;
    assert_eq!(
        kinds(&seq),
        ["received", "dispatched", "answered"],
        "router events of P:ping: {seq:?}"
    );
    assert_eq!(
        seq[1].data["method"],
        json!("router.ping"),
        "dispatched names the method: {:?}",
        seq[1]
    );
    assert_eq!(
        seq[2].data["status"],
        json!(200),
        "answered carries the status: {:?}",
        seq[2]
    );
    for event in &seq {
        assert_eq!(event.node, b);
        assert!(event.ts > 0 && !event.id.is_empty(), "envelope id and ts: {event:?}");
    }

    // A refused request: received, denied, answered 401.
    client.fqmn(b, "I:whoami", None).await.assert_fqmn_error(401);
    let seq = router_events_of_next_request(&mut events, b, "fqmn").await;
    assert_eq!(
        kinds(&seq),
        ["received", "denied", "answered"],
        "router events of a refused request: {seq:?}"
    );
    assert_eq!(seq[1].data["status"], json!(401));
    assert_eq!(seq[2].data["status"], json!(401));

    // The audit entries on cmesh.audit.<b>, chained and hashing right, up to the one of
    // the refused request (entries of the login before may come first: group commits).
    let mut records: Vec<AuditRecord> = Vec::new();
    while !records.iter().any(|r| r.status == 401) {
        let message = next_message(&mut audit_b, "the audit entry of the 401 on node b").await;
        let record: AuditRecord = serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
            panic!(
                "audit entry does not parse ({e}): {}",
                String::from_utf8_lossy(&message.payload)
            )
        });
        records.push(record);
    }
    for record in &records {
        assert_eq!(record.node, b);
        let entry = record.to_entry().expect("hex fields of an audit record");
        assert_eq!(
            cmesh_common::hash::to_hex0x(&entry.compute_hash()),
            record.hash,
            "published hash is the hash of the entry: {record:?}"
        );
    }
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "audit seqs are consecutive: {records:?}");
        assert_eq!(
            pair[1].prev, pair[0].hash,
            "each entry chains to the one before: {records:?}"
        );
    }
    let last = records.len() - 1;
    assert!(
        last >= 1 && records[last - 1].status == 200,
        "the P:ping (200) precedes the 401: {records:?}"
    );

    // Registering a name through b publishes registrar.registered from b, once committed.
    client
        .call(
            b,
            "registrar.register",
            json!({"name": "events.mcom", "target": "I:whoami"}),
            Some(&alice_token),
        )
        .await;
    let registered = wait_event(&mut events, "cmesh.events.registrar.registered", |subject, e| {
        subject == "cmesh.events.registrar.registered" && e.data["name"] == json!("events.mcom")
    })
    .await;
    assert_eq!(registered.service, "registrar");
    assert_eq!(
        registered.node, b,
        "the node that took the write publishes its name event"
    );
    assert!(
        registered.topics.contains(&"R:events.mcom".to_string()),
        "topics: {:?}",
        registered.topics
    );
    assert_eq!(registered.data["owner_after"], json!(alice.address()));

    // An application event published on b is returned by E: on a.
    let published = client.fqmn_ok(b, r#"EW:chat.room1:{"m":1}"#, Some(&alice_token)).await;
    assert_eq!(
        published["kind"],
        json!("chat.room1"),
        "EW answers the envelope: {published}"
    );
    let on_bus = wait_event(&mut events, "cmesh.events.app.chat.room1", |subject, _| {
        subject == "cmesh.events.app.chat.room1"
    })
    .await;
    assert_eq!(on_bus.data, json!({"m": 1}));
    assert_eq!(on_bus.caller, Some(alice.address()), "app events name their caller");
    assert_eq!(on_bus.node, b);
    let bob_token = client.login(&bob, a).await;
    let recent = eventually(
        "E:chat.room1 on node a to return the event from node b",
        EVENTUALLY,
        || async {
            let list = client.fqmn_ok(a, "E:chat.room1", Some(&bob_token)).await;
            let list = list.as_array()?.clone();
            list.iter().any(|e| e["data"] == json!({"m": 1})).then_some(list)
        },
    )
    .await;
    let event = recent.iter().find(|e| e["data"] == json!({"m": 1})).unwrap();
    assert_eq!(event["caller"], json!(alice.address()));
    assert_eq!(event["node"], json!(b));
    // The same through JSON-RPC, with a limit.
    let listed = client
        .call(
            a,
            "events.recent",
            json!({"topic": "chat.room1", "limit": 1}),
            Some(&bob_token),
        )
        .await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "events.recent limit 1: {listed}"
    );
    let via_rpc = client
        .call(
            b,
            "events.publish",
            json!({"topic": "chat.room1", "data": {"m": 2}}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(via_rpc["data"], json!({"m": 2}));

    // After a transfer, E:R:<name>:transferred returns it (on any node).
    client
        .call(
            b,
            "registrar.transfer",
            json!({"name": "events.mcom", "to": bob.address()}),
            Some(&alice_token),
        )
        .await;
    for node in [a, b] {
        let found: Value = eventually("E:R:events.mcom:transferred", EVENTUALLY, || async {
            let list = client
                .fqmn_ok(node, "E:R:events.mcom:transferred", Some(&bob_token))
                .await;
            list.as_array()?
                .iter()
                .find(|e| e["kind"] == json!("transferred"))
                .cloned()
        })
        .await;
        assert_eq!(
            found["data"]["owner_before"],
            json!(alice.address()),
            "transferred event: {found}"
        );
        assert_eq!(
            found["data"]["owner_after"],
            json!(bob.address()),
            "transferred event: {found}"
        );
    }
    let all_of_name = client.fqmn_ok(a, "E:R:events.mcom", Some(&bob_token)).await;
    let name_kinds: Vec<&str> = all_of_name
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        name_kinds.contains(&"registered") && name_kinds.contains(&"transferred"),
        "E:R:events.mcom: {name_kinds:?}"
    );

    // Stop node b cleanly: its audit chain verifies.
    drop(events);
    drop(audit_b);
    let status = mesh.nodes[1].stop_sigterm().await;
    assert_eq!(status.code(), Some(0));
    let dir = mesh.nodes[1].data_dir().to_path_buf();
    let verify = Command::new(cmesh_bin())
        .args(["audit", "verify", "--data"])
        .arg(&dir)
        .output()
        .expect("run verify");
    assert!(
        verify.status.success(),
        "cmesh audit verify on an intact chain: {}\nstdout: {}\nstderr: {}",
        verify.status,
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // Change one stored entry: verify fails.
    corrupt_audit_entry(&dir.join("audit.redb"));
    let verify = Command::new(cmesh_bin())
        .args(["audit", "verify", "--data"])
        .arg(&dir)
        .output()
        .expect("run verify");
    assert!(
        !verify.status.success(),
        "cmesh audit verify must fail on a changed entry; stdout: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Flips the status of the first audit entry in place (the stored hash no longer
/// matches its fields).
fn corrupt_audit_entry(path: &std::path::Path) {
    use redb::{ReadableTable, TableDefinition};
    const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_entries");
    let db = redb::Database::open(path).expect("open audit.redb");
    let txn = db.begin_write().expect("write txn");
    {
        let mut table = txn.open_table(ENTRIES).expect("audit_entries table");
        let mut bytes = table
            .get(1)
            .expect("read entry 1")
            .expect("entry 1 exists")
            .value()
            .to_vec();
        let last_status_byte = 127 - 14; // status is the last 2 bytes of the 114-byte body
        bytes[last_status_byte] ^= 0x01;
        table.insert(1, bytes.as_slice()).expect("write entry 1");
    }
    txn.commit().expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_fails_on_a_flipped_byte_in_the_file() {
    let mut mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    for _ in 0..5 {
        mesh.client.assert_alive(node).await;
    }
    let status = mesh.nodes[0].stop_sigterm().await;
    assert_eq!(status.code(), Some(0));
    let dir = mesh.nodes[0].data_dir().to_path_buf();
    let ok = Command::new(cmesh_bin())
        .args(["audit", "verify", "--data"])
        .arg(&dir)
        .status()
        .expect("verify");
    assert!(ok.success(), "verify of an intact chain: {ok}");

    // Change the raw file: flip the last hash byte of entry 1 wherever its stored bytes
    // appear (copy-on-write may have left older copies of the page).
    let path = dir.join("audit.redb");
    let stored = {
        use redb::{ReadableDatabase, TableDefinition};
        const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_entries");
        let db = redb::ReadOnlyDatabase::open(&path).expect("open read-only");
        let txn = db.begin_read().expect("read txn");
        let table = txn.open_table(ENTRIES).expect("table");
        let value = table.get(1).expect("get").expect("entry 1").value().to_vec();
        value
    };
    let mut file = std::fs::read(&path).expect("read audit.redb");
    let places: Vec<usize> = file
        .windows(stored.len())
        .enumerate()
        .filter(|(_, w)| *w == stored.as_slice())
        .map(|(at, _)| at)
        .collect();
    assert!(!places.is_empty(), "entry 1's bytes are in the file");
    for at in places {
        file[at + stored.len() - 1] ^= 0xff;
    }
    std::fs::write(&path, &file).expect("write audit.redb");
    let broken = Command::new(cmesh_bin())
        .args(["audit", "verify", "--data"])
        .arg(&dir)
        .status()
        .expect("verify");
    assert!(
        !broken.success(),
        "verify must fail after a byte of the file changed: {broken}"
    );
}
