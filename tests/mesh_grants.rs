//! Mesh-wide grants on real nodes: `iam.grant` and `iam.revoke` are registry commands, so
//! a grant made through one node holds on every node; a node's own `--admin` stays an
//! admin of that node only; and a Kami-signed registry write carries the caller's
//! signed request, which every replica checks before it applies the write.

use cmesh_testkit::*;
use serde_json::{json, Value};

fn attributes(who: &Value) -> Vec<String> {
    who["attributes"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Waits until `key`'s whoami on `node` shows `attribute` (or no longer does).
async fn whoami_shows(mesh: &Mesh, node: &Node, token: &str, attribute: &str, shown: bool) {
    let what = format!(
        "{attribute} {} on {}",
        if shown { "granted" } else { "revoked" },
        node.address()
    );
    eventually(&what, EVENTUALLY, || async {
        let who = mesh.client.call(node, "iam.whoami", json!({}), Some(token)).await;
        (attributes(&who).iter().any(|a| a == attribute) == shown).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_through_one_node_holds_on_every_node_and_node_admins_stay_local() {
    let admin = new_key();
    let mesh = Mesh::with(MeshOptions::new(3).admin(admin.address())).await;
    let alice = new_key();
    let tokens: Vec<String> = futures::future::join_all(mesh.nodes.iter().map(|n| mesh.client.login(&alice, n))).await;
    let grant = json!({"address": alice.address(), "attribute": "role=registrant"});

    // Granted through node 0: the answer shows it, and so does node 0 at once.
    let admin_token = mesh.client.login(&admin, mesh.node(0)).await;
    let granted = mesh
        .client
        .call(mesh.node(0), "iam.grant", grant.clone(), Some(&admin_token))
        .await;
    assert_eq!(granted["address"], json!(alice.address()), "{granted}");
    assert!(
        attributes(&granted).contains(&"role=registrant".to_string()),
        "{granted}"
    );
    let who = mesh
        .client
        .call(mesh.node(0), "iam.whoami", json!({}), Some(&tokens[0]))
        .await;
    assert!(attributes(&who).contains(&"role=registrant".to_string()), "{who}");
    // The other nodes hold it as soon as their replicas apply it.
    for (node, token) in mesh.nodes.iter().zip(&tokens) {
        whoami_shows(&mesh, node, token, "role=registrant", true).await;
    }

    // Revoked through node 2: gone everywhere.
    let admin_on_2 = mesh.client.login(&admin, mesh.node(2)).await;
    let revoked = mesh
        .client
        .call(mesh.node(2), "iam.revoke", grant.clone(), Some(&admin_on_2))
        .await;
    assert!(
        !attributes(&revoked).contains(&"role=registrant".to_string()),
        "{revoked}"
    );
    for (node, token) in mesh.nodes.iter().zip(&tokens) {
        whoami_shows(&mesh, node, token, "role=registrant", false).await;
    }

    // A genesis admin's role=admin is the genesis's: no revoke takes it (409).
    mesh.client
        .rpc(
            mesh.node(1),
            "iam.revoke",
            json!({"address": admin.address(), "attribute": "role=admin"}),
            Some(&mesh.client.login(&admin, mesh.node(1)).await),
        )
        .await
        .assert_rpc_error(-32000, 409);

    // A node's own admin (`--admin`) is an admin of that node only: role=admin there, none
    // elsewhere, and no say over mesh-wide grants (the registry refuses it: 403).
    let local_admin = new_key();
    let options = NodeOptions {
        genesis: Some(mesh.genesis_path()),
        admins: vec![local_admin.address()],
        ..NodeOptions::default()
    };
    let learner = Node::start(3, &mesh.nats.url(), options).await;
    mesh.admit(learner.address(), "learner").await;
    let on_learner = mesh.client.login(&local_admin, &learner).await;
    let who = mesh
        .client
        .call(&learner, "iam.whoami", json!({}), Some(&on_learner))
        .await;
    assert!(attributes(&who).contains(&"role=admin".to_string()), "{who}");
    let on_first = mesh.client.login(&local_admin, mesh.node(0)).await;
    let who = mesh
        .client
        .call(mesh.node(0), "iam.whoami", json!({}), Some(&on_first))
        .await;
    assert!(attributes(&who).is_empty(), "a node admin elsewhere: {who}");
    let refused = eventually("the learner to forward a grant to the leader", EVENTUALLY, || async {
        let reply = mesh
            .client
            .rpc(&learner, "iam.grant", grant.clone(), Some(&on_learner))
            .await;
        (reply.status != 503).then_some(reply)
    })
    .await;
    refused.assert_rpc_error(-32000, 403);
    let who = mesh
        .client
        .call(mesh.node(0), "iam.whoami", json!({}), Some(&tokens[0]))
        .await;
    assert!(!attributes(&who).contains(&"role=registrant".to_string()), "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_registry_write_carries_the_callers_request_to_every_replica() {
    let mesh = Mesh::start(3).await;
    let alice = new_key();
    let node = mesh.node(1);
    let session = mesh.client.challenge(node, alice.address()).await.session;
    let params = json!({"name": "alice.mcom", "target": "I:whoami"});
    // The entry carries alice's signed request; every replica checks that she signed it
    // and that it asks for this command, and applies it only then.
    let record = mesh
        .client
        .signed(node, &alice, &session, 0, "registrar.register", params.clone())
        .await
        .ok();
    assert_eq!(record["owner"], json!(alice.address()), "{record}");
    let token = mesh.client.login(&alice, mesh.node(0)).await;
    for node in &mesh.nodes {
        let resolved = mesh
            .client
            .call(node, "registrar.resolve", json!({"name": "alice.mcom"}), Some(&token))
            .await;
        assert_eq!(
            resolved["owner"],
            json!(alice.address()),
            "on {}: {resolved}",
            node.address()
        );
    }
    // The same signed request again is a replay: IAM refuses its nonce.
    mesh.client
        .signed(node, &alice, &session, 0, "registrar.register", params)
        .await
        .assert_rpc_error(-32002, 401);
}
