//! The NATS front door: micro discovery, the FQMN and JSON-RPC endpoints on the shared
//! and per-node subjects, CMTP headers, MessagePack, error headers and stats, batches
//! and notifications.

use std::collections::BTreeSet;

use async_nats::service::{Info, PingResponse, Stats};
use async_nats::HeaderMap;
use cmesh_common::Address;
use cmesh_testkit::*;
use serde_json::{json, Value};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, *value);
    }
    map
}

/// The discovery id of `address`'s service instance, from `$SRV.PING.cmesh`.
fn instance_of(pings: &[PingResponse], address: Address) -> &PingResponse {
    pings
        .iter()
        .find(|p| p.metadata.get("address").map(String::as_str) == Some(address.to_string().as_str()))
        .unwrap_or_else(|| {
            panic!(
                "no $SRV.PING reply with metadata address {address}: {:?}",
                pings_summary(pings)
            )
        })
}

fn pings_summary(pings: &[PingResponse]) -> Vec<(String, std::collections::HashMap<String, String>)> {
    pings.iter().map(|p| (p.id.clone(), p.metadata.clone())).collect()
}

async fn stats_of(client: &Client, id: &str) -> Stats {
    let reply = client
        .request(&format!("$SRV.STATS.cmesh.{id}"), HeaderMap::new(), "")
        .await;
    serde_json::from_slice(&reply.raw).unwrap_or_else(|e| panic!("STATS reply does not parse ({e}): {:?}", reply.raw))
}

