//! `cmesh mesh up`, the developer's mesh (`scripts/up` runs it): its user is a node admin
//! of every node (the client key in `$CMESH_HOME`, and any `--admin`), so that after
//! `cmesh login` node-level methods such as `ctx.join` are not refused with 403.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cmesh_common::SigningKey;
use cmesh_testkit::*;
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

/// Longest wait for `mesh up` to start its nats-server and nodes.
const UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `cmesh mesh up` on a port the OS picks, in a temp dir.
struct MeshUp {
    child: Child,
    dir: tempfile::TempDir,
    /// What it said on stderr up to "mesh is up".
    said: Vec<String>,
    env: HashMap<String, String>,
}

impl MeshUp {
    async fn start(cli: &Cli, nodes: usize, extra: &[&str]) -> MeshUp {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_str().expect("utf-8 path").to_string();
        let nodes = nodes.to_string();
        let mut args = vec!["mesh", "up", "--nodes", &nodes, "--dir", &path, "--port", "0"];
        args.extend(extra);
        let mut child = cli
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cmesh mesh up");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let said = within(
            "cmesh mesh up to say the mesh is up",
            UP_TIMEOUT,
            read_until_up(&mut lines),
        )
        .await;
        // Keep draining its stderr, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let env = read_env(&dir.path().join("mesh.env"));
        MeshUp { child, dir, said, env }
    }

    fn said(&self, text: &str) -> bool {
        self.said.iter().any(|line| line.contains(text))
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in mesh.env: {:?}", self.env))
    }

    /// Ctrl-C: mesh up stops its nodes and nats-server and exits 0.
    async fn stop(mut self) {
        let pid = self.child.id().expect("mesh up runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGINT).expect("SIGINT");
        let status = within("cmesh mesh up to stop", UP_TIMEOUT, self.child.wait())
            .await
            .expect("wait for mesh up");
        assert!(status.success(), "mesh up exited with {status} on SIGINT");
        assert!(
            !self.dir.path().join("mesh.env").exists(),
            "mesh.env is left after the stop"
        );
    }
}

impl Drop for MeshUp {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: mesh up then stops the nodes and nats-server it started.
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
}

async fn read_until_up(lines: &mut Lines<BufReader<ChildStderr>>) -> Vec<String> {
    let mut said = Vec::new();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let up = line.starts_with("mesh is up");
                said.push(line);
                if up {
                    return said;
                }
            }
            _ => panic!("cmesh mesh up exited before the mesh was up:\n{}", said.join("\n")),
        }
    }
}

