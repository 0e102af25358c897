//! Applications and contexts through a real node: apps deployed over NATS, contexts
//! created and called by FQMN and JSON-RPC, roles, version pins, names pointing at
//! context methods, and the events transactions publish.

use std::collections::BTreeSet;

use cmesh_testkit::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_through_every_front_door() {
    let mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let alice = new_key();
    let bob = new_key();
    let alice_token = client.login(&alice, node).await;
    let bob_token = client.login(&bob, node).await;
    let (a, b) = (Some(alice_token.as_str()), Some(bob_token.as_str()));

    let deployed = deploy(client, node, a, "greeter", "4.1.3").await;
    assert_eq!(deployed["name"], json!("greeter"));
    assert_eq!(deployed["version"], json!("4.1.3"));
    let app = deployed["app"].as_str().expect("app id").to_string();
    assert_eq!(app, app_id("greeter"), "the app id is the keccak256 of the module");
    let methods: Vec<&str> = deployed["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(methods, ["greetings", "hello_world"]);
    // Deploying the same code under the same version again is a no-op, other code a 409.
    assert_eq!(deploy(client, node, a, "greeter", "4.1.3").await["app"], json!(app));
    let reply = client
        .rpc(
            node,
            "app.deploy",
            json!({"name": "greeter", "version": "4.1.3", "wasm": wasm_base64("kv")}),
            a,
        )
        .await;
    assert_eq!(
        reply.rpc_status(),
        Some(409),
        "other code under a deployed version: {}",
        reply.body
    );
    let list = client.call(node, "app.list", json!(null), a).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    let created = client.call(node, "ctx.create", json!({"app": "greeter"}), a).await;
    let context = created["context"].as_str().expect("context").to_string();
    assert_eq!(context.len(), 66, "a 32-byte id: {created}");
    assert_eq!(created["role"], json!("admin"));
    assert_eq!(created["version"], json!("4.1.3"));

    // A view by FQMN, with the full id and with the seed spelling and a prefix.
    let hello = client
        .fqmn_ok(node, &format!(r#"S:{context}:hello_world:["Dexter"]"#), a)
        .await;
    assert_eq!(hello["result"], json!("Hello, Dexter!"));
    assert!(hello.get("tx").is_none(), "a view makes no transaction: {hello}");
    let prefix = &context[..12];
    let seed = client
        .fqmn_ok(node, &format!(r#"0Sx:{prefix}:hello_world:["Dexter"]"#), a)
        .await;
    assert_eq!(seed["result"], json!("Hello, Dexter!"));
    let greetings = client
        .fqmn_ok(node, &format!(r#"S:{context}:greetings:["Dexter"]"#), a)
        .await;
    assert_eq!(greetings["result"], json!(0), "views change nothing");

    // A write: a transaction that counts the greeting.
    let written = client
        .fqmn_ok(node, &format!(r#"SW:{prefix}:hello_world:["Dexter"]"#), a)
        .await;
    assert_eq!(written["result"], json!("Hello, Dexter!"));
    let tx = written["tx"].as_str().expect("tx id").to_string();
    assert!(written["gas_used"].as_u64().is_some_and(|g| g > 0), "{written}");
    let greetings = client
        .call(
            node,
            "ctx.view",
            json!({"context": context, "method": "greetings", "args": {"name": "Dexter"}}),
            a,
        )
        .await;
    assert_eq!(greetings["result"], json!(1), "named args work too: {greetings}");

    // The root names the transaction as the one head.
    let root = client.call(node, "ctx.root", json!({"context": prefix}), a).await;
    assert_eq!(root["heads"], json!([tx]));
    assert_eq!(root["applied"], json!(2), "genesis and one call: {root}");
    assert_ne!(root["root"], json!(format!("0x{}", "0".repeat(64))));

    // Version pins.
    let pinned = client
        .fqmn_ok(node, &format!(r#"0Ax:~4.1.3:{context}:hello_world:["Dexter"]"#), a)
        .await;
    assert_eq!(pinned["result"], json!("Hello, Dexter!"));
    let reply = client
        .fqmn(node, &format!(r#"A:^5:{context}:hello_world:["Dexter"]"#), a)
        .await;
    reply.assert_fqmn_error(409);
    assert!(
        reply.error_message().is_some_and(|m| m.contains("4.1.3")),
        "{}",
        reply.body
    );
    let pinned_write = client
        .fqmn_ok(node, &format!(r#"AW:>=4, <5:{context}:hello_world:["Dexter"]"#), a)
        .await;
    assert!(pinned_write["tx"].is_string(), "AW: is a transaction: {pinned_write}");

    // A registrar name pointing at a context method.
    client
        .call(
            node,
            "registrar.register",
            json!({"name": "hello.mcom", "target": format!("S:{context}:hello_world")}),
            a,
        )
        .await;
    let resolved = client.fqmn_ok(node, r#"R:hello.mcom:["Dexter"]"#, a).await;
    assert_eq!(resolved["result"], json!("Hello, Dexter!"));

    // Roles: bob has none, then reader, then writer, then none again.
    let view = format!(r#"S:{context}:hello_world:["Bob"]"#);
    let write = format!(r#"SW:{context}:hello_world:["Bob"]"#);
    client.fqmn(node, &view, b).await.assert_fqmn_error(403);
    grant(client, node, a, &context, &bob, "reader").await;
    assert_eq!(client.fqmn_ok(node, &view, b).await["result"], json!("Hello, Bob!"));
    let reply = client.fqmn(node, &write, b).await;
    reply.assert_fqmn_error(403);
    assert!(
        reply.error_message().is_some_and(|m| m.contains("writer")),
        "{}",
        reply.body
    );
    let listed = client.call(node, "ctx.list", json!(null), b).await;
    assert_eq!(listed[0]["role"], json!("reader"), "{listed}");
    grant(client, node, a, &context, &bob, "writer").await;
    assert!(client.fqmn_ok(node, &write, b).await["tx"].is_string());
    // Only admins grant.
    let reply = client
        .rpc(
            node,
            "ctx.grant",
            json!({"context": context, "address": bob.address(), "role": "admin"}),
            b,
        )
        .await;
    assert_eq!(reply.rpc_status(), Some(403), "{}", reply.body);
    client
        .call(
            node,
            "ctx.revoke",
            json!({"context": context, "address": bob.address()}),
            a,
        )
        .await;
    client.fqmn(node, &view, b).await.assert_fqmn_error(403);
    // The last admin cannot leave the context without one.
    let reply = client
        .rpc(
            node,
            "ctx.revoke",
            json!({"context": context, "address": alice.address()}),
            a,
        )
        .await;
    assert_eq!(reply.rpc_status(), Some(409), "{}", reply.body);

    // Bad context names: not hex (the grammar's 400), and more digits than an id has
    // (names nothing: 404).
    client
        .fqmn(node, r#"S:0xzz:hello_world:["x"]"#, a)
        .await
        .assert_fqmn_error(400);
    client
        .fqmn(node, &format!(r#"S:0x{}:hello_world:["x"]"#, "f".repeat(65)), a)
        .await
        .assert_fqmn_error(404);
    client
        .fqmn(node, r#"S:0xffffffffff:hello_world:["x"]"#, a)
        .await
        .assert_fqmn_error(404);
    // Without a token nothing is served.
    client.fqmn(node, &view, None).await.assert_fqmn_error(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_board_publish_events_in_order() {
    let mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let alice = new_key();
    let token = client.login(&alice, node).await;
    let a = Some(token.as_str());
    deploy(client, node, a, "kv", "1.0.0").await;
    deploy(client, node, a, "board", "1.0.0").await;
    let kv = create(client, node, a, "kv").await;
    let board = create(client, node, a, "board").await;

    let mut executed = client.subscribe("cmesh.events.state.executed").await;
    let mut kv_events = client.subscribe(&format!("cmesh.events.ctx.{kv}.>")).await;

    for (key, value) in [
        ("user:alice", json!({"age": 30})),
        ("user:bob", json!(1)),
        ("zzz", json!("z")),
    ] {
        let reply = client
            .fqmn_ok(node, &format!("SW:{kv}:set:{}", json!([key, value])), a)
            .await;
        let event = next_json(&mut executed).await;
        assert_eq!(event["data"]["tx"], reply["tx"], "executed event for {key}: {event}");
        assert_eq!(event["data"]["context"], json!(kv));
        let app_event = next_message(&mut kv_events, "kv set event").await;
        assert_eq!(app_event.subject.as_str(), format!("cmesh.events.ctx.{kv}.set"));
    }
    let got = client.fqmn_ok(node, &format!(r#"S:{kv}:get:["user:alice"]"#), a).await;
    assert_eq!(got["result"], json!({"age": 30}));
    let listed = client.fqmn_ok(node, &format!(r#"S:{kv}:list:["user:"]"#), a).await;
    let keys: Vec<&str> = listed["result"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert_eq!(keys, ["user:alice", "user:bob"], "{listed}");
    let deleted = client
        .fqmn_ok(node, &format!(r#"SW:{kv}:delete:["user:bob"]"#), a)
        .await;
    assert_eq!(deleted["result"], json!(true));
    let missing = client.fqmn_ok(node, &format!(r#"S:{kv}:get:["user:bob"]"#), a).await;
    assert_eq!(missing["result"], Value::Null);

    // E:S:<context> returns the context's recent app events (by prefix too).
    let recent = client.fqmn_ok(node, &format!("E:S:{}", &kv[..14]), a).await;
    let kinds: Vec<&str> = recent
        .as_array()
        .expect("recent events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 4, "three sets and a delete: {recent}");
    assert!(kinds.iter().all(|k| k.starts_with(&format!("{kv}."))), "{kinds:?}");

    // The board keeps messages in order with author and sequence.
    for message in ["first", "second", "third"] {
        client
            .fqmn_ok(node, &format!(r#"SW:{board}:post:["{message}"]"#), a)
            .await;
    }
    let messages = client.fqmn_ok(node, &format!("S:{board}:list"), a).await;
    let messages = messages["result"].as_array().expect("messages").clone();
    let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["message"].as_str()).collect();
    assert_eq!(texts, ["first", "second", "third"]);
    let author = alice.address().to_string().to_lowercase();
    assert!(messages.iter().all(|m| m["author"] == json!(author)), "{messages:?}");
    let page = client
        .call(
            node,
            "ctx.view",
            json!({"context": board, "method": "list", "args": {"from": 2, "limit": 1}}),
            a,
        )
        .await;
    assert_eq!(page["result"][0]["message"], json!("second"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_publish_on_a_context_topic_with_ew() {
    let mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let (alice, bob) = (new_key(), new_key());
    let a_token = client.login(&alice, node).await;
    let b_token = client.login(&bob, node).await;
    let (a, b) = (Some(a_token.as_str()), Some(b_token.as_str()));
    deploy(client, node, a, "kv", "1.0.0").await;
    let kv = create(client, node, a, "kv").await;
    let root_before = client.call(node, "ctx.root", json!({"context": kv}), a).await;
    let mut kv_events = client.subscribe(&format!("cmesh.events.ctx.{kv}.>")).await;

    // By a prefix of the id, like every context FQMN; the event carries its publisher.
    let publish = format!(r#"EW:S:{}:note:{{"text":"hi: there"}}"#, &kv[..12]);
    let envelope = client.fqmn_ok(node, &publish, a).await;
    assert_eq!(envelope["kind"], json!(format!("{kv}.note")), "{envelope}");
    let heard = next_message(&mut kv_events, "the published note").await;
    assert_eq!(heard.subject.as_str(), format!("cmesh.events.ctx.{kv}.note"));
    let heard: Value = serde_json::from_slice(&heard.payload).expect("event JSON");
    assert_eq!(heard["data"], json!({"text": "hi: there"}), "{heard}");
    assert_eq!(heard["caller"], json!(alice.address()), "{heard}");
    let recent = client.fqmn_ok(node, &format!("E:S:{kv}:note"), a).await;
    assert_eq!(recent.as_array().map(Vec::len), Some(1), "{recent}");
    assert_eq!(recent[0]["id"], heard["id"], "{recent}");

    // Publishing needs the writer role: none and reader are refused, writer is served.
    client.fqmn(node, &publish, b).await.assert_fqmn_error(403);
    grant(client, node, a, &kv, &bob, "reader").await;
    client.fqmn_ok(node, &format!("E:S:{kv}"), b).await;
    client.fqmn(node, &publish, b).await.assert_fqmn_error(403);
    grant(client, node, a, &kv, &bob, "writer").await;
    let by_bob = client.fqmn_ok(node, &publish, b).await;
    assert_eq!(by_bob["caller"], json!(bob.address()), "{by_bob}");

    // Unknown contexts, topics without an event and bad event names are refused.
    client
        .fqmn(node, "EW:S:0xdeadbeef:note:1", a)
        .await
        .assert_fqmn_error(404);
    client
        .rpc(
            node,
            "events.publish",
            json!({"topic": format!("S:{kv}"), "data": 1}),
            a,
        )
        .await
        .assert_rpc_error(-32602, 400);
    let bad_name = client
        .rpc(
            node,
            "events.publish",
            json!({"topic": format!("S:{kv}:a.b"), "data": 1}),
            a,
        )
        .await;
    assert_eq!(bad_name.rpc_status(), Some(422), "{}", bad_name.body);
    client
        .fqmn(node, &format!("EW:S:{kv}:a.b:1"), a)
        .await
        .assert_fqmn_error(400);

    // Only the two accepted publications were kept, and they are not transactions: the
    // state is untouched and only the two grants were applied.
    let recent = client.fqmn_ok(node, &format!("E:S:{kv}"), a).await;
    assert_eq!(recent.as_array().map(Vec::len), Some(2), "{recent}");
    let root_after = client.call(node, "ctx.root", json!({"context": kv}), a).await;
    assert_eq!(root_after["root"], root_before["root"]);
    assert_eq!(
        root_after["applied"],
        json!(root_before["applied"].as_u64().map(|n| n + 2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_transactions_give_the_same_root_on_two_nodes() {
    // Two separate nodes (own stores, own keys, own context ids) run the same calls in
    // the same order: their roots agree, and differ from a different history.
    let mesh = Mesh::start(2).await;
    let client = &mesh.client;
    let alice = new_key();
    let mut roots = BTreeSet::new();
    let mut contexts = Vec::new();
    for i in 0..2 {
        let node = mesh.node(i).address();
        let token = client.login(&alice, node).await;
        deploy(client, node, Some(&token), "kv", "1.0.0").await;
        let kv = create(client, node, Some(&token), "kv").await;
        for step in 0..20 {
            let fqmn = if step % 5 == 4 {
                format!(r#"SW:{kv}:delete:["k{}"]"#, step - 2)
            } else {
                format!(r#"SW:{kv}:set:["k{step}", {{"n": {step}}}]"#)
            };
            client.fqmn_ok(node, &fqmn, Some(&token)).await;
        }
        let root = client
            .call(node, "ctx.root", json!({"context": kv}), Some(&token))
            .await;
        roots.insert(root["root"].as_str().expect("root").to_string());
        contexts.push((node, kv, token));
    }
    assert_eq!(roots.len(), 1, "same transactions, same root: {roots:?}");
    let (node, kv, token) = &contexts[0];
    client
        .fqmn_ok(*node, &format!(r#"SW:{kv}:set:["extra", 1]"#), Some(token))
        .await;
    let root = client
        .call(*node, "ctx.root", json!({"context": kv}), Some(token))
        .await;
    assert!(!roots.contains(root["root"].as_str().expect("root")));
}

async fn next_json(sub: &mut async_nats::Subscriber) -> Value {
    let message = next_message(sub, "an event").await;
    serde_json::from_slice(&message.payload).expect("event JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_invite_nodes_and_members_are_listed() {
    let mesh = Mesh::start(1).await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let alice = new_key();
    let bob = new_key();
    let alice_token = client.login(&alice, node).await;
    let bob_token = client.login(&bob, node).await;
    let (a, b) = (Some(alice_token.as_str()), Some(bob_token.as_str()));
    deploy(client, node, a, "kv", "1.0.0").await;
    let created = client.call(node, "ctx.create", json!({"app": "kv"}), a).await;
    let context = created["context"].as_str().expect("context").to_string();
    assert_eq!(
        created["tx"],
        json!(context),
        "a context's id is its genesis transaction's"
    );

    let members = client.call(node, "ctx.members", json!({"context": context}), a).await;
    assert_eq!(
        members["members"],
        json!([{"member": node.to_string(), "seats": 1}]),
        "the creating node is the first member"
    );

    let other = new_key().address();
    let invited = client
        .call(
            node,
            "ctx.invite",
            json!({"context": &context[..12], "member": other, "seats": 2}),
            a,
        )
        .await;
    assert_eq!(invited["member"], json!(other.to_string()));
    assert_eq!(invited["seats"], json!(2));
    let invitation = invited["tx"].as_str().expect("tx").to_string();
    let root = client.call(node, "ctx.root", json!({"context": context}), a).await;
    assert_eq!(
        root["heads"],
        json!([invitation]),
        "the invitation is a transaction of the DAG"
    );
    assert_eq!(root["applied"], json!(2));
    let members = client.call(node, "ctx.members", json!({"context": context}), a).await;
    let listed: BTreeSet<(String, u64)> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["member"].as_str().unwrap_or_default().to_string(),
                m["seats"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(listed, BTreeSet::from([(node.to_string(), 1), (other.to_string(), 2)]));

    // Only admins invite; seats are bounded; the member must be an address.
    client
        .call(
            node,
            "ctx.grant",
            json!({"context": context, "address": bob.address(), "role": "writer"}),
            a,
        )
        .await;
    let reply = client
        .rpc(node, "ctx.invite", json!({"context": context, "member": other}), b)
        .await;
    assert_eq!(reply.rpc_status(), Some(403), "{}", reply.body);
    for (params, status) in [
        (json!({"context": context, "member": other, "seats": 0}), 400),
        (json!({"context": context, "member": other, "seats": 1001}), 400),
        (json!({"context": context, "member": "0x12"}), 400),
        (
            json!({"context": format!("0x{}", "ab".repeat(32)), "member": other}),
            404,
        ),
    ] {
        let reply = client.rpc(node, "ctx.invite", params.clone(), a).await;
        assert_eq!(reply.rpc_status(), Some(status), "{params}: {}", reply.body);
    }
    let root_after = client.call(node, "ctx.root", json!({"context": context}), a).await;
    assert_eq!(
        root_after["applied"],
        json!(3),
        "the grant is the only transaction since: refused invitations add nothing: {root_after}"
    );
}
