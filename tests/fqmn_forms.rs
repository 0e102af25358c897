//! The FQMN forms the original CMesh sends, through a real node: each is understood, and
//! one that names nothing is 404, never 400 (docs/FQMN.md, "The forms CMesh itself
//! sends" and "400 or 404"). Also the method table's edges: unknown methods, `C:`/`CW:`
//! keeping their body, and `events.audit` for node admins only.

use cmesh_testkit::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forms_cmesh_sends_are_understood() {
    let admin = new_key();
    let mesh = Mesh::with(MeshOptions::new(1).admin(admin.address())).await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let token = client.login(&admin, node).await;
    let t = Some(token.as_str());

    // A short context reference that matches nothing: 404, telling whom to ask.
    let missing = client.fqmn(node, "0xS:0x001:blah_blah", t).await;
    missing.assert_fqmn_error(404);
    assert!(
        missing
            .error_message()
            .is_some_and(|m| m.contains("held by its members")),
        "{}",
        missing.body
    );

    // With a context of kv, short prefixes of any length name it.
    deploy(client, node, t, "kv", "1.0.0").await;
    let context = create(client, node, t, "kv").await;
    client
        .fqmn_ok(node, &format!(r#"SW:{context}:set:{{"key":"a","value":1}}"#), t)
        .await;
    // The write path's counters show in P:info: the genesis and the write, committed.
    let info = client.fqmn_ok(node, "P:info", t).await;
    assert!(info["writes"]["transactions"].as_u64() >= Some(2), "{info}");
    assert!(info["writes"]["commits"].as_u64() >= Some(2), "{info}");
    let short = &context[..5]; // 0x and three hex digits, like CMesh's 0x001
    let read = client
        .fqmn_ok(node, &format!(r#"0xS:{short}:get:{{"key":"a"}}"#), t)
        .await;
    assert_eq!(read["result"], json!(1), "{read}");
    // The bare context (CMesh registers names for `0xS:0x001`) is its root, as ctx.root.
    let root = client.call(node, "ctx.root", json!({"context": context}), t).await;
    let bare = client.fqmn_ok(node, &format!("0xS:{short}"), t).await;
    assert_eq!(bare, root);
    let named = client
        .call(
            node,
            "registrar.register",
            json!({"name": "helloworld.mcom", "target": format!("0xS:{short}")}),
            t,
        )
        .await;
    assert_eq!(named["name"], json!("helloworld.mcom"), "{named}");
    assert_eq!(client.fqmn_ok(node, "0xR:helloWorld.mcom", t).await, root);

    // The events miner's topics, read with its trailing verb, and its payloads kept as
    // written: two integers joined by a dot, which JSON would print as 12345.6789.
    let topic = "events.state.contracts.0x001.blah_blah";
    let empty = client.fqmn_ok(node, &format!("0xE:{topic}:read"), t).await;
    assert_eq!(empty, json!([]));
    client.fqmn_ok(node, "0xEW:events.mined:12345.67890", t).await;
    client.fqmn_ok(node, &format!(r#"EW:{topic}:{{"n":1}}"#), t).await;
    let mined = client.fqmn_ok(node, "0xE:events.mined:read", t).await;
    assert_eq!(data_of(&mined), vec![json!("12345.67890")], "{mined}");
    let with_verb = client.fqmn_ok(node, &format!("0xE:{topic}:read"), t).await;
    assert_eq!(with_verb, client.fqmn_ok(node, &format!("E:{topic}"), t).await);
    assert_eq!(data_of(&with_verb), vec![json!({"n": 1})]);
    // A verb that is no verb of the events service names nothing.
    let stuff = client.fqmn(node, "0xE:ch1:stuff", t).await;
    stuff.assert_fqmn_error(404);
    assert!(
        stuff.error_message().is_some_and(|m| m.contains("read")),
        "{}",
        stuff.body
    );

    // Every name's registrations, by kind.
    let registered = client.fqmn_ok(node, "0Ex:0Rx:Registered", t).await;
    let names: Vec<&Value> = registered
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["data"]["name"])
        .collect();
    assert_eq!(names, [&json!("helloworld.mcom")], "{registered}");
    let transferred = client.fqmn_ok(node, "0Ex:0Rx:helloworld.mcom:Transferred", t).await;
    assert_eq!(transferred, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_consensus_bodies_and_the_audit_method() {
    let admin = new_key();
    let mesh = Mesh::with(MeshOptions::new(1).admin(admin.address())).await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let admin_token = client.login(&admin, node).await;
    let user_token = client.login(&new_key(), node).await;
    let (a, u) = (Some(admin_token.as_str()), Some(user_token.as_str()));

    // Unknown methods need credentials first, then are 404 with the list of methods.
    for fqmn in ["I:frobnicate", "P:nope", "R:nope"] {
        client.fqmn(node, fqmn, None).await.assert_fqmn_error(401);
        let reply = client.fqmn(node, fqmn, u).await;
        reply.assert_fqmn_error(404);
        assert!(
            reply.error_message().is_some_and(|m| m.contains("ctx.join")),
            "{fqmn}: {}",
            reply.body
        );
    }
    client
        .rpc(node, "nope.nope", json!({}), u)
        .await
        .assert_rpc_error(-32601, 404);

    // C: reads the registry's Raft; an unknown body is 404 naming the reads there are.
    let status = client.fqmn(node, "C:status", u).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["leader"], json!(node), "a one-voter mesh leads itself");
    assert_eq!(status.body["role"], json!("voter"));
    let nodes = client.fqmn(node, "C:nodes", u).await;
    assert_eq!(
        nodes.body["nodes"],
        json!([{"node": node, "role": "voter"}]),
        "{}",
        nodes.body
    );
    let unknown = client.fqmn(node, "C:frobnicate", u).await;
    unknown.assert_fqmn_error(404);
    assert!(
        unknown
            .error_message()
            .is_some_and(|m| m.contains("C:status") && m.contains("C:nodes")),
        "{}",
        unknown.body
    );
    // CW: takes registry commands: admission is for mesh admins (403 for anyone else),
    // a malformed command is 400 naming the commands there are.
    let stranger = new_key().address();
    let command = format!(r#"CW:admit:{{"node":"{stranger}","role":"learner"}}"#);
    client.fqmn(node, &command, u).await.assert_fqmn_error(403);
    let malformed = client.fqmn(node, r#"CW:admit:{"node":"0x00"}"#, u).await;
    malformed.assert_fqmn_error(400);
    assert!(
        malformed.error_message().is_some_and(|m| m.contains("admit, remove")),
        "{}",
        malformed.body
    );
    let unknown = client.fqmn(node, r#"CW:frobnicate:{}"#, u).await;
    unknown.assert_fqmn_error(400);

    // events.audit: node admins only; the chain it verifies holds the requests so far.
    client
        .rpc(node, "events.audit", json!({}), u)
        .await
        .assert_rpc_error(-32000, 403);
    let audit = client.call(node, "events.audit", json!({}), a).await;
    let entries = audit["chain"]["entries"].as_u64().expect("entries");
    assert!(entries >= 6, "the requests above are audited: {audit}");
    assert_eq!(audit["durable_head"], audit["chain"]["head"], "{audit}");
    assert!(audit["events"]["audit_appended"].as_u64() >= Some(entries), "{audit}");
}

/// The `data` of each event in an `E:` answer, oldest first.
fn data_of(events: &Value) -> Vec<Value> {
    events
        .as_array()
        .expect("a list of events")
        .iter()
        .map(|e| e["data"].clone())
        .collect()
}