fn endpoint_counts(stats: &Stats, name: &str) -> (usize, usize, Option<String>) {
    let endpoint = stats
        .endpoints
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("STATS has no endpoint {name}"));
    (
        endpoint.requests,
        endpoint.errors,
        endpoint.last_error.as_ref().map(|e| format!("{}:{}", e.code, e.status)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_discovery_names_every_node() {
    let mesh = Mesh::start(2).await;
    let client = &mesh.client;
    let (first, other) = (mesh.node(0).address(), mesh.node(1).address());
    let mesh_id = cmesh_common::genesis::Genesis::load(&mesh.genesis_path())
        .expect("the test mesh's genesis")
        .mesh_id()
        .to_string();

    for subject in ["$SRV.PING", "$SRV.PING.cmesh"] {
        let pings: Vec<PingResponse> = client
            .gather(subject, 2)
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{subject} reply: {e}")))
            .collect();
        for ping in &pings {
            assert_eq!(ping.name, "cmesh", "service name");
            assert_eq!(ping.kind, "io.nats.micro.v1.ping_response");
            assert!(
                !ping.id.is_empty() && !ping.version.is_empty(),
                "id and version: {:?}",
                ping.id
            );
        }
        for address in [first, other] {
            assert_eq!(
                instance_of(&pings, address).metadata.get("mesh"),
                Some(&mesh_id),
                "every instance names the mesh id"
            );
        }
        assert_ne!(
            instance_of(&pings, first).id,
            instance_of(&pings, other).id,
            "instance ids are unique"
        );
    }

    let pings: Vec<PingResponse> = client
        .gather("$SRV.PING.cmesh", 2)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("ping"))
        .collect();
    for address in [first, other] {
        let id = instance_of(&pings, address).id.clone();
        // PING and INFO addressed to the one instance.
        let ping = client
            .request(&format!("$SRV.PING.cmesh.{id}"), HeaderMap::new(), "")
            .await;
        let ping: PingResponse = serde_json::from_slice(&ping.raw).expect("PING by id parses");
        assert_eq!(ping.id, id);

        let info = client
            .request(&format!("$SRV.INFO.cmesh.{id}"), HeaderMap::new(), "")
            .await;
        let info: Info = serde_json::from_slice(&info.raw).expect("INFO parses as a micro info response");
        assert_eq!(info.name, "cmesh");
        assert_eq!(info.metadata.get("address"), Some(&address.to_string()));
        assert_eq!(info.metadata.get("mesh"), Some(&mesh_id));
        let endpoints: BTreeSet<(String, String, String)> = info
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.subject.clone(), e.queue_group.clone()))
            .collect();
        let expected: BTreeSet<(String, String, String)> = [
            ("fqmn", "cmesh.fqmn".to_string()),
            ("rpc", "cmesh.rpc".to_string()),
            ("node-fqmn", format!("cmesh.node.{address}.fqmn")),
            ("node-rpc", format!("cmesh.node.{address}.rpc")),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s, "cmesh".to_string()))
        .collect();
        assert_eq!(endpoints, expected, "INFO endpoints of {address}");

        let stats = stats_of(client, &id).await;
        assert_eq!(stats.name, "cmesh");
        let names: BTreeSet<&str> = stats.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["fqmn", "rpc", "node-fqmn", "node-rpc"]),
            "STATS endpoints"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_with_cmtp_headers_in_json_or_msgpack() {
    let mesh = Mesh::start(2).await;
    let client = &mesh.client;
    let addresses = mesh.addresses();

    // Shared subject: any node answers.
    let reply = client.fqmn(To::Shared, "P:ping", None).await;
    assert_eq!(reply.status, 200, "P:ping on cmesh.fqmn: {}", reply.body);
    reply.assert_cmtp();
    assert_eq!(reply.header("Content-Type").as_deref(), Some(JSON));
    assert_eq!(reply.body["pong"], json!(true));
    let answered_by: Address = reply.body["node"].as_str().expect("node").parse().expect("address");
    assert!(
        addresses.contains(&answered_by),
        "answered by an unknown node {answered_by}"
    );

    // Per-node subjects: that node answers.
    for (i, node) in mesh.nodes.iter().enumerate() {
        let reply = client.fqmn(node, "P:ping", None).await;
        assert_eq!(reply.status, 200, "P:ping on node {i}: {}", reply.body);
        reply.assert_cmtp();
        assert_eq!(
            reply.body["node"],
            json!(node.address()),
            "node subject answered by that node"
        );

        let reply = client.rpc(node, "router.ping", json!({}), None).await;
        let result = reply.ok();
        assert_eq!(result, json!({"pong": true, "node": node.address()}));
        assert_eq!(reply.header("Content-Type").as_deref(), Some(JSON));
    }

    // MessagePack reply when the client accepts it.
    let node = mesh.node(1);
    let reply = client
        .request(
            &To::from(node).fqmn_subject(),
            headers(&[("Accept", MSGPACK)]),
            "P:ping",
        )
        .await;
    assert_eq!(reply.status, 200);
    reply.assert_cmtp();
    assert_eq!(reply.header("Content-Type").as_deref(), Some(MSGPACK));
    assert!(
        serde_json::from_slice::<Value>(&reply.raw).is_err(),
        "a MessagePack reply is not JSON"
    );
    let decoded: Value = rmp_serde::from_slice(&reply.raw).expect("MessagePack body");
    assert_eq!(decoded["pong"], json!(true));
    assert_eq!(decoded["node"], json!(node.address()));

    // MessagePack request (and so reply) on the RPC endpoint.
    let body = json!({"jsonrpc": "2.0", "method": "router.ping", "params": {}, "id": 7});
    let packed = rmp_serde::to_vec_named(&body).expect("pack");
    let reply = client
        .request(
            &To::from(node).rpc_subject(),
            headers(&[("Content-Type", MSGPACK)]),
            packed,
        )
        .await;
    assert_eq!(
        reply.header("Content-Type").as_deref(),
        Some(MSGPACK),
        "reply in the request's encoding"
    );
    assert_eq!(reply.ok()["pong"], json!(true));
    assert_eq!(reply.body["id"], json!(7));

    // MessagePack request, JSON reply when asked for.
    let packed = rmp_serde::to_vec_named(&body).expect("pack");
    let reply = client
        .request(
            &To::from(node).rpc_subject(),
            headers(&[("Content-Type", MSGPACK), ("Accept", JSON)]),
            packed,
        )
        .await;
    assert_eq!(reply.header("Content-Type").as_deref(), Some(JSON));
    assert!(serde_json::from_slice::<Value>(&reply.raw).is_ok(), "JSON reply");
    assert_eq!(reply.ok()["node"], json!(node.address()));

    // MessagePack FQMN (a packed string).
    let packed = rmp_serde::to_vec("P:ping").expect("pack");
    let reply = client
        .request(
            &To::from(node).fqmn_subject(),
            headers(&[("Content-Type", MSGPACK)]),
            packed,
        )
        .await;
    assert_eq!(reply.status, 200, "packed FQMN: {}", reply.body);
    assert_eq!(reply.header("Content-Type").as_deref(), Some(MSGPACK));
    assert_eq!(reply.body["pong"], json!(true));

    // An authenticated MessagePack call: whoami.
    let key = new_key();
    let token = client.login(&key, node).await;
    let mut h = bearer(&token);
    h.insert("Accept", MSGPACK);
    let reply = client.request(&To::from(node).fqmn_subject(), h, "I:whoami").await;
    assert_eq!(reply.status, 200, "I:whoami: {}", reply.body);
    assert_eq!(reply.body["address"], json!(key.address()));

    // router.info lists every node of the mesh, itself included.
    let info = client.fqmn_ok(node, "P:info", Some(&token)).await;
    assert_eq!(info["node"], json!(node.address()));
    assert_eq!(info["consensus"]["role"], json!("voter"), "consensus: {info}");
    assert_eq!(
        info["consensus"]["voters"].as_array().map(Vec::len),
        Some(2),
        "consensus: {info}"
    );
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "version: {info}"
    );
    assert!(info["mesh"].as_str().is_some_and(|m| !m.is_empty()), "mesh: {info}");
    let peers: BTreeSet<String> = info["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["address"].as_str().expect("peer address").to_string())
        .collect();
    let all: BTreeSet<String> = addresses.iter().map(ToString::to_string).collect();
    assert_eq!(peers, all, "router.info peers (every node, itself included)");
    let first_peer = info["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == json!(addresses[0]))
        .unwrap();
    assert!(first_peer["last_seen"].as_u64().is_some(), "last_seen: {first_peer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_service_error_headers_and_are_counted() {
    let mesh = Mesh::start(2).await;
    let client = &mesh.client;
    let node = mesh.node(1);
    let address = node.address();

    let pings: Vec<PingResponse> = client
        .gather("$SRV.PING.cmesh", 2)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("ping"))
        .collect();
    let id = instance_of(&pings, address).id.clone();
    let (fqmn_before, fqmn_errors_before, _) = endpoint_counts(&stats_of(client, &id).await, "node-fqmn");
    let (rpc_before, rpc_errors_before, _) = endpoint_counts(&stats_of(client, &id).await, "node-rpc");

    // 401: no credentials for an authenticated method, on both endpoints.
    let reply = client.fqmn(node, "I:whoami", None).await;
    reply.assert_fqmn_error(401);
    let reply = client.rpc(node, "iam.whoami", json!({}), None).await;
    reply.assert_rpc_error(-32000, 401);
    // 400: not an FQMN.
    let reply = client.fqmn(node, "no prefix here", None).await;
    reply.assert_fqmn_error(400);
    // A success in between is not an error.
    client.assert_alive(node).await;

    // The node's STATS count 3 FQMN requests (2 errors) and 1 RPC error; the counters
    // are updated right after the reply is sent, so wait for them.
    let (stats_fqmn, stats_rpc) = eventually("STATS to count the errors", EVENTUALLY, || async {
        let stats = stats_of(client, &id).await;
        let fqmn = endpoint_counts(&stats, "node-fqmn");
        let rpc = endpoint_counts(&stats, "node-rpc");
        (fqmn.0 >= fqmn_before + 3 && rpc.0 > rpc_before).then_some((fqmn, rpc))
    })
    .await;
    // Request counts are at least ours (a harness request may be recorded late); the
    // error counts are exact: nothing else failed on this node.
    assert!(stats_fqmn.0 >= fqmn_before + 3, "node-fqmn requests");
    assert_eq!(stats_fqmn.1, fqmn_errors_before + 2, "node-fqmn errors");
    let last = stats_fqmn.2.expect("node-fqmn last_error");
    assert!(last.starts_with("400:"), "last_error of node-fqmn is the 400: {last}");
    assert!(stats_rpc.0 > rpc_before, "node-rpc requests");
    assert_eq!(stats_rpc.1, rpc_errors_before + 1, "node-rpc errors");
    assert!(
        stats_rpc.2.expect("node-rpc last_error").starts_with("401:"),
        "last_error of node-rpc"
    );

    // Every service needs credentials: 401 without; then the service's own answer (a
    // context reference that names no context held here, however short, or a consensus
    // read that names nothing: 404).
    let token = client.login(&new_key(), node).await;
    for (fqmn, status) in [
        ("S:0x01:get", 404),
        ("SW:0x01:set:{\"k\":1}", 404),
        ("A:~1.0.0:0x01:hello", 404),
        ("S:0x0123456789:get", 404),
        ("C:anything", 404),
    ] {
        client.fqmn(node, fqmn, None).await.assert_fqmn_error(401);
        client.fqmn(node, fqmn, Some(&token)).await.assert_fqmn_error(status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_notifications() {
    let mesh = Mesh::start(1).await;
    let client = &mesh.client;
    let node = mesh.node(0);

    let batch = json!([
        {"jsonrpc": "2.0", "method": "router.ping", "params": {}, "id": 1},
        {"jsonrpc": "2.0", "method": "no.such_method", "params": {}, "id": 2},
        {"jsonrpc": "2.0", "method": "router.ping", "params": {}},
        {"jsonrpc": "1.0", "method": "router.ping", "id": 3},
        {"jsonrpc": "2.0", "method": "iam.challenge", "params": {"address": 5}, "id": "four"},
        {"jsonrpc": "2.0", "method": "iam.whoami", "id": 5}
    ]);
    let key = new_key();
    let token = client.login(&key, node).await;
    let reply = client.rpc_value(node, &batch, Some(&token)).await;
    assert_eq!(
        reply.status, 200,
        "a batch reply is 200 whatever its items say: {}",
        reply.body
    );
    reply.assert_cmtp();
    let responses = reply
        .body
        .as_array()
        .unwrap_or_else(|| panic!("a batch reply is an array: {}", reply.body));
    assert_eq!(
        responses.len(),
        5,
        "one response per request with an id (the notification gets none): {}",
        reply.body
    );
    let by_id = |id: Value| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no response with id {id} in {}", reply.body))
    };
    assert_eq!(by_id(json!(1))["result"]["pong"], json!(true));
    assert_eq!(by_id(json!(2))["error"]["code"], json!(-32601));
    assert_eq!(by_id(json!(2))["error"]["data"]["status"], json!(404));
    assert_eq!(by_id(json!(3))["error"]["code"], json!(-32600));
    assert_eq!(by_id(json!("four"))["error"]["code"], json!(-32602));
    assert_eq!(by_id(json!("four"))["error"]["data"]["status"], json!(400));
    assert_eq!(by_id(json!(5))["result"]["address"], json!(key.address()));

    // A single notification: an empty (or null) body, no error.
    let reply = client
        .rpc_value(
            node,
            &json!({"jsonrpc": "2.0", "method": "router.ping", "params": {}}),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "notification: {}", reply.body);
    reply.assert_cmtp();
    assert_eq!(reply.body, Value::Null, "a notification gets no response object");

    // Empty batch: invalid request.
    let reply = client.rpc_value(node, &json!([]), None).await;
    reply.assert_rpc_error(-32600, 400);

    client.assert_alive(node).await;
}
