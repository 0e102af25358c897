//! Hostile and clumsy input: every request is answered with the right status and a
//! message, the node keeps serving, and nothing of a refused write is kept.

use async_nats::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cmesh_common::jwt::{self, Claims};
use cmesh_testkit::*;
use serde_json::{json, Value};

const MAX_PAYLOAD: usize = 4096;

fn content_type(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", value);
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let mesh = Mesh::with(MeshOptions::new(2).max_payload(MAX_PAYLOAD)).await;
    let client = &mesh.client;
    let registrar = mesh.node(0).address();
    let node = mesh.node(1).address();
    let targets = [To::Node(registrar), To::Node(node), To::Shared];
    let alice = new_key();
    let mallory = new_key();
    let alice_token = client.login(&alice, node).await;
    let mallory_token = client.login(&mallory, registrar).await;

    // State that must survive everything below unchanged.
    let kept = client
        .call(
            node,
            "registrar.register",
            json!({"name": "keep.mcom", "target": "I:whoami"}),
            Some(&alice_token),
        )
        .await;
    let list_before = client.call(node, "registrar.list", json!({}), Some(&alice_token)).await;

    let alive = || async {
        for to in targets {
            client.assert_alive(to).await;
        }
    };

    // Malformed FQMNs: 400 with a message saying what is wrong.
    for bad in [
        "",
        "   ",
        "garbage",
        "X:whoami",
        "I:",
        "I:who ami",
        "I:whoami:{not json",
        "R:bad_name.mcom",
        "R:hello..mcom",
        "RW:hello.mcom",
        "EW:chat.room1",
        "EW:chat room:{}",
        "E:",
        "S:zz:get",
        "0Qx:thing",
        "\u{0}\u{1}binary",
    ] {
        for to in [To::Node(node), To::Shared] {
            let reply = client.fqmn(to, bad, Some(&alice_token)).await;
            assert_eq!(
                reply.status, 400,
                "FQMN {bad:?} must be 400, got {}: {}",
                reply.status, reply.body
            );
            reply.assert_fqmn_error(400);
        }
    }
    // Not UTF-8 at all.
    let reply = client
        .request(
            &To::Node(node).fqmn_subject(),
            bearer(&alice_token),
            vec![0xff, 0xfe, 0x00],
        )
        .await;
    reply.assert_fqmn_error(400);
    alive().await;

    // Invalid JSON on the RPC endpoint: parse error.
    for bad in ["{", "not json", "{\"jsonrpc\":\"2.0\",", "\u{0}"] {
        let reply = client
            .request(&To::Node(node).rpc_subject(), HeaderMap::new(), bad.to_string())
            .await;
        reply.assert_rpc_error(-32700, 400);
        assert_eq!(reply.body["id"], Value::Null, "parse errors have a null id");
    }
    // Valid JSON but not a request: invalid request.
    for bad in [
        json!(42),
        json!("x"),
        json!({"jsonrpc": "2.0"}),
        json!({"method": 1, "id": 1}),
        json!(null),
    ] {
        let reply = client.rpc_value(node, &bad, None).await;
        reply.assert_rpc_error(-32600, 400);
    }
    // Invalid MessagePack on both endpoints.
    for subject in [To::Node(node).rpc_subject(), To::Node(node).fqmn_subject()] {
        let reply = client.request(&subject, content_type(MSGPACK), vec![0xc1, 0x00]).await;
        assert_eq!(reply.status, 400, "invalid MessagePack on {subject}: {}", reply.body);
        reply.assert_cmtp();
    }
    // MessagePack of the wrong shape for an FQMN (a map, not a string).
    let packed = rmp_serde::to_vec_named(&json!({"fqmn": "P:ping"})).unwrap();
    let reply = client
        .request(&To::Node(node).fqmn_subject(), content_type(MSGPACK), packed)
        .await;
    assert_eq!(
        reply.status, 400,
        "MessagePack map on the FQMN endpoint: {}",
        reply.body
    );
    alive().await;

    // Oversize payloads: 413 on every endpoint, before anything is parsed.
    let big_name = format!("{}.mcom", "b".repeat(40));
    let filler = "x".repeat(MAX_PAYLOAD);
    let oversize_register = json!({"jsonrpc": "2.0", "method": "registrar.register", "id": 1,
        "params": {"name": big_name, "target": format!("I:whoami:{}", json!({"pad": filler}))}});
    let reply = client.rpc_value(node, &oversize_register, Some(&alice_token)).await;
    assert_eq!(reply.status, 413, "oversize RPC: {}", reply.body);
    reply.assert_cmtp();
    assert_eq!(reply.rpc_status(), Some(413), "oversize RPC error data: {}", reply.body);
    let oversize_fqmn = format!(r#"RW:register:{{"name":"{big_name}","target":"I:whoami","pad":"{filler}"}}"#);
    let reply = client.fqmn(node, &oversize_fqmn, Some(&alice_token)).await;
    reply.assert_fqmn_error(413);
    let reply = client.fqmn(To::Shared, &format!("P:ping:\"{filler}\""), None).await;
    reply.assert_fqmn_error(413);
    // Just under the limit is not refused for its size.
    let fits = format!("P:ping:\"{}\"", "y".repeat(MAX_PAYLOAD - 16));
    let reply = client.fqmn(node, &fits, None).await;
    assert_ne!(reply.status, 413, "a payload under --max-payload: {}", reply.body);
    alive().await;

    // Unknown methods: 401 without credentials (authenticated by default), 404 with.
    client
        .rpc(node, "no.such", json!({}), None)
        .await
        .assert_rpc_error(-32000, 401);
    client
        .rpc(node, "no.such", json!({}), Some(&alice_token))
        .await
        .assert_rpc_error(-32601, 404);
    client
        .rpc(node, "iam.nothing", json!({}), Some(&alice_token))
        .await
        .assert_rpc_error(-32601, 404);
    client
        .fqmn(node, "P:nothing", Some(&alice_token))
        .await
        .assert_fqmn_error(404);
    client
        .fqmn(node, "I:nothing", Some(&alice_token))
        .await
        .assert_fqmn_error(404);
    // Wrong params: 400 / -32602.
    for (method, params) in [
        ("iam.challenge", json!({"address": "0x1234"})),
        ("iam.challenge", json!({})),
        ("iam.challenge", json!([1, 2])),
        ("iam.login", json!({"session": 5})),
    ] {
        client
            .rpc(node, method, params, None)
            .await
            .assert_rpc_error(-32602, 400);
    }
    for (method, params) in [
        ("registrar.resolve", json!({"nome": "keep.mcom"})),
        ("registrar.register", json!({"name": "x.mcom"})),
        (
            "registrar.register",
            json!({"name": "x.mcom", "target": "I:whoami", "owner": mallory.address()}),
        ),
        ("registrar.transfer", json!({"name": "keep.mcom", "to": "nobody"})),
        ("events.publish", json!({"data": 1})),
        ("iam.grant", json!({"address": 1})),
    ] {
        let reply = client.rpc(node, method, params.clone(), Some(&alice_token)).await;
        if method == "iam.grant" {
            // Permission is checked before params: alice is no admin.
            reply.assert_rpc_error(-32000, 403);
        } else {
            assert_eq!(reply.rpc_code(), Some(-32602), "{method} {params}: {}", reply.body);
            reply.assert_rpc_error(-32602, 400);
        }
    }
    // A registrar write sent with the read prefix is a valid FQMN naming no read method:
    // 404, saying how to spell it, and nothing is registered.
    let wrong_prefix = client
        .fqmn(
            node,
            r#"R:register:{"name":"x.mcom","target":"I:whoami"}"#,
            Some(&alice_token),
        )
        .await;
    wrong_prefix.assert_fqmn_error(404);
    assert!(
        wrong_prefix.error_message().is_some_and(|m| m.contains("RW:register")),
        "{}",
        wrong_prefix.body
    );
    alive().await;

    // Bad and replayed signatures on a signed write.
    let challenge = client.challenge(node, mallory.address()).await;
    let register = |name: &str| json!({"name": name, "target": "I:whoami"});
    client
        .signed(
            node,
            &mallory,
            &challenge.session,
            0,
            "registrar.register",
            register("kami1.mcom"),
        )
        .await
        .ok();
    let replay = Client::signed_body(
        &mallory,
        &challenge.session,
        0,
        "registrar.register",
        register("kami1.mcom"),
    );
    client
        .rpc_value(node, &replay, None)
        .await
        .assert_rpc_error(-32002, 401);
    client
        .signed(
            node,
            &mallory,
            &challenge.session,
            0,
            "registrar.register",
            register("kami2.mcom"),
        )
        .await
        .assert_rpc_error(-32002, 401);
    client
        .signed(
            node,
            &alice,
            &challenge.session,
            1,
            "registrar.register",
            register("kami3.mcom"),
        )
        .await
        .assert_rpc_error(-32003, 401);
    let mut tampered = Client::signed_body(
        &mallory,
        &challenge.session,
        2,
        "registrar.register",
        register("kami4.mcom"),
    );
    tampered["params"]["name"] = json!("kami5.mcom");
    client
        .rpc_value(node, &tampered, None)
        .await
        .assert_rpc_error(-32003, 401);
    let mut no_nonce = Client::signed_body(
        &mallory,
        &challenge.session,
        3,
        "registrar.register",
        register("kami6.mcom"),
    );
    no_nonce.as_object_mut().unwrap().remove("nonce");
    let reply = client.rpc_value(node, &no_nonce, None).await;
    assert_eq!(reply.status, 401, "a signature without nonce: {}", reply.body);
    let mut bad_session = Client::signed_body(&mallory, "0x1234", 0, "registrar.register", register("kami7.mcom"));
    bad_session["id"] = json!("0x1234");
    client
        .rpc_value(node, &bad_session, None)
        .await
        .assert_rpc_error(-32001, 401);
    alive().await;

    // Forged and foreign tokens on a write.
    let forger = new_key();
    let now = unix_secs();
    let forged = jwt::issue(
        &forger,
        &Claims {
            iss: node,
            sub: alice.address(),
            aud: "cmesh".into(),
            iat: now,
            exp: now + 600,
            jti: "0x01".into(),
        },
    );
    let parts: Vec<&str> = alice_token.split('.').collect();
    let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), parts[1]);
    for token in [forged.as_str(), none.as_str(), "x.y.z", "Bearer"] {
        let reply = client
            .rpc(node, "registrar.register", register("forged.mcom"), Some(token))
            .await;
        assert_eq!(reply.status, 401, "register with token {token:?}: {}", reply.body);
        let reply = client
            .fqmn(
                To::Shared,
                r#"RW:register:{"name":"forged.mcom","target":"I:whoami"}"#,
                Some(token),
            )
            .await;
        reply.assert_fqmn_error(401);
    }
    alive().await;

    // Someone else's name: taken (409), not transferable or releasable by others (403).
    client
        .rpc(
            registrar,
            "registrar.register",
            json!({"name": "keep.mcom", "target": "P:ping"}),
            Some(&mallory_token),
        )
        .await
        .assert_rpc_error(-32000, 409);
    client
        .rpc(
            registrar,
            "registrar.transfer",
            json!({"name": "keep.mcom", "to": mallory.address()}),
            Some(&mallory_token),
        )
        .await
        .assert_rpc_error(-32000, 403);
    client
        .fqmn(
            node,
            &format!(r#"RW:transfer:{{"name":"keep.mcom","to":"{}"}}"#, mallory.address()),
            Some(&mallory_token),
        )
        .await
        .assert_fqmn_error(403);
    client
        .rpc(
            node,
            "registrar.release",
            json!({"name": "keep.mcom"}),
            Some(&mallory_token),
        )
        .await
        .assert_rpc_error(-32000, 403);
    // Invalid names and targets.
    client
        .rpc(
            node,
            "registrar.register",
            json!({"name": "Bad_Name.mcom", "target": "I:whoami"}),
            Some(&mallory_token),
        )
        .await
        .assert_rpc_error(-32000, 422);
    client
        .rpc(
            node,
            "registrar.register",
            json!({"name": "badtarget.mcom", "target": "nope"}),
            Some(&mallory_token),
        )
        .await
        .assert_rpc_error(-32000, 422);
    alive().await;

    // Nothing refused was kept: the list is the one from before plus the one accepted
    // signed registration; keep.mcom is unchanged.
    let list_after = client
        .call(registrar, "registrar.list", json!({}), Some(&mallory_token))
        .await;
    let mut expected = list_before.as_array().unwrap().clone();
    let kami1 = client
        .call(
            node,
            "registrar.resolve",
            json!({"name": "kami1.mcom"}),
            Some(&alice_token),
        )
        .await;
    assert_eq!(kami1["owner"], json!(mallory.address()));
    expected.push(kami1);
    expected.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
    let mut after = list_after.as_array().unwrap().clone();
    after.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
    assert_eq!(after, expected, "names after the refused writes");
    let resolved = client
        .call(
            To::Shared,
            "registrar.resolve",
            json!({"name": "keep.mcom"}),
            Some(&mallory_token),
        )
        .await;
    assert_eq!(resolved, kept, "keep.mcom unchanged");
    for name in [
        "forged.mcom",
        "kami2.mcom",
        "kami3.mcom",
        "kami4.mcom",
        "kami5.mcom",
        "kami6.mcom",
        "kami7.mcom",
        "x.mcom",
    ] {
        client
            .rpc(node, "registrar.resolve", json!({"name": name}), Some(&alice_token))
            .await
            .assert_rpc_error(-32000, 404);
    }
    // Alice's attributes are untouched by the refused grant.
    let who = client.call(node, "iam.whoami", json!({}), Some(&alice_token)).await;
    assert_eq!(who["attributes"], json!([]), "no attribute appeared: {who}");
    alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_for_writes() {
    let mesh = Mesh::with(MeshOptions::new(1).token_ttl(1)).await;
    let client = &mesh.client;
    let node = mesh.node(0).address();
    let alice = new_key();
    let login = client.login_result(&alice, node).await;
    let token = login["token"].as_str().unwrap().to_string();
    let expires_at = login["expires_at"].as_u64().unwrap();
    sleep_until_unix_ms(expires_at * 1000 + 50).await;
    let reply = client
        .rpc(
            node,
            "registrar.register",
            json!({"name": "late.mcom", "target": "I:whoami"}),
            Some(&token),
        )
        .await;
    assert_eq!(reply.status, 401, "register with an expired token: {}", reply.body);
    client.assert_alive(node).await;
    let fresh = client.login(&alice, node).await;
    client
        .rpc(node, "registrar.resolve", json!({"name": "late.mcom"}), Some(&fresh))
        .await
        .assert_rpc_error(-32000, 404);
}
