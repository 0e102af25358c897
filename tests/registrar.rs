//! The registrar through the mesh: names registered through any node, resolved and
//! called through any other, owned by the signer, and kept across a registrar restart.

use std::collections::BTreeSet;

use cmesh_testkit::*;
use serde_json::{json, Value};

fn names_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("registrar.list answers an array: {list}"))
        .iter()
        .map(|r| r["name"].as_str().expect("record name").to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_across_the_mesh_and_across_a_registrar_restart() {
    let mut mesh = Mesh::start(3).await;
    let (n1, n2) = (mesh.node(1).address(), mesh.node(2).address());
    let client = &mesh.client;
    let alice = new_key();
    let bob = new_key();
    // Alice logs in on node 1, bob on node 2: tokens are used on other nodes too.
    let alice_token = client.login(&alice, n1).await;
    let bob_token = client.login(&bob, n2).await;

    // Register through a node that is not the registrar.
    let record = client
        .call(
            n1,
            "registrar.register",
            json!({"name": "Hello.mcom", "target": "I:whoami"}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(
        record["name"],
        json!("hello.mcom"),
        "names are normalised to lower case: {record}"
    );
    assert_eq!(
        record["owner"],
        json!(alice.address()),
        "the owner is the caller: {record}"
    );
    assert_eq!(record["target"], json!("I:whoami"));
    let registered_at = record["registered_at"].as_u64().expect("registered_at");
    assert_eq!(record["updated_at"].as_u64(), Some(registered_at));

    // Resolve through another node, with another caller's token: the same record.
    let resolved = client
        .call(n2, "registrar.resolve", json!({"name": "hello.mcom"}), Some(&bob_token))
        .await;
    assert_eq!(resolved, record, "resolve through node 2");
    let resolved = client
        .fqmn_ok(n2, r#"R:resolve:{"name":"hello.mcom"}"#, Some(&bob_token))
        .await;
    assert_eq!(resolved, record, "R:resolve through node 2");
    // On the registrar itself, with alice's token issued by node 1.
    let resolved = client
        .call(
            mesh.node(0),
            "registrar.resolve",
            json!({"name": "HELLO.mcom"}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(resolved, record, "resolve on the registrar, any case");

    // R:<name> runs the target for the caller.
    let who = client.fqmn_ok(n2, "R:hello.mcom", Some(&bob_token)).await;
    assert_eq!(
        who["address"],
        json!(bob.address()),
        "R:hello.mcom → I:whoami answers for the caller: {who}"
    );
    assert_eq!(who["node"], json!(n2));
    let who = client.fqmn_ok(n1, "R:hello.mcom", Some(&alice_token)).await;
    assert_eq!(who["address"], json!(alice.address()));
    // ... also in the seed spellings.
    let who = client.fqmn_ok(To::Shared, "0Rx:hello.mcom", Some(&bob_token)).await;
    assert_eq!(who["address"], json!(bob.address()), "0Rx: spelling");
    // Without credentials: 401, the target does not run.
    client.fqmn(n2, "R:hello.mcom", None).await.assert_fqmn_error(401);
    // Unknown name: 404.
    client
        .fqmn(n2, "R:nobody.mcom", Some(&bob_token))
        .await
        .assert_fqmn_error(404);
    client
        .rpc(
            n2,
            "registrar.resolve",
            json!({"name": "nobody.mcom"}),
            Some(&bob_token),
        )
        .await
        .assert_rpc_error(-32000, 404);

    // Taken: 409, also through the FQMN write form.
    let reply = client
        .rpc(
            n2,
            "registrar.register",
            json!({"name": "hello.mcom", "target": "P:ping"}),
            Some(&bob_token),
        )
        .await;
    reply.assert_rpc_error(-32000, 409);
    let reply = client
        .fqmn(
            n2,
            r#"RW:register:{"name":"HELLO.mcom","target":"P:ping"}"#,
            Some(&bob_token),
        )
        .await;
    reply.assert_fqmn_error(409);

    // Transfer by someone who does not own it: 403, record unchanged.
    let reply = client
        .rpc(
            n2,
            "registrar.transfer",
            json!({"name": "hello.mcom", "to": bob.address()}),
            Some(&bob_token),
        )
        .await;
    reply.assert_rpc_error(-32000, 403);
    let reply = client
        .rpc(n2, "registrar.release", json!({"name": "hello.mcom"}), Some(&bob_token))
        .await;
    reply.assert_rpc_error(-32000, 403);
    let resolved = client
        .call(
            n1,
            "registrar.resolve",
            json!({"name": "hello.mcom"}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(resolved, record, "refused transfer and release change nothing");

    // Invalid names and targets: 422.
    for bad in [
        "hello",
        "a.b.mcom",
        "bad_label.mcom",
        "-edge.mcom",
        "edge-.mcom",
        "hello.nope",
        "",
        ".mcom",
        "he llo.mcom",
    ] {
        let reply = client
            .rpc(
                n1,
                "registrar.register",
                json!({"name": bad, "target": "I:whoami"}),
                Some(&alice_token),
            )
            .await;
        assert_eq!(
            reply.status, 422,
            "name {bad:?} must be refused with 422: {}",
            reply.body
        );
        reply.assert_rpc_error(-32000, 422);
    }
    for bad in ["", "not an fqmn", "X:nothing", "I:"] {
        let reply = client
            .rpc(
                n1,
                "registrar.register",
                json!({"name": "target.mcom", "target": bad}),
                Some(&alice_token),
            )
            .await;
        assert_eq!(
            reply.status, 422,
            "target {bad:?} must be refused with 422: {}",
            reply.body
        );
    }
    let long_label = format!("{}.mcom", "a".repeat(64));
    let reply = client
        .rpc(
            n1,
            "registrar.register",
            json!({"name": long_label, "target": "I:whoami"}),
            Some(&alice_token),
        )
        .await;
    reply.assert_rpc_error(-32000, 422);

    // A second name, transferred by its owner; a third, released.
    client
        .call(
            n1,
            "registrar.register",
            json!({"name": "second.mcom", "target": "P:ping"}),
            Some(&alice_token),
        )
        .await;
    let moved = client
        .call(
            n1,
            "registrar.transfer",
            json!({"name": "second.mcom", "to": bob.address()}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(moved["owner"], json!(bob.address()), "transfer result: {moved}");
    assert!(
        moved["updated_at"].as_u64() >= moved["registered_at"].as_u64(),
        "updated_at: {moved}"
    );
    let resolved = client
        .call(
            n2,
            "registrar.resolve",
            json!({"name": "second.mcom"}),
            Some(&bob_token),
        )
        .await;
    assert_eq!(resolved["owner"], json!(bob.address()));
    // Now alice is no longer the owner.
    client
        .rpc(
            n1,
            "registrar.transfer",
            json!({"name": "second.mcom", "to": alice.address()}),
            Some(&alice_token),
        )
        .await
        .assert_rpc_error(-32000, 403);
    // The new owner's name works: R:second.mcom → P:ping.
    let pong = client.fqmn_ok(n2, "R:second.mcom", Some(&bob_token)).await;
    assert_eq!(pong["pong"], json!(true));

    client
        .call(
            n2,
            "registrar.register",
            json!({"name": "gone.mcom", "target": "I:whoami"}),
            Some(&bob_token),
        )
        .await;
    let released = client
        .call(n2, "registrar.release", json!({"name": "gone.mcom"}), Some(&bob_token))
        .await;
    assert_eq!(released["name"], json!("gone.mcom"));
    client
        .rpc(
            n1,
            "registrar.resolve",
            json!({"name": "gone.mcom"}),
            Some(&alice_token),
        )
        .await
        .assert_rpc_error(-32000, 404);

    // Lists: all, by owner.
    let all = client.call(n1, "registrar.list", json!({}), Some(&alice_token)).await;
    assert_eq!(names_of(&all), set(&["hello.mcom", "second.mcom"]));
    let alices = client
        .call(
            n2,
            "registrar.list",
            json!({"owner": alice.address()}),
            Some(&bob_token),
        )
        .await;
    assert_eq!(names_of(&alices), set(&["hello.mcom"]));
    let bobs = client
        .call(
            n1,
            "registrar.list",
            json!({"owner": bob.address()}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(names_of(&bobs), set(&["second.mcom"]));
    let second_record = bobs[0].clone();

    // A released name can be registered again, by someone else.
    let again = client
        .call(
            n1,
            "registrar.register",
            json!({"name": "gone.mcom", "target": "P:ping"}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(again["owner"], json!(alice.address()));
    client
        .call(
            n1,
            "registrar.release",
            json!({"name": "gone.mcom"}),
            Some(&alice_token),
        )
        .await;

    // Restart the registrar: everything is still there.
    let before_all = client.call(n1, "registrar.list", json!({}), Some(&alice_token)).await;
    mesh.restart_node(0).await;
    let client = &mesh.client;
    let after_all = client.call(n1, "registrar.list", json!({}), Some(&alice_token)).await;
    assert_eq!(after_all, before_all, "the registrar's names after a restart");
    let resolved = client
        .call(n2, "registrar.resolve", json!({"name": "hello.mcom"}), Some(&bob_token))
        .await;
    assert_eq!(resolved, record, "hello.mcom after a restart");
    let resolved = client
        .call(
            n2,
            "registrar.resolve",
            json!({"name": "second.mcom"}),
            Some(&bob_token),
        )
        .await;
    assert_eq!(resolved, second_record, "second.mcom after a restart");
    client
        .rpc(n2, "registrar.resolve", json!({"name": "gone.mcom"}), Some(&bob_token))
        .await
        .assert_rpc_error(-32000, 404);
    // And it still takes writes and still refuses taken names.
    client
        .rpc(
            n2,
            "registrar.register",
            json!({"name": "hello.mcom", "target": "P:ping"}),
            Some(&bob_token),
        )
        .await
        .assert_rpc_error(-32000, 409);
    client
        .call(
            n2,
            "registrar.register",
            json!({"name": "third.mcom", "target": "I:whoami"}),
            Some(&bob_token),
        )
        .await;
    let who = client.fqmn_ok(n1, "R:third.mcom", Some(&alice_token)).await;
    assert_eq!(who["address"], json!(alice.address()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_need_a_caller_and_a_registrar() {
    let mesh = Mesh::start(2).await;
    let client = &mesh.client;
    let n1 = mesh.node(1).address();

    // Every registrar method needs credentials.
    for (method, params) in [
        ("registrar.register", json!({"name": "x.mcom", "target": "I:whoami"})),
        ("registrar.resolve", json!({"name": "x.mcom"})),
        ("registrar.transfer", json!({"name": "x.mcom", "to": n1})),
        ("registrar.release", json!({"name": "x.mcom"})),
        ("registrar.list", json!({})),
    ] {
        client.rpc(n1, method, params, None).await.assert_rpc_error(-32000, 401);
    }
    client
        .fqmn(n1, r#"RW:register:{"name":"x.mcom","target":"I:whoami"}"#, None)
        .await
        .assert_fqmn_error(401);

    // With the registrar gone, a non-registrar node answers 503 (not a hang, not a 500).
    let alice = new_key();
    let token = client.login(&alice, n1).await;
    let mut mesh = mesh;
    let status = mesh.nodes[0].stop_sigterm().await;
    assert_eq!(status.code(), Some(0));
    let reply = mesh
        .client
        .rpc(
            n1,
            "registrar.register",
            json!({"name": "x.mcom", "target": "I:whoami"}),
            Some(&token),
        )
        .await;
    reply.assert_rpc_error(-32000, 503);
    mesh.client.assert_alive(n1).await;
}
