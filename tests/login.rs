//! IAM as a client sees it: passwordless login, tokens across nodes, forged and expired
//! tokens, Kami-signed requests, and permissions from attributes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cmesh_common::jwt::{self, Claims};
use cmesh_common::Address;
use cmesh_testkit::*;
use serde_json::{json, Value};

/// `YYYY-MM-DDTHH:MM:SSZ` of unix seconds (as RFC 3339 writes it).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn claims_of(token: &str) -> Claims {
    let part = token.split('.').nth(1).expect("JWT has claims");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("claims JSON")
}

/// Every way of sending `token` must be refused with 401, and no service may run.
async fn assert_token_refused(client: &Client, to: To, token: &str, why: &str) {
    let reply = client.fqmn(to, "I:whoami", Some(token)).await;
    assert_eq!(
        reply.status, 401,
        "{why}: I:whoami must be 401, got {}: {}",
        reply.status, reply.body
    );
    reply.assert_fqmn_error(401);
    let reply = client.rpc(to, "iam.whoami", json!({}), Some(token)).await;
    assert_eq!(
        reply.status, 401,
        "{why}: iam.whoami must be 401, got {}: {}",
        reply.status, reply.body
    );
    assert!(
        reply.body.get("result").is_none(),
        "{why}: no result with a refused token: {}",
        reply.body
    );
    assert_eq!(reply.rpc_status(), Some(401), "{why}: {}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_whoami_and_tokens_across_nodes() {
    let mesh = Mesh::with(MeshOptions::new(2).mesh("testmesh")).await;
    let client = &mesh.client;
    let (a, b) = (mesh.node(0), mesh.node(1));
    let alice = new_key();

    // The challenge names the mesh, the address, the session and the expiry.
    let challenge = client.challenge(a, alice.address()).await;
    let message = challenge.message.to_lowercase();
    assert!(
        challenge.message.contains("testmesh"),
        "message names the mesh: {}",
        challenge.message
    );
    let mesh_id = cmesh_common::genesis::Genesis::load(&mesh.genesis_path())
        .expect("the genesis")
        .mesh_id();
    assert!(
        challenge.message.contains(&mesh_id.to_string()),
        "message names the mesh id: {}",
        challenge.message
    );
    assert!(
        message.contains(&alice.address().to_string()),
        "message names the address {}: {}",
        alice.address(),
        challenge.message
    );
    assert!(
        challenge.message.contains(&challenge.session),
        "message names the session: {}",
        challenge.message
    );
    assert!(
        challenge.message.contains(&rfc3339(challenge.expires_at))
            || challenge.message.contains(&challenge.expires_at.to_string()),
        "message names the expiry {} ({}): {}",
        challenge.expires_at,
        rfc3339(challenge.expires_at),
        challenge.message
    );
    assert!(challenge.expires_at > unix_secs(), "challenge expiry in the future");
    assert!(
        challenge.session.starts_with("0x") && challenge.session.len() == 66,
        "session: {}",
        challenge.session
    );

    // A signature by another key does not log in (and uses up the session).
    let mallory = new_key();
    client
        .login_with(a, &mallory, &challenge)
        .await
        .assert_rpc_error(-32003, 401);

    // A proper login.
    let challenge = client.challenge(a, alice.address()).await;
    let login = client.login_with(a, &alice, &challenge).await.ok();
    assert_eq!(login["address"], json!(alice.address()));
    let expires_at = login["expires_at"].as_u64().expect("expires_at");
    assert!(expires_at > unix_secs(), "token expiry in the future: {login}");
    let token = login["token"].as_str().expect("token").to_string();
    let claims = claims_of(&token);
    let mesh_id = cmesh_common::genesis::Genesis::load(&mesh.genesis_path())
        .expect("the genesis")
        .mesh_id()
        .to_string();
    assert_eq!(
        (claims.iss, claims.sub, claims.aud.as_str()),
        (a.address(), alice.address(), mesh_id.as_str()),
        "a token's audience is the mesh id"
    );

    // A login that reaches another node than the challenge is handed over.
    let elsewhere = client.challenge(a, alice.address()).await;
    let handed = client.login_with(b, &alice, &elsewhere).await.ok();
    assert_eq!(
        claims_of(handed["token"].as_str().expect("token")).iss,
        a.address(),
        "issued by the challenge's node"
    );
    client
        .login_with(To::Shared, &alice, &elsewhere)
        .await
        .assert_rpc_error(-32001, 401);

    // The session is used up: logging in with it again fails.
    let reply = client.login_with(a, &alice, &challenge).await;
    reply.assert_rpc_error(-32001, 401);

    // whoami on the issuing node and on the other node.
    for (node, name) in [(a, "A"), (b, "B")] {
        let who = client.call(node, "iam.whoami", json!({}), Some(&token)).await;
        assert_eq!(who["address"], json!(alice.address()), "whoami on {name}");
        assert_eq!(who["node"], json!(node.address()), "whoami answered by {name}");
        assert!(who["attributes"].is_array(), "attributes: {who}");
        assert_eq!(who["expires_at"], json!(expires_at), "whoami expiry on {name}");
        let who = client.fqmn_ok(node, "I:whoami", Some(&token)).await;
        assert_eq!(who["address"], json!(alice.address()), "I:whoami on {name}");
    }
    // And on the shared subject.
    let who = client.fqmn_ok(To::Shared, "I:whoami", Some(&token)).await;
    assert_eq!(who["address"], json!(alice.address()));

    // No credentials: 401.
    client.fqmn(b, "I:whoami", None).await.assert_fqmn_error(401);

    // Forged tokens, on the node that issued the real one and on the other.
    let forger = new_key();
    let now = unix_secs();
    let claims = |iss: Address| Claims {
        iss,
        sub: alice.address(),
        aud: mesh_id.clone(),
        iat: now,
        exp: now + 3600,
        jti: "0x00".into(),
    };
    let parts: Vec<&str> = token.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let mut tampered = claims_of(&token);
    tampered.sub = mallory.address();
    let tampered_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).expect("json"));
    let mut longer = claims_of(&token);
    longer.exp += 86_400;
    let longer_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&longer).expect("json"));
    let forgeries = [
        (
            jwt::issue(&forger, &claims(a.address())),
            "a node's address as issuer, signed by another key",
        ),
        (
            jwt::issue(&forger, &claims(forger.address())),
            "issued by a key that is no node",
        ),
        (format!("{none_header}.{}.", parts[1]), "alg none"),
        (
            format!("{none_header}.{}.{}", parts[1], parts[2]),
            "alg none with the real signature",
        ),
        (
            format!("{}.{tampered_b64}.{}", parts[0], parts[2]),
            "claims changed to another subject",
        ),
        (format!("{}.{longer_b64}.{}", parts[0], parts[2]), "expiry extended"),
        (jwt::issue(&alice, &claims(alice.address())), "self-issued by the user"),
        ("not-a-token".to_string(), "garbage"),
        (String::new(), "empty"),
    ];
    for (forged, why) in &forgeries {
        for node in [a, b] {
            assert_token_refused(client, node.into(), forged, why).await;
        }
    }
    // Public methods still work with a bad token (a client can always log in again).
    let reply = client.fqmn(a, "P:ping", Some("not-a-token")).await;
    assert_eq!(reply.status, 200, "P:ping with a stale token: {}", reply.body);
    let fresh = client.challenge(a, alice.address()).await;
    let mut headers = bearer("not-a-token");
    headers.insert("Content-Type", JSON);
    let body = json!({"jsonrpc": "2.0", "method": "iam.login", "id": 1, "params": {
        "session": fresh.session, "signature": alice.sign_personal(fresh.message.as_bytes()).to_string()}});
    let reply = client
        .request(&To::from(a).rpc_subject(), headers, serde_json::to_vec(&body).unwrap())
        .await;
    assert!(
        reply.ok()["token"].is_string(),
        "login with a stale token header: {}",
        reply.body
    );

    // The real token still works after all that.
    let who = client.call(b, "iam.whoami", json!({}), Some(&token)).await;
    assert_eq!(who["address"], json!(alice.address()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kami_signed_requests() {
    let mesh = Mesh::start(2).await;
    let client = &mesh.client;
    let (a, b) = (mesh.node(0), mesh.node(1));
    let alice = new_key();
    let bob = new_key();

    let session = client.challenge(a, alice.address()).await.session;

    // The first nonce of a session is 0.
    let fresh = client.challenge(a, alice.address()).await.session;
    client
        .signed(a, &alice, &fresh, 1, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32002, 401);

    // nonce 0 binds the session to the signer.
    let reply = client.signed(a, &alice, &session, 0, "iam.whoami", json!({})).await;
    let who = reply.ok();
    assert_eq!(who["address"], json!(alice.address()), "signed whoami");
    assert_eq!(reply.body["id"], json!(session), "the response id is the session");

    // Replaying the same request: nonce error.
    client
        .signed(a, &alice, &session, 0, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32002, 401);
    // Increasing nonces work, gaps allowed.
    client
        .signed(a, &alice, &session, 1, "iam.whoami", json!({}))
        .await
        .ok();
    client
        .signed(a, &alice, &session, 5, "router.info", json!({}))
        .await
        .ok();
    // Exact replay of nonce 5 and a lower one: nonce error.
    client
        .signed(a, &alice, &session, 5, "router.info", json!({}))
        .await
        .assert_rpc_error(-32002, 401);
    client
        .signed(a, &alice, &session, 3, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32002, 401);
    // Signed by another key: signature error; and it does not advance the session.
    client
        .signed(a, &bob, &session, 6, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32003, 401);
    // A request altered after signing: signature error.
    let mut altered = Client::signed_body(&alice, &session, 6, "iam.whoami", json!({}));
    altered["method"] = json!("router.info");
    client.rpc_value(a, &altered, None).await.assert_rpc_error(-32003, 401);
    // A malformed signature: signature error.
    let mut malformed = Client::signed_body(&alice, &session, 6, "iam.whoami", json!({}));
    malformed["signature"] = json!("0x1234");
    client
        .rpc_value(a, &malformed, None)
        .await
        .assert_rpc_error(-32003, 401);
    // Nonce 6 is still free after the refused ones.
    client
        .signed(a, &alice, &session, 6, "iam.whoami", json!({}))
        .await
        .ok();

    // An unknown session.
    let random = format!("0x{}", hex::encode(rand_bytes()));
    client
        .signed(a, &alice, &random, 0, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32001, 401);
    // A request reaching another node is handed to the node that holds the session:
    // same session state (nonces) whichever node it reaches.
    let who = client
        .signed(b, &alice, &session, 7, "iam.whoami", json!({}))
        .await
        .ok();
    assert_eq!(
        who["address"],
        json!(alice.address()),
        "signed request handed over from b to a"
    );
    client
        .signed(a, &alice, &session, 7, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32002, 401);
    client
        .signed(b, &alice, &session, 7, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32002, 401);
    client
        .signed(To::Shared, &bob, &session, 8, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32003, 401);
    // A session bound by signed requests cannot be used to log in.
    let challenge = Challenge {
        session: session.clone(),
        message: String::new(),
        expires_at: 0,
    };
    let reply = client.login_with(a, &alice, &challenge).await;
    assert_eq!(reply.status, 401, "login with a bound session: {}", reply.body);

    // Signed requests also carry permissions: grant needs role=admin.
    client
        .signed(
            a,
            &alice,
            &session,
            8,
            "iam.grant",
            json!({"address": bob.address(), "attribute": "role=admin"}),
        )
        .await
        .assert_rpc_error(-32000, 403);
    client.assert_alive(a).await;
}

fn rand_bytes() -> [u8; 32] {
    let key = new_key();
    let mut out = [0u8; 32];
    out[..20].copy_from_slice(&key.address().0);
    out[20..].copy_from_slice(&new_key().address().0[..12]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_token_and_challenge_lifetimes() {
    let mesh = Mesh::with(MeshOptions::new(1).token_ttl(1).challenge_ttl(1)).await;
    let client = &mesh.client;
    let node = mesh.node(0);
    let alice = new_key();

    // A token lives 1 s: valid at first (when there is time left), then refused.
    let (token, expires_at) = loop {
        let login = client.login_result(&alice, node).await;
        let expires_at = login["expires_at"].as_u64().expect("expires_at");
        if expires_at * 1000 > unix_ms() + 300 {
            break (login["token"].as_str().unwrap().to_string(), expires_at);
        }
        // Logged in just before a second boundary: wait for it and try again.
        sleep_until_unix_ms(expires_at * 1000 + 10).await;
    };
    let who = client.call(node, "iam.whoami", json!({}), Some(&token)).await;
    assert_eq!(who["address"], json!(alice.address()));
    sleep_until_unix_ms(expires_at * 1000 + 50).await;
    assert!(unix_secs() >= expires_at);
    assert_token_refused(client, node.into(), &token, "expired token").await;

    // A challenge lives 1 s: after that, neither login nor a first signed request.
    let for_login = client.challenge(node, alice.address()).await;
    let for_kami = client.challenge(node, alice.address()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    client
        .login_with(node, &alice, &for_login)
        .await
        .assert_rpc_error(-32001, 401);
    client
        .signed(node, &alice, &for_kami.session, 0, "iam.whoami", json!({}))
        .await
        .assert_rpc_error(-32001, 401);

    client.assert_alive(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_from_attributes() {
    let admin = new_key();
    let mut mesh = Mesh::with(MeshOptions::new(1).admin(admin.address())).await;
    let client = &mesh.client;
    let node = mesh.node(0);
    let alice = new_key();
    let bob = new_key();
    let alice_token = client.login(&alice, node).await;
    let admin_token = client.login(&admin, node).await;

    let attributes = |who: &Value| -> Vec<String> {
        who["attributes"]
            .as_array()
            .expect("attributes")
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };

    // The configured admin holds role=admin.
    let who = client.call(node, "iam.whoami", json!({}), Some(&admin_token)).await;
    assert!(
        attributes(&who).contains(&"role=admin".to_string()),
        "admin whoami: {who}"
    );

    // A non-admin cannot grant or revoke.
    let grant = json!({"address": alice.address(), "attribute": "role=registrant"});
    client
        .rpc(node, "iam.grant", grant.clone(), Some(&alice_token))
        .await
        .assert_rpc_error(-32000, 403);
    client
        .rpc(node, "iam.revoke", grant.clone(), Some(&alice_token))
        .await
        .assert_rpc_error(-32000, 403);
    let who = client.call(node, "iam.whoami", json!({}), Some(&alice_token)).await;
    assert!(
        !attributes(&who).contains(&"role=registrant".to_string()),
        "refused grant left nothing: {who}"
    );
    // Without credentials: 401.
    client
        .rpc(node, "iam.grant", grant.clone(), None)
        .await
        .assert_rpc_error(-32000, 401);

    // The admin grants; whoami shows it at once (same token).
    let granted = client.call(node, "iam.grant", grant.clone(), Some(&admin_token)).await;
    assert_eq!(granted["address"], json!(alice.address()));
    assert!(
        attributes(&granted).contains(&"role=registrant".to_string()),
        "grant result: {granted}"
    );
    let who = client.call(node, "iam.whoami", json!({}), Some(&alice_token)).await;
    assert!(
        attributes(&who).contains(&"role=registrant".to_string()),
        "whoami after grant: {who}"
    );

    // Invalid attributes: 422.
    for bad in ["Role=admin", "role=", "noequals", "role=a b"] {
        let reply = client
            .rpc(
                node,
                "iam.grant",
                json!({"address": bob.address(), "attribute": bad}),
                Some(&admin_token),
            )
            .await;
        reply.assert_rpc_error(-32000, 422);
    }

    // The admin revokes; whoami no longer shows it.
    let revoked = client.call(node, "iam.revoke", grant.clone(), Some(&admin_token)).await;
    assert!(
        !attributes(&revoked).contains(&"role=registrant".to_string()),
        "revoke result: {revoked}"
    );
    let who = client.call(node, "iam.whoami", json!({}), Some(&alice_token)).await;
    assert!(
        !attributes(&who).contains(&"role=registrant".to_string()),
        "whoami after revoke: {who}"
    );

    // Granted admin rights work: alice made admin can grant to bob.
    client
        .call(
            node,
            "iam.grant",
            json!({"address": alice.address(), "attribute": "role=admin"}),
            Some(&admin_token),
        )
        .await;
    let to_bob = client
        .call(
            node,
            "iam.grant",
            json!({"address": bob.address(), "attribute": "team=blue"}),
            Some(&alice_token),
        )
        .await;
    assert!(attributes(&to_bob).contains(&"team=blue".to_string()));

    // Attributes persist across a restart of the node.
    mesh.restart_node(0).await;
    let node = mesh.node(0);
    let bob_token = mesh.client.login(&bob, node).await;
    let who = mesh.client.call(node, "iam.whoami", json!({}), Some(&bob_token)).await;
    assert!(
        attributes(&who).contains(&"team=blue".to_string()),
        "attributes after a restart: {who}"
    );
}
