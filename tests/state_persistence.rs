//! Contract state across node restarts: a node killed (SIGKILL) in the middle of a write
//! load keeps every write it acknowledged; a clean restart keeps every context's root,
//! heads and applied count; a corrupt compiled-module cache file is detected and rebuilt.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cmesh_common::hash::keccak256;
use cmesh_common::Address;
use cmesh_testkit::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

/// Writes fired at the node in the kill test, and how many run at once.
const WRITES: usize = 300;
const CONCURRENCY: usize = 16;
/// The node is killed once this many writes were acknowledged.
const KILL_AFTER: usize = 120;
/// How long a request sent before the kill may still wait for its reply once the node is
/// gone: a reply the node wrote before dying is already on its way through the server.
const REPLY_GRACE: Duration = Duration::from_millis(500);

/// What became of one `SW:<kv>:set:["k<i>", i]`.
#[derive(Debug)]
enum Outcome {
    /// A reply (status, body).
    Reply(u16, Value),
    /// The request failed at the NATS level (no responders once the node was gone, or a
    /// timeout); `true` if SIGKILL had been sent by then.
    Failed(String, bool),
    /// Still waiting when the node died (and for `REPLY_GRACE` after).
    Unanswered,
}

fn status_of(message: &async_nats::Message) -> u16 {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("Cmtp-Status"))
        .and_then(|v| v.as_str().trim().parse().ok())
        .unwrap_or(0)
}

/// Every key of a kv context with its value (`S:<kv>:list`).
async fn kv_entries(client: &Client, node: Address, token: &str, kv: &str) -> BTreeMap<String, Value> {
    let listed = client.fqmn_ok(node, &format!("S:{kv}:list"), Some(token)).await;
    listed["result"]
        .as_array()
        .expect("kv list is an array")
        .iter()
        .map(|e| (e["key"].as_str().expect("key").to_string(), e["value"].clone()))
        .collect()
}

