//! Only nodes the mesh registry admits are peers: attacks by a key that announces itself
//! and mints tokens, and by a node whose admission was removed, against real nodes.

use cmesh_common::genesis::Genesis;
use cmesh_common::jwt::{self, Claims};
use cmesh_common::time::unix_millis;
use cmesh_common::SigningKey;
use cmesh_iam::Announcement;
use cmesh_testkit::*;
use serde_json::json;

fn mesh_id(mesh: &Mesh) -> String {
    Genesis::load(&mesh.genesis_path())
        .expect("the genesis")
        .mesh_id()
        .to_string()
}

/// A token `issuer` signs for `subject`, as a node would.
fn token(issuer: &SigningKey, subject: &SigningKey, mesh: &str) -> String {
    let now = unix_secs();
    let claims = Claims {
        iss: issuer.address(),
        sub: subject.address(),
        aud: mesh.to_string(),
        iat: now,
        exp: now + 600,
        jti: "0x01".into(),
    };
    jwt::issue(issuer, &claims)
}

async fn announce(url: &str, key: &SigningKey, mesh: &str) {
    let client = async_nats::connect(url).await.expect("connect");
    let announcement = Announcement::signed(key, mesh, unix_millis(), "attacker-boot");
    client
        .publish(
            "cmesh.announce",
            serde_json::to_vec(&announcement).expect("json").into(),
        )
        .await
        .expect("publish");
    client.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_announces_itself_is_no_node_and_its_tokens_are_refused() {
    let admin = new_key();
    let mesh = Mesh::with(MeshOptions::new(2).admin(admin.address())).await;
    let id = mesh_id(&mesh);
    let node = mesh.node(0);
    let stranger = new_key();

    // It announces itself, correctly signed, naming this mesh: ignored, and said so.
    announce(&mesh.nats.url(), &stranger, &id).await;
    let wanted = stranger.address().to_string();
    node.wait_log("the stranger's announcement to be ignored", EVENTUALLY, |l| {
        l.contains("ignored the announcement of a node that is not admitted") && l.contains(&wanted)
    })
    .await;

    // A token it mints for the admin: 401, on every node.
    let forged = token(&stranger, &admin, &id);
    for node in &mesh.nodes {
        mesh.client
            .fqmn(node, "I:whoami", Some(&forged))
            .await
            .assert_fqmn_error(401);
    }
    // It is not a peer, and the mesh serves everyone else as before.
    let real = mesh.client.login(&admin, node).await;
    let info = mesh.client.fqmn_ok(node, "P:info", Some(&real)).await;
    assert!(!info.to_string().contains(&wanted), "the stranger is listed: {info}");
    let who = mesh.client.fqmn_ok(node, "I:whoami", Some(&real)).await;
    assert_eq!(who["address"], json!(admin.address()));

    // Admission is the mesh admins' call: `mesh.admit` by anyone else is 403.
    let user = new_key();
    let user_token = mesh.client.login(&user, node).await;
    let admit = json!({"node": stranger.address(), "role": "member"});
    mesh.client
        .rpc(node, "mesh.admit", admit.clone(), Some(&user_token))
        .await
        .assert_rpc_error(-32000, 403);
    let admitted = mesh.client.call(node, "mesh.admit", admit, Some(&real)).await;
    assert_eq!(admitted["role"], json!("member"), "{admitted}");
    let nodes = mesh.client.call(node, "mesh.nodes", json!({}), Some(&real)).await;
    let roles: Vec<(String, String)> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_string(),
                n["role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(roles.contains(&(wanted.clone(), "member".to_string())), "{nodes}");
    assert_eq!(roles.iter().filter(|(_, role)| role == "voter").count(), 2, "{nodes}");

    // Once admitted, the announcement it made before counts, and so do its tokens.
    eventually("the admitted node's token to count", EVENTUALLY, || async {
        let reply = mesh.client.fqmn(node, "I:whoami", Some(&forged)).await;
        (reply.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_stops_counting_when_its_removal_commits() {
    let admin = new_key();
    let mesh = Mesh::with(MeshOptions::new(3).admin(admin.address())).await;
    let (first, removed) = (mesh.node(0), mesh.node(2));
    let user = new_key();

    // Before: a token that node 2 issued is good on node 0.
    let issued_by_removed = mesh.client.login(&user, removed).await;
    let who = mesh.client.fqmn_ok(first, "I:whoami", Some(&issued_by_removed)).await;
    assert_eq!(who["address"], json!(user.address()));

    // A mesh admin removes node 2 through node 0; only a mesh admin may.
    let admin_token = mesh.client.login(&admin, first).await;
    let user_token = mesh.client.login(&user, first).await;
    let remove = format!(r#"CW:remove:{{"node":"{}"}}"#, removed.address());
    mesh.client
        .fqmn(first, &remove, Some(&user_token))
        .await
        .assert_fqmn_error(403);
    let done = mesh.client.fqmn(first, &remove, Some(&admin_token)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["role"], json!(null), "{}", done.body);

    // From the commit on, node 0 drops it as a peer, and its tokens are refused.
    let wanted = removed.address().to_string();
    first
        .wait_log("node 0 to drop the removed node", EVENTUALLY, |l| {
            l.contains("not (or no longer) an admitted node") && l.contains(&wanted)
        })
        .await;
    mesh.client
        .fqmn(first, "I:whoami", Some(&issued_by_removed))
        .await
        .assert_fqmn_error(401);
    // The leader may be changing (if node 2 led): 503 with retry advice until it settles.
    let nodes = eventually("a linearizable C:nodes", EVENTUALLY, || async {
        let reply = mesh.client.fqmn(first, "C:nodes", Some(&admin_token)).await;
        (reply.status == 200).then_some(reply.body)
    })
    .await;
    assert!(!nodes.to_string().contains(&wanted), "{nodes}");

    // Its own writes to the registry no longer commit: the leader refuses it.
    let on_removed = mesh.client.login(&user, removed).await;
    let write = mesh
        .client
        .rpc(
            removed,
            "registrar.register",
            json!({"name": "from-removed.mcom", "target": "I:whoami"}),
            Some(&on_removed),
        )
        .await;
    assert!(matches!(write.status, 401 | 503), "{}", write.body);
    let resolved = mesh
        .client
        .rpc(
            first,
            "registrar.resolve",
            json!({"name": "from-removed.mcom"}),
            Some(&admin_token),
        )
        .await;
    assert_eq!(resolved.status, 404, "{}", resolved.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holds_no_replica_and_serves_registry_calls_through_the_replicas() {
    let admin = new_key();
    let mesh = Mesh::with(MeshOptions::new(3).admin(admin.address())).await;
    let options = NodeOptions {
        genesis: Some(mesh.genesis_path()),
        admins: vec![admin.address()],
        ..NodeOptions::default()
    };
    let member = Node::start(3, &mesh.nats.url(), options).await;
    mesh.admit(member.address(), "member").await;
    let user = new_key();
    let token = mesh.client.login(&user, &member).await;

    // It learns its role from the replicas, and Raft never counts it.
    let status = eventually("the member to learn its role", EVENTUALLY, || async {
        let reply = mesh.client.fqmn(&member, "C:status", Some(&token)).await;
        (reply.body["role"] == json!("member")).then_some(reply.body)
    })
    .await;
    let wanted = json!(member.address());
    assert!(
        !status["voters"].as_array().is_some_and(|v| v.contains(&wanted))
            && !status["learners"].as_array().is_some_and(|l| l.contains(&wanted)),
        "{status}"
    );

    // Writes go to the leader, reads to a replica: the same answers as on a voter.
    let record = mesh
        .client
        .call(
            &member,
            "registrar.register",
            json!({"name": "via-member.mcom", "target": "I:whoami"}),
            Some(&token),
        )
        .await;
    assert_eq!(record["owner"], json!(user.address()), "{record}");
    let resolved = mesh
        .client
        .call(
            &member,
            "registrar.resolve",
            json!({"name": "via-member.mcom"}),
            Some(&token),
        )
        .await;
    assert_eq!(resolved["owner"], json!(user.address()), "{resolved}");
    let on_voter = mesh
        .client
        .call(
            mesh.node(0),
            "registrar.resolve",
            json!({"name": "via-member.mcom"}),
            Some(&token),
        )
        .await;
    assert_eq!(on_voter, resolved);
    let nodes = mesh.client.fqmn_ok(&member, "C:nodes", Some(&token)).await;
    assert!(
        nodes["nodes"]
            .as_array()
            .is_some_and(|n| n.contains(&json!({"node": member.address(), "role": "member"}))),
        "{nodes}"
    );

    // A mesh-wide grant holds on the member too.
    let admin_token = mesh.client.login(&admin, mesh.node(0)).await;
    let grant = json!({"address": user.address(), "attribute": "team=blue"});
    mesh.client
        .call(mesh.node(0), "iam.grant", grant, Some(&admin_token))
        .await;
    eventually("the member to hold the grant", EVENTUALLY, || async {
        let who = mesh.client.call(&member, "iam.whoami", json!({}), Some(&token)).await;
        who["attributes"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("team=blue")))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_an_admitted_node_not_yet_heard_from_is_a_503_to_retry_not_a_401() {
    let mut mesh = Mesh::start(3).await;
    let user = new_key();
    let issued_by_2 = mesh.client.login(&user, mesh.node(2)).await;
    let status = mesh.nodes[2].stop_sigterm().await;
    assert!(status.success(), "{status}");

    // A new node starts while node 2 is down: it never heard node 2's announcement.
    let options = NodeOptions {
        genesis: Some(mesh.genesis_path()),
        ..NodeOptions::default()
    };
    let mut late = Node::prepare(3, &mesh.nats.url(), options);
    let address = node_key(late.data_dir()).expect("a key").address();
    mesh.admit(address, "learner").await;
    late.respawn();
    late.wait_ready(READY_TIMEOUT).await;
    // Once the learner knows the mesh's nodes, node 2's token says "retry", not "refused".
    let reply = eventually("the learner to know node 2 is admitted", EVENTUALLY, || async {
        let reply = mesh.client.fqmn(&late, "I:whoami", Some(&issued_by_2)).await;
        (reply.status == 503).then_some(reply)
    })
    .await;
    assert!(reply.body.to_string().contains("has not heard"), "{}", reply.body);

    // Node 2 back: it announces itself, and its token counts on the learner.
    mesh.nodes[2].respawn();
    mesh.nodes[2].wait_ready(READY_TIMEOUT).await;
    eventually("node 2's token to count on the learner", EVENTUALLY, || async {
        let reply = mesh.client.fqmn(&late, "I:whoami", Some(&issued_by_2)).await;
        (reply.status == 200).then_some(())
    })
    .await;
}
