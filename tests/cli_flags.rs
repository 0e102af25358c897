//! `cmesh`'s global flags as a newcomer types them: `--node`, `--nats` and `--timeout`
//! before or after the command (or from `CMESH_NODE` and `CMESH_NATS_URL`) reach the same
//! node, and a flag `cmesh` does not know still fails with clap's message.

use cmesh_common::Address;
use cmesh_testkit::*;
use serde_json::Value;

/// The node that answered a `P:ping` (FQMN) or `router.ping` (JSON-RPC).
fn answered_by(body: &Value) -> Address {
    let node = body["node"]
        .as_str()
        .unwrap_or_else(|| panic!("a ping without node: {body}"));
    node.parse().unwrap_or_else(|e| panic!("a ping's node {node}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_nats_and_timeout_go_before_or_after_the_command() {
    let mesh = Mesh::start(2).await;
    let home = tempfile::tempdir().expect("tempdir");
    let cli = Cli::new(home.path());
    let url = mesh.nats.url();
    // Both nodes, so that a request reaching "some node" by chance cannot pass for both.
    for node in mesh.addresses() {
        let a = node.to_string();
        let ways: [&[&str]; 4] = [
            &["--nats", &url, "--node", &a, "fqmn", "P:ping"],
            &["fqmn", "P:ping", "--nats", &url, "--node", &a],
            &["--node", &a, "fqmn", "P:ping", "--nats", &url, "--timeout", "5"],
            &["--timeout", "5", "--nats", &url, "rpc", "router.ping", "--node", &a],
        ];
        for args in ways {
            let body = cli.ok(args).await;
            assert_eq!(
                answered_by(&body),
                node,
                "cmesh {args:?} answered by another node: {body}"
            );
        }
        let from_env = cli.clone().env("CMESH_NATS_URL", &url).env("CMESH_NODE", &a);
        let body = from_env.ok(&["fqmn", "P:ping"]).await;
        assert_eq!(answered_by(&body), node, "CMESH_NODE={a}: {body}");
        // A flag on the command line wins over the environment, wherever it stands.
        let other = mesh.addresses().into_iter().find(|n| *n != node).expect("two nodes");
        let body = from_env.ok(&["--node", &other.to_string(), "fqmn", "P:ping"]).await;
        assert_eq!(answered_by(&body), other, "--node over CMESH_NODE: {body}");
    }

    for args in [&["fqmn", "P:ping", "--bogus"][..], &["--bogus", "fqmn", "P:ping"]] {
        let out = cli.run(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "cmesh {args:?}: {stderr}");
        assert!(
            stderr.contains("unexpected argument '--bogus'"),
            "cmesh {args:?}: {stderr}"
        );
    }
}