/// `ctx.root` of a context: `{context, root, heads, applied}`.
async fn context_root(client: &Client, node: Address, token: &str, context: &str) -> Value {
    client
        .call(node, "ctx.root", json!({ "context": context }), Some(token))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_keeps_every_acknowledged_write() {
    let mut mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let alice = new_key();
    let token = client.login(&alice, node).await;
    deploy(client, node, Some(&token), "kv", "1.0.0").await;
    let kv = create(client, node, Some(&token), "kv").await;

    // The load: CONCURRENCY tasks taking the next index until WRITES are sent or the
    // node is dead; each records what became of each of its writes.
    let load = Arc::new(Client::connect(&mesh.nats.url()).await);
    let next = Arc::new(AtomicUsize::new(0));
    let (acked_tx, mut acked_rx) = watch::channel(0usize);
    let acked_tx = Arc::new(acked_tx);
    let (killed_tx, killed_rx) = watch::channel(false);
    let kill_sent = Arc::new(AtomicBool::new(false));
    let subject = To::Node(node).fqmn_subject();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (load, next, acked_tx, mut killed) = (load.clone(), next.clone(), acked_tx.clone(), killed_rx.clone());
            let (subject, token, kv, kill_sent) = (subject.clone(), token.clone(), kv.clone(), kill_sent.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    if *killed.borrow() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= WRITES {
                        break;
                    }
                    let fqmn = format!(r#"SW:{kv}:set:["k{i}", {i}]"#);
                    let request = load.try_request(&subject, bearer(&token), fqmn);
                    let node_gone = async {
                        let _ = killed.wait_for(|k| *k).await;
                        tokio::time::sleep(REPLY_GRACE).await;
                    };
                    let outcome = tokio::select! {
                        reply = request => match reply {
                            Ok(message) => {
                                let body = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
                                Outcome::Reply(status_of(&message), body)
                            }
                            Err(e) => Outcome::Failed(error_chain(&e), kill_sent.load(Ordering::SeqCst)),
                        },
                        () = node_gone => Outcome::Unanswered,
                    };
                    if matches!(outcome, Outcome::Reply(200, _)) {
                        acked_tx.send_modify(|n| *n += 1);
                    }
                    outcomes.push((i, outcome));
                }
                outcomes
            })
        })
        .collect();

    within(
        "the first acknowledged writes",
        Duration::from_secs(20),
        acked_rx.wait_for(|n| *n >= KILL_AFTER),
    )
    .await
    .expect("the load tasks are running");
    kill_sent.store(true, Ordering::SeqCst);
    mesh.nodes[0].kill().await;
    killed_tx.send(true).expect("tasks watch the kill");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(
            within("a load task to finish", Duration::from_secs(15), task)
                .await
                .expect("load task"),
        );
    }

    let mut acked = BTreeMap::new();
    let (mut failed, mut unanswered) = (Vec::new(), 0);
    for (i, outcome) in &outcomes {
        match outcome {
            Outcome::Reply(200, body) => {
                assert!(body["tx"].is_string(), "write {i} acknowledged without a tx: {body}");
                acked.insert(format!("k{i}"), json!(i));
            }
            Outcome::Reply(status, body) => panic!("write {i} got {status} under load: {body}"),
            Outcome::Failed(e, after_kill) => {
                assert!(after_kill, "write {i} failed while the node was up: {e}");
                failed.push(e.as_str());
            }
            Outcome::Unanswered => unanswered += 1,
        }
    }
    assert!(acked.len() >= KILL_AFTER, "{} acknowledged", acked.len());
    assert!(
        acked.len() < WRITES && unanswered + failed.len() > 0,
        "the kill must land mid-load, with writes in flight"
    );
    let sent = outcomes.len();

    // The node comes back with every acknowledged write.
    mesh.nodes[0].restart().await;
    let token = client.login(&alice, node).await;
    let stored = kv_entries(client, node, &token, &kv).await;
    eprintln!(
        "{sent} writes sent: {} acknowledged, {unanswered} unanswered at the kill, {} failed {:?}; \
         {} stored after the restart",
        acked.len(),
        failed.len(),
        failed.first(),
        stored.len()
    );
    for (key, value) in &acked {
        assert_eq!(
            stored.get(key),
            Some(value),
            "acknowledged write of {key} lost in the kill"
        );
    }
    // Nothing else is there: only writes that were sent, each with its own value.
    for (key, value) in &stored {
        let i: usize = key.strip_prefix('k').and_then(|n| n.parse().ok()).expect("a key k<i>");
        assert!(i < WRITES && *value == json!(i), "unexpected entry {key} = {value}");
    }
    // `get`, one by one, agrees with the list.
    let gets = futures::stream::iter(acked.iter())
        .map(|(key, value)| {
            let (token, kv) = (&token, &kv);
            async move {
                let got = client
                    .fqmn_ok(node, &format!(r#"S:{kv}:get:["{key}"]"#), Some(token))
                    .await;
                (key, value, got)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (key, value, got) in gets {
        assert_eq!(&got["result"], value, "get {key} after the restart");
    }
    // Every committed set is one transaction with one new key: genesis + one per entry.
    let root = context_root(client, node, &token, &kv).await;
    let applied = root["applied"].as_u64().expect("applied");
    assert!(
        applied > acked.len() as u64,
        "applied {applied} < 1 + {} acknowledged",
        acked.len()
    );
    assert_eq!(
        applied,
        1 + stored.len() as u64,
        "one transaction per stored key: {root}"
    );

    // And the context takes writes again, on top of what survived.
    let written = client
        .fqmn_ok(node, &format!(r#"SW:{kv}:set:["after", 1]"#), Some(&token))
        .await;
    let root = context_root(client, node, &token, &kv).await;
    assert_eq!(root["applied"], json!(applied + 1), "{root}");
    assert_eq!(root["heads"], json!([written["tx"]]), "{root}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_heads_and_applied_survive_a_clean_restart() {
    let mut mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    let alice = new_key();
    let token = mesh.client.login(&alice, node).await;
    let a = Some(token.as_str());
    deploy(&mesh.client, node, a, "kv", "1.0.0").await;
    deploy(&mesh.client, node, a, "greeter", "1.0.0").await;
    let kv = create(&mesh.client, node, a, "kv").await;
    let greeter = create(&mesh.client, node, a, "greeter").await;

    // A load on both contexts at once: sets, deletes, greetings.
    let client = &mesh.client;
    let writes = (0..60).map(|i| {
        let fqmn = match i % 3 {
            0 => format!(r#"SW:{kv}:set:["k{i}", {{"n": {i}, "s": "v{i}"}}]"#),
            1 => format!(r#"SW:{kv}:delete:["k{}"]"#, i - 1),
            _ => format!(r#"SW:{greeter}:hello_world:["user{}"]"#, i % 4),
        };
        async move { client.fqmn_ok(node, &fqmn, a).await }
    });
    futures::stream::iter(writes)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let kv_root = context_root(client, node, &token, &kv).await;
    let greeter_root = context_root(client, node, &token, &greeter).await;
    assert_eq!(kv_root["applied"], json!(41), "genesis, 20 sets, 20 deletes: {kv_root}");
    assert_eq!(
        greeter_root["applied"],
        json!(21),
        "genesis and 20 greetings: {greeter_root}"
    );
    let entries = kv_entries(client, node, &token, &kv).await;
    let greetings = client
        .fqmn_ok(node, &format!(r#"S:{greeter}:greetings:["user2"]"#), a)
        .await;

    mesh.restart_node(0).await;
    let client = &mesh.client;
    let token = client.login(&alice, node).await;
    let a = Some(token.as_str());
    assert_eq!(
        context_root(client, node, &token, &kv).await,
        kv_root,
        "kv root after the restart"
    );
    assert_eq!(
        context_root(client, node, &token, &greeter).await,
        greeter_root,
        "greeter root after the restart"
    );
    assert_eq!(kv_entries(client, node, &token, &kv).await, entries);
    let again = client
        .fqmn_ok(node, &format!(r#"S:{greeter}:greetings:["user2"]"#), a)
        .await;
    assert_eq!(again["result"], greetings["result"]);

    // Calls go on from the same heads.
    let written = client.fqmn_ok(node, &format!(r#"SW:{kv}:set:["after", 1]"#), a).await;
    let root = context_root(client, node, &token, &kv).await;
    assert_eq!(root["applied"], json!(42), "{root}");
    assert_eq!(root["heads"], json!([written["tx"]]), "{root}");
    assert_ne!(root["root"], kv_root["root"]);
    let hello = client
        .fqmn_ok(node, &format!(r#"SW:{greeter}:hello_world:["user2"]"#), a)
        .await;
    assert_eq!(hello["result"], json!("Hello, user2!"));
    let count = client
        .fqmn_ok(node, &format!(r#"S:{greeter}:greetings:["user2"]"#), a)
        .await;
    assert_eq!(
        count["result"],
        json!(greetings["result"].as_u64().expect("a count") + 1)
    );
}

/// The compiled-module cache files (`<data>/modules/<settings>/<app>.wasmer`) of a node.
fn cached_artifacts(data: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for settings in std::fs::read_dir(data.join("modules")).expect("the module cache directory") {
        let settings = settings.expect("cache dir entry").path();
        for entry in std::fs::read_dir(&settings).expect("a settings directory") {
            let path = entry.expect("cache entry").path();
            if path.extension().is_some_and(|e| e == "wasmer") {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_module_cache_file_is_rebuilt() {
    let mut mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    let alice = new_key();
    let token = mesh.client.login(&alice, node).await;
    let a = Some(token.as_str());
    deploy(&mesh.client, node, a, "kv", "1.0.0").await;
    let kv = create(&mesh.client, node, a, "kv").await;
    mesh.client
        .fqmn_ok(node, &format!(r#"SW:{kv}:set:["before", "the corruption"]"#), a)
        .await;

    let status = mesh.nodes[0].stop_sigterm().await;
    assert!(status.success(), "SIGTERM exit: {status}");
    let artifacts = cached_artifacts(mesh.nodes[0].data_dir());
    let app = app_id("kv");
    let name = format!("{}.wasmer", app.trim_start_matches("0x"));
    assert_eq!(artifacts.len(), 1, "one cached module, kv's: {artifacts:?}");
    let artifact = artifacts[0].clone();
    assert!(artifact.ends_with(&name), "{artifact:?} is not named after app {app}");
    let hash_file = artifact.with_extension("keccak");
    let original = std::fs::read(&artifact).expect("read the artifact");
    assert_eq!(std::fs::read(&hash_file).expect("read the hash"), keccak256(&original));
    let mut corrupt = original.clone();
    let middle = corrupt.len() / 2;
    for byte in &mut corrupt[middle..middle + 64] {
        *byte ^= 0xa5;
    }
    std::fs::write(&artifact, &corrupt).expect("corrupt the artifact");

    mesh.nodes[0].restart().await;
    let client = &mesh.client;
    let token = client.login(&alice, node).await;
    let a = Some(token.as_str());
    let got = client.fqmn_ok(node, &format!(r#"S:{kv}:get:["before"]"#), a).await;
    assert_eq!(got["result"], json!("the corruption"));
    mesh.nodes[0]
        .wait_log("the cache hash check to fail", REQUEST_TIMEOUT, |line| {
            line.contains("WARN") && line.contains("fails its hash check") && line.contains(&name)
        })
        .await;
    let written = client.fqmn_ok(node, &format!(r#"SW:{kv}:set:["after", 2]"#), a).await;
    assert!(written["tx"].is_string(), "{written}");
    let listed = kv_entries(client, node, &token, &kv).await;
    assert_eq!(listed.len(), 2, "{listed:?}");

    // The entry was written again, whole and with a matching hash.
    let rebuilt = std::fs::read(&artifact).expect("the rebuilt artifact");
    assert_ne!(rebuilt, corrupt, "the corrupt artifact is still there");
    assert_eq!(
        std::fs::read(&hash_file).expect("the rebuilt hash"),
        keccak256(&rebuilt)
    );
    assert!(
        rebuilt == original,
        "compiling kv again gives the artifact it gave before"
    );
}