fn read_env(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A home with a client key, as `cmesh key new` leaves it.
fn home_with_key() -> (tempfile::TempDir, SigningKey) {
    let home = tempfile::tempdir().expect("tempdir");
    let key = new_key();
    key.save(&home.path().join("key")).expect("save the client key");
    (home, key)
}

fn kv_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/kv/kv.wasm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_developer_is_a_node_admin_and_can_join() {
    let (home, me) = home_with_key();
    let cli = Cli::new(home.path());
    let mesh = MeshUp::start(&cli, 2, &[]).await;
    assert!(
        mesh.said(&me.address().to_eip55()),
        "mesh up names the admin: {:?}",
        mesh.said
    );
    let cli = cli.env("CMESH_NATS_URL", mesh.var("CMESH_NATS_URL"));
    let (node1, node2) = (mesh.var("NODE1").to_string(), mesh.var("NODE2").to_string());

    // As after scripts/up: log in once, through node 1.
    let login = cli.run(&["login", "--node", &node1]).await;
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let kv = kv_wasm();
    let kv = kv.to_str().expect("utf-8 path");
    cli.ok(&[
        "--node",
        &node1,
        "app",
        "deploy",
        kv,
        "--name",
        "kv",
        "--version",
        "1.0.0",
    ])
    .await;
    let created = cli.ok(&["--node", &node1, "ctx", "create", "kv"]).await;
    let context = created["context"].as_str().expect("context id").to_string();
    cli.ok(&["--node", &node1, "ctx", "invite", &context, &node2]).await;

    // Someone who is not a node admin is refused...
    let stranger_home = tempfile::tempdir().expect("tempdir");
    let stranger = Cli::new(stranger_home.path()).env("CMESH_NATS_URL", mesh.var("CMESH_NATS_URL"));
    assert!(stranger.run(&["key", "new"]).await.status.success());
    assert!(stranger.run(&["login", "--node", &node1]).await.status.success());
    let refused = stranger
        .run(&["--node", &node2, "ctx", "join", &context, "--no-wait"])
        .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("403"),
        "a stranger's ctx.join: {stderr}"
    );

    // ...the developer is not: node 2 accepts the join (whatever phase it reports).
    let joined = cli.ok(&["--node", &node2, "ctx", "join", &context, "--no-wait"]).await;
    assert_eq!(joined["context"], json!(context), "{joined}");

    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_key_mesh_up_says_so_and_admin_names_others() {
    let home = tempfile::tempdir().expect("tempdir");
    let (other_home, other) = home_with_key();
    let cli = Cli::new(home.path());
    let admin = other.address().to_string();
    let mesh = MeshUp::start(&cli, 1, &["--admin", &admin]).await;
    assert!(
        mesh.said("no client key at"),
        "mesh up says there is no key: {:?}",
        mesh.said
    );
    assert!(!home.path().join("key").exists(), "mesh up made a client key");
    assert!(
        mesh.said(&other.address().to_eip55()),
        "mesh up names the --admin: {:?}",
        mesh.said
    );

    // The --admin key is a node admin: a node-level method is not refused for it.
    let url = mesh.var("CMESH_NATS_URL").to_string();
    let node = mesh.var("NODE1").to_string();
    let other_cli = Cli::new(other_home.path()).env("CMESH_NATS_URL", &url);
    assert!(other_cli.run(&["login", "--node", &node]).await.status.success());
    let unknown = format!("0x{}", "ab".repeat(32));
    let left = other_cli.run(&["--node", &node, "ctx", "leave", &unknown]).await;
    let stderr = String::from_utf8_lossy(&left.stderr);
    assert!(!stderr.contains("403"), "the --admin's ctx.leave is refused: {stderr}");
    assert!(
        stderr.contains("404"),
        "ctx.leave of a context the node does not hold: {stderr}"
    );

    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_beyond_three_join_as_learners_and_serve_the_registry() {
    let (home, _me) = home_with_key();
    let cli = Cli::new(home.path());
    let mesh = MeshUp::start(&cli, 4, &[]).await;
    assert!(mesh.said("(learner)"), "mesh up names the learner: {:?}", mesh.said);
    let cli = cli.env("CMESH_NATS_URL", mesh.var("CMESH_NATS_URL"));
    let (node1, node4) = (mesh.var("NODE1").to_string(), mesh.var("NODE4").to_string());
    let login = cli.run(&["login", "--node", &node1]).await;
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));

    // Three voters of the genesis, and node 4 admitted as a learner by mesh up itself.
    let nodes = cli.ok(&["--node", &node1, "mesh", "nodes"]).await;
    let role_of = |node: &str| {
        nodes["nodes"]
            .as_array()
            .and_then(|list| list.iter().find(|n| n["node"] == json!(node)))
            .map(|n| n["role"].clone())
    };
    assert_eq!(role_of(&node4), Some(json!("learner")), "{nodes}");
    let voters = nodes["nodes"]
        .as_array()
        .map_or(0, |list| list.iter().filter(|n| n["role"] == json!("voter")).count());
    assert_eq!(voters, 3, "{nodes}");

    // `cmesh mesh admit` says the same again (and takes cmesh's own --node after it).
    let again = cli
        .ok(&["mesh", "admit", &node4, "--role", "learner", "--node", &node1])
        .await;
    assert_eq!(again["role"], json!("learner"), "{again}");

    // The learner holds a replica: a name registered through it resolves through it.
    cli.ok(&["--node", &node4, "name", "register", "learnt.mcom", "I:whoami"])
        .await;
    let resolved = cli.ok(&["--node", &node4, "name", "resolve", "learnt.mcom"]).await;
    assert_eq!(resolved["target"], json!("I:whoami"), "{resolved}");

    mesh.stop().await;
}
