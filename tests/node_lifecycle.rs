//! `cmesh node run` as an operator sees it: the key file, the ready line, signals, and
//! NATS being down or restarting.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cmesh_common::SigningKey;
use cmesh_testkit::*;
use nix::sys::signal::Signal;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_is_private_and_the_address_survives_restarts() {
    let nats = NatsServer::start();
    let mut node = Node::start(0, &nats.url(), NodeOptions { ..Default::default() }).await;
    let address = node.address();

    // The key file exists, is readable by the owner only, and is the key of the address.
    let key_path = node.key_path();
    let metadata = std::fs::metadata(&key_path).expect("node.key exists in the data dir");
    assert_eq!(
        metadata.permissions().mode() & 0o777,
        0o600,
        "node.key must have mode 0600"
    );
    let key = SigningKey::load(&key_path).expect("node.key holds a key");
    assert_eq!(key.address(), address, "the ready line names the address of node.key");

    // Exactly one stdout line, the ready line.
    let stdout = node.logs().stdout();
    assert_eq!(
        stdout,
        vec![format!("cmesh node {address} ready")],
        "stdout of a running node"
    );

    // It logs on stderr (RUST_LOG=info), naming its address.
    let wanted = address.to_string();
    node.wait_log("a line naming its address", Duration::from_secs(5), |l| {
        l.contains(&wanted)
    })
    .await;

    // SIGTERM: clean exit 0.
    let status = node.stop_sigterm().await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");

    // Same data dir: same key, same address; the key file is not rewritten.
    let before = std::fs::read(&key_path).expect("read node.key");
    node.respawn();
    let again = node.wait_ready(READY_TIMEOUT).await;
    assert_eq!(again, address, "a restarted node keeps its address");
    assert_eq!(
        std::fs::read(&key_path).expect("read node.key"),
        before,
        "node.key unchanged by a restart"
    );
    let mode = std::fs::metadata(&key_path).expect("node.key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "node.key still 0600 after a restart");

    // It serves after the restart, and SIGINT also ends it cleanly.
    let client = Client::connect(&nats.url()).await;
    client.assert_alive(&node).await;
    let status = node.stop_with(Signal::SIGINT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_nats_is_down_retries_then_serves() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    nats.stop();

    let mut node = Node::spawn(0, &url, NodeOptions { ..Default::default() });
    let line = node
        .wait_log(
            "that it cannot reach NATS and will retry",
            Duration::from_secs(15),
            |line| {
                let line = line.to_ascii_lowercase();
                line.contains("retry") || line.contains("retrying") || line.contains("backoff")
            },
        )
        .await;
    assert!(
        node.logs().stdout().is_empty(),
        "no ready line while NATS is down (logged: {line})"
    );

    nats.restart();
    let address = node.wait_ready(Duration::from_secs(30)).await;
    let client = Client::connect(&url).await;
    client.assert_alive(address).await;
    client.assert_alive(To::Shared).await;
    let status = node.stop_sigterm().await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_again_after_nats_restarts() {
    let mut mesh = Mesh::start(1).await;
    let address = mesh.node(0).address();
    let key = new_key();
    mesh.client.assert_alive(address).await;

    mesh.nats.restart();

    // The node (and our client) reconnect on their own; wait until the node answers.
    let client = &mesh.client;
    eventually(
        "the node to answer P:ping after NATS restarted",
        EVENTUALLY,
        || async move {
            let message = client
                .try_request(&To::Node(address).fqmn_subject(), Default::default(), "P:ping")
                .await
                .ok()?;
            let status = message.headers.as_ref()?.get("Cmtp-Status")?.as_str().to_string();
            (status == "200").then_some(())
        },
    )
    .await;

    // Everything works again: shared subjects, login, an authenticated call.
    mesh.client.assert_alive(To::Shared).await;
    let token = mesh.client.login(&key, address).await;
    let who = mesh.client.call(address, "iam.whoami", json!({}), Some(&token)).await;
    assert_eq!(who["address"], json!(key.address()));

    let status = mesh.nodes[0].stop_sigterm().await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_line_means_serving_and_stoppable() {
    // Whatever a client sends right after the ready line is answered, on every endpoint
    // (no "no responders"), and a SIGTERM right after it is a clean stop. Several
    // rounds, as both are races when the node gets them wrong.
    let nats = NatsServer::start();
    let client = Client::connect(&nats.url()).await;
    let mut node = Node::start(0, &nats.url(), NodeOptions { ..Default::default() }).await;
    let status = node.stop_sigterm().await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    for round in 0..5 {
        node.respawn();
        let address = node.wait_ready(READY_TIMEOUT).await;
        let to = To::Node(address);
        let ping_rpc = r#"{"jsonrpc":"2.0","method":"router.ping","id":1}"#;
        let subjects = [
            to.rpc_subject(),
            to.fqmn_subject(),
            To::Shared.rpc_subject(),
            To::Shared.fqmn_subject(),
        ];
        let (node_rpc, node_fqmn, shared_rpc, shared_fqmn) = tokio::join!(
            client.try_request(&subjects[0], Default::default(), ping_rpc),
            client.try_request(&subjects[1], Default::default(), "P:ping"),
            client.try_request(&subjects[2], Default::default(), ping_rpc),
            client.try_request(&subjects[3], Default::default(), "P:ping"),
        );
        for (what, reply) in [
            ("node rpc", node_rpc),
            ("node fqmn", node_fqmn),
            ("shared rpc", shared_rpc),
            ("shared fqmn", shared_fqmn),
        ] {
            if let Err(e) = reply {
                panic!("round {round}: request on the {what} subject right after the ready line: {e}");
            }
        }
        let status = node.stop_sigterm().await;
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: SIGTERM right after ready gives {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_registrar_store_is_migrated_into_the_mesh_registry_once() {
    let nats = NatsServer::start();
    let mut node = Node::prepare(0, &nats.url(), NodeOptions::default());
    // The store a `--registrar` node of an earlier release left in its data dir.
    let owners = [new_key(), new_key()];
    {
        let policy = cmesh_registrar::NamePolicy::new(["mcom"]).expect("a policy");
        let store = cmesh_registrar::RegistrarStore::open(&node.data_dir().join("registrar.redb"), policy)
            .expect("an old store");
        for i in 0..30 {
            let owner = owners[i % 2].address();
            store
                .register(owner, &format!("old{i}.mcom"), "I:whoami", 1_000 + i as u64)
                .expect("registered in the old store");
        }
    }
    node.respawn();
    node.wait_ready(READY_TIMEOUT).await;

    // Every name answers through the node, for its old owner, once the migration is done.
    let client = Client::connect(&nats.url()).await;
    let token = client.login(&owners[1], &node).await;
    node.wait_log("the migration to finish", EVENTUALLY, |l| {
        l.contains("the single registrar's names are in the mesh registry")
    })
    .await;
    for i in [0usize, 1, 29] {
        let record = client
            .call(
                &node,
                "registrar.resolve",
                json!({ "name": format!("old{i}.mcom") }),
                Some(&token),
            )
            .await;
        assert_eq!(record["owner"], json!(owners[i % 2].address()), "{record}");
        assert_eq!(record["target"], json!("I:whoami"));
    }
    assert!(!node.data_dir().join("registrar.redb").exists());
    assert!(node.data_dir().join("registrar.redb.migrated").exists());

    // Once only: after a restart nothing is migrated again, and the names stay.
    let status = node.stop_sigterm().await;
    assert_eq!(status.code(), Some(0));
    node.respawn();
    node.wait_ready(READY_TIMEOUT).await;
    let token = client.login(&owners[0], &node).await;
    let listed = client
        .call(
            &node,
            "registrar.list",
            json!({ "owner": owners[0].address() }),
            Some(&token),
        )
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(15), "{listed}");
    let migrations = node
        .logs()
        .stderr()
        .iter()
        .filter(|l| l.contains("migrating the single registrar"))
        .count();
    assert_eq!(migrations, 1, "the names are migrated on the first start only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_grants_of_an_earlier_release_are_listed_and_no_longer_count() {
    let nats = NatsServer::start();
    let mut node = Node::prepare(0, &nats.url(), NodeOptions::default());
    let alice = new_key();
    // The attribute table an earlier release's iam.grant wrote into `iam.redb`.
    {
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("attributes");
        let db = redb::Database::create(node.data_dir().join("iam.redb")).expect("an old IAM store");
        let txn = db.begin_write().expect("a write");
        {
            let mut attributes = txn.open_table(table).expect("the table");
            let granted = rmp_serde::to_vec(&vec!["team=blue"]).expect("encoded");
            attributes
                .insert(alice.address().to_string().as_str(), granted.as_slice())
                .expect("inserted");
        }
        txn.commit().expect("committed");
    }
    node.respawn();
    node.wait_ready(READY_TIMEOUT).await;
    let wanted = alice.address().to_string();
    node.wait_log("the per-node grant to be listed", EVENTUALLY, |l| {
        l.contains("no longer counts") && l.contains(&wanted) && l.contains("team=blue") && l.contains("iam.grant")
    })
    .await;
    let client = Client::connect(&nats.url()).await;
    let token = client.login(&alice, &node).await;
    let who = client.call(&node, "iam.whoami", json!({}), Some(&token)).await;
    assert_eq!(who["attributes"], json!([]), "{who}");
    assert!(
        node.data_dir().join("iam.redb").exists(),
        "the old file is left as it was"
    );
}
