//! Replicated contexts across real node processes on one real nats-server: members
//! invited and joining (the app's module fetched from a member), writes through every
//! member converging to one root, a member killed with SIGKILL mid-load catching up on
//! restart, a member cut off from NATS catching up once back, and leaving.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cmesh_common::Address;
use cmesh_testkit::*;
use serde_json::{json, Value};

/// Generous: debug builds, a shared machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// A mesh of `nodes` nodes whose admin is `admin`, logged in on each.
struct Members {
    mesh: Mesh,
    admin: cmesh_common::SigningKey,
    tokens: Vec<String>,
    context: String,
}

impl Members {
    fn token(&self, i: usize) -> Option<&str> {
        Some(self.tokens[i].as_str())
    }

    fn node(&self, i: usize) -> cmesh_common::Address {
        self.mesh.node(i).address()
    }

    async fn rpc(&self, i: usize, method: &str, params: Value) -> Reply {
        self.mesh.client.rpc(self.node(i), method, params, self.token(i)).await
    }

    async fn call(&self, i: usize, method: &str, params: Value) -> Value {
        self.mesh.client.call(self.node(i), method, params, self.token(i)).await
    }

    /// `set key value` through node `i`; answers the transaction id.
    async fn set(&self, i: usize, key: &str, value: Value) -> String {
        let params = json!({"context": self.context, "method": "set", "args": [key, value]});
        let reply = self.call(i, "ctx.call", params).await;
        reply["tx"].as_str().expect("a write is a transaction").to_string()
    }

    async fn get(&self, i: usize, key: &str) -> Value {
        let params = json!({"context": self.context, "method": "get", "args": [key]});
        self.call(i, "ctx.view", params).await["result"].clone()
    }

    async fn root(&self, i: usize) -> Value {
        self.call(i, "ctx.root", json!({"context": self.context})).await
    }

    /// Joins node `i` (already invited) and waits until it is in sync.
    async fn join(&self, i: usize) -> Value {
        self.join_within(i, CONVERGE).await
    }

    /// `join`, waiting at most `limit` for the catch-up.
    async fn join_within(&self, i: usize, limit: Duration) -> Value {
        let joined = self.call(i, "ctx.join", json!({"context": self.context})).await;
        assert_eq!(joined["phase"], json!("joining"), "{joined}");
        eventually(&format!("node {i} to be in sync"), limit, || async {
            let status = self.call(i, "ctx.status", json!({"context": self.context})).await;
            (status["phase"] == json!("in-sync")).then_some(status)
        })
        .await
    }

    /// `ctx.invite` of node `i`, through node 0.
    async fn invite(&self, i: usize) -> Value {
        let params = json!({"context": self.context, "member": self.node(i)});
        self.call(0, "ctx.invite", params).await
    }

    fn set_params(&self, key: &str, value: &Value) -> Value {
        json!({"context": self.context, "method": "set", "args": [key, value]})
    }

    /// The member nodes `ctx.members` on node `i` lists.
    async fn member_list(&self, i: usize) -> Vec<String> {
        let members = self.call(i, "ctx.members", json!({"context": self.context})).await;
        members["members"]
            .as_array()
            .unwrap_or_else(|| panic!("ctx.members on node {i}: {members}"))
            .iter()
            .filter_map(|x| x["member"].as_str().map(str::to_string))
            .collect()
    }

    /// A call that may fail (the node unreachable, an error): the result, or why not.
    async fn try_call(&self, i: usize, method: &str, params: Value) -> Result<Value, String> {
        try_call(
            &self.mesh.client,
            self.node(i),
            &self.tokens[i],
            method,
            params,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// Waits until nodes `nodes` agree on root, heads and the number of applied
    /// transactions, which must be at least `applied` (for when a write may have been
    /// made without its caller hearing so).
    async fn converged_at_least(&self, nodes: &[usize], applied: u64) -> Value {
        let what = format!("nodes {nodes:?} to converge on at least {applied} transactions");
        eventually(&what, CONVERGE, || async {
            let mut roots = Vec::new();
            for &i in nodes {
                roots.push(
                    self.try_call(i, "ctx.root", json!({"context": self.context}))
                        .await
                        .ok()?,
                );
            }
            let first = &roots[0];
            let same = roots.iter().all(|r| {
                r["root"] == first["root"] && r["heads"] == first["heads"] && r["applied"] == first["applied"]
            });
            (same && first["applied"].as_u64() >= Some(applied)).then(|| first.clone())
        })
        .await
    }

    /// Waits until nodes `nodes` hold `applied` transactions and agree on heads and root.
    async fn converged(&self, nodes: &[usize], applied: u64) -> Value {
        eventually(
            &format!("nodes {nodes:?} to converge on {applied} transactions"),
            CONVERGE,
            || async {
                let mut roots = Vec::new();
                for &i in nodes {
                    roots.push(self.root(i).await);
                }
                converged_roots(&roots, applied)
            },
        )
        .await
    }
}

/// Starts `nodes` nodes, deploys kv on node 0 only, creates a context there and invites
/// the nodes in `invite`.
async fn members(nodes: usize, invite: &[usize]) -> Members {
    members_with(new_key(), nodes, invite).await
}

/// `members`, with `admin` as the node admin (and the context's admin).
async fn members_with(admin: cmesh_common::SigningKey, nodes: usize, invite: &[usize]) -> Members {
    let mesh = Mesh::with(MeshOptions::new(nodes).admin(admin.address())).await;
    let mut tokens = Vec::new();
    for i in 0..nodes {
        tokens.push(mesh.client.login(&admin, mesh.node(i).address()).await);
    }
    let node0 = mesh.node(0).address();
    deploy(&mesh.client, node0, Some(&tokens[0]), "kv", "1.0.0").await;
    let context = create(&mesh.client, node0, Some(&tokens[0]), "kv").await;
    let members = Members {
        mesh,
        admin,
        tokens,
        context,
    };
    for &i in invite {
        members.invite(i).await;
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_every_member_converge_to_one_root() {
    let m = members(3, &[1, 2]).await;
    let status = m.join(1).await;
    assert_eq!(status["applied"], json!(3), "genesis and two invitations: {status}");
    assert_eq!(status["peer"], json!(m.node(0).to_string()));
    m.join(2).await;
    // The app's module came from a member: the joiner now lists it.
    let apps = m.call(2, "app.list", Value::Null).await;
    assert_eq!(apps[0]["app"], json!(app_id("kv")), "{apps}");

    let members = m.call(2, "ctx.members", json!({"context": m.context})).await;
    let listed: Vec<&str> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|x| x["member"].as_str())
        .collect();
    assert_eq!(listed.len(), 3, "{members}");

    // Concurrent writes through every member, to the same keys and to their own.
    let writes = (0..3).map(|i| {
        let m = &m;
        async move {
            for n in 0..10 {
                m.set(i, &format!("own-{i}-{n}"), json!(n)).await;
                m.set(i, "shared", json!(format!("node {i} write {n}"))).await;
            }
        }
    });
    futures::future::join_all(writes).await;
    let root = m.converged(&[0, 1, 2], 3 + 60).await;
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(
                m.get(i, &format!("own-{j}-9")).await,
                json!(9),
                "node {i} sees node {j}'s writes"
            );
        }
    }
    let shared = m.get(0, "shared").await;
    for i in 1..3 {
        assert_eq!(m.get(i, "shared").await, shared, "one order everywhere");
    }

    // A member that restarts (not killed) comes back with the same root.
    let mut m = m;
    m.mesh.restart_node(1).await;
    m.tokens[1] = m.mesh.client.login(&m.admin, m.node(1)).await;
    assert_eq!(m.root(1).await["root"], root["root"]);
}

/// One JSON-RPC request that may fail (no reply within `limit`, no responders, an error
/// answer): the result, or why not.
async fn try_call(
    client: &Client,
    node: Address,
    token: &str,
    method: &str,
    params: Value,
    limit: Duration,
) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": client.next_id()});
    let payload = serde_json::to_vec(&body).expect("encode JSON");
    let subject = To::Node(node).rpc_subject();
    let message = tokio::time::timeout(limit, client.try_request(&subject, bearer(token), payload))
        .await
        .map_err(|_| format!("no reply on {subject} within {limit:?}"))?
        .map_err(|e| error_chain(&e))?;
    let answer: Value =
        serde_json::from_slice(&message.payload).map_err(|e| format!("a reply that is not JSON: {e}"))?;
    answer.get("result").cloned().ok_or_else(|| answer.to_string())
}

/// A write whose caller got its transaction id back.
#[derive(Debug, Clone)]
struct Acked {
    node: usize,
    key: String,
    value: Value,
    tx: String,
}

/// Writes through one node on a NATS connection of its own, so that the test can kill the
/// node while it writes.
struct Writer {
    client: Client,
    index: usize,
    node: Address,
    token: String,
    context: String,
}

impl Writer {
    async fn new(m: &Members, i: usize) -> Writer {
        Writer {
            client: Client::connect(&m.mesh.nats.url()).await,
            index: i,
            node: m.node(i),
            token: m.tokens[i].clone(),
            context: m.context.clone(),
        }
    }

    /// `set key value`; the transaction id, or why there is none.
    async fn try_set(&self, key: &str, value: &Value, limit: Duration) -> Result<String, String> {
        let params = json!({"context": self.context, "method": "set", "args": [key, value]});
        let result = try_call(&self.client, self.node, &self.token, "ctx.call", params, limit).await?;
        result["tx"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("a write without tx: {result}"))
    }

    /// Writes `w{i}-{n}` for n below `writes`, one after the other; the acknowledged ones.
    /// The writer of node 2 says `kill_now` after `kill_after` answers, and stops at its
    /// first failure once `killing` is set; any other failure fails the test.
    async fn write_until_killed(
        &self,
        writes: usize,
        kill_after: usize,
        killing: &AtomicBool,
        kill_now: &tokio::sync::Notify,
    ) -> Vec<Acked> {
        let i = self.index;
        let mut acked = Vec::new();
        for n in 0..writes {
            let key = format!("w{i}-{n}");
            let value = json!(format!("node {i} write {n}"));
            // A write in flight when its node dies gets no answer: do not wait long.
            let limit = if i == 2 {
                Duration::from_secs(3)
            } else {
                REQUEST_TIMEOUT
            };
            match self.try_set(&key, &value, limit).await {
                Ok(tx) => acked.push(Acked {
                    node: i,
                    key,
                    value,
                    tx,
                }),
                Err(e) if i == 2 && killing.load(Ordering::SeqCst) => {
                    eprintln!("write {key} through node 2 while it was killed: {e} (not expected)");
                    break;
                }
                Err(e) => panic!("write {key} through node {i} failed: {e}"),
            }
            if i == 2 && acked.len() == kill_after {
                kill_now.notify_one();
            }
        }
        acked
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_load_catches_up_on_restart() {
    /// Writes each writer tries; node 2 dies after its writer got `KILL_AFTER` answers.
    const WRITES: usize = 30;
    const KILL_AFTER: usize = 8;
    let started = Instant::now();
    let mut m = members(3, &[1, 2]).await;
    m.join(1).await;
    m.join(2).await;
    m.converged(&[0, 1, 2], 3).await;

    let mut writers = Vec::new();
    for i in 0..3 {
        writers.push(Writer::new(&m, i).await);
    }
    let killing = AtomicBool::new(false);
    let kill_now = tokio::sync::Notify::new();
    let writes = futures::future::join_all(
        writers
            .iter()
            .map(|w| w.write_until_killed(WRITES, KILL_AFTER, &killing, &kill_now)),
    );
    let node2 = &mut m.mesh.nodes[2];
    let kill = async {
        kill_now.notified().await;
        killing.store(true, Ordering::SeqCst);
        node2.kill().await;
    };
    let (acked, ()) = tokio::join!(writes, kill);
    let mut acked: Vec<Acked> = acked.into_iter().flatten().collect();
    let by_node2 = acked.iter().filter(|a| a.node == 2).count();
    assert!(by_node2 >= KILL_AFTER, "node 2 acknowledged {by_node2} writes");
    assert!(by_node2 < WRITES, "node 2 was killed before its writer was done");

    // More writes while node 2 is down: it must fetch them when back.
    for i in 0..2 {
        for n in 0..5 {
            let (key, value) = (format!("down-{i}-{n}"), json!(n));
            let tx = m.set(i, &key, value.clone()).await;
            acked.push(Acked {
                node: i,
                key,
                value,
                tx,
            });
        }
    }
    let txs: std::collections::HashSet<&str> = acked.iter().map(|a| a.tx.as_str()).collect();
    assert_eq!(txs.len(), acked.len(), "one transaction per acknowledged write");

    // Back on the same data directory; the node's tokens may not have survived.
    m.mesh.nodes[2].restart().await;
    m.mesh.wait_peers().await;
    m.tokens[2] = m.mesh.client.login(&m.admin, m.node(2)).await;
    let acked_count = acked.len() as u64;
    let root = m.converged_at_least(&[0, 1, 2], 3 + acked_count).await;
    // At most the one write in flight when node 2 died was made unacknowledged.
    let applied = root["applied"].as_u64().expect("applied");
    assert!(
        applied <= 3 + acked_count + 1,
        "{applied} transactions applied, {acked_count} writes acknowledged: {root}"
    );
    let status = m.call(2, "ctx.status", json!({"context": m.context})).await;
    assert_eq!(status["phase"], json!("in-sync"), "{status}");

    for i in 0..3 {
        for a in &acked {
            assert_eq!(
                m.get(i, &a.key).await,
                a.value,
                "node {i} lacks {} (tx {}, acknowledged by node {})",
                a.key,
                a.tx,
                a.node
            );
        }
    }
    eprintln!(
        "{} writes acknowledged ({by_node2} by node 2 before it died), {applied} applied, {:?} in all",
        acked.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_nats_catches_up_when_back() {
    let started = Instant::now();
    let mut m = members(2, &[1]).await;
    // Node 2 reaches NATS through a proxy the test can cut.
    let proxy = Proxy::start(m.mesh.nats.port()).await;
    let options = m.mesh.node(1).options.clone();
    let node = Node::start(2, &proxy.url(), options).await;
    m.mesh.admit(node.address(), "learner").await;
    m.mesh.nodes.push(node);
    m.mesh.wait_peers().await;
    m.tokens.push(m.mesh.client.login(&m.admin, m.node(2)).await);
    m.invite(2).await;
    m.join(1).await;
    m.join(2).await;
    for i in 0..3 {
        m.set(i, &format!("before-{i}"), json!(i)).await;
    }
    let before = m.converged(&[0, 1, 2], 6).await;

    proxy.cut().await;
    eventually("node 2 to be unreachable", EVENTUALLY, || async {
        let subject = To::Node(m.node(2)).fqmn_subject();
        let reply = m.mesh.client.try_request(&subject, Default::default(), "P:ping").await;
        reply.err()
    })
    .await;
    // Writes it cannot see.
    let writes = (0..2).map(|i| {
        let m = &m;
        async move {
            for n in 0..10 {
                m.set(i, &format!("cut-{i}-{n}"), json!(n)).await;
            }
        }
    });
    futures::future::join_all(writes).await;
    let after = m.converged(&[0, 1], 26).await;
    assert_ne!(after["root"], before["root"]);
    // Behind: node 2 does not answer, and it held `before` when it was cut off.
    assert!(m.try_call(2, "ctx.root", json!({"context": m.context})).await.is_err());
    proxy.restore();
    let restored_at = Instant::now();
    // No write from here on: the heads gossip brings node 2 up to date.
    let first = eventually("node 2 to answer again", CONVERGE, || async {
        m.try_call(2, "ctx.root", json!({"context": m.context})).await.ok()
    })
    .await;
    eprintln!(
        "node 2 answers again after {:?} with {} transactions (the others: 26)",
        restored_at.elapsed(),
        first["applied"]
    );
    let root = m.converged(&[0, 1, 2], 26).await;
    assert_eq!(root["root"], after["root"]);
    for i in 0..2 {
        assert_eq!(m.get(2, &format!("cut-{i}-9")).await, json!(9));
    }
    eprintln!(
        "converged {:?} after the restore; {:?} in all",
        restored_at.elapsed(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_catches_up_on_ten_thousand_transactions() {
    const TXS: usize = 10_000;
    const WRITERS: usize = 48;
    let m = members(2, &[1]).await;
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let writers = (0..WRITERS).map(|_| {
        let (m, next) = (&m, &next);
        async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= TXS {
                    break;
                }
                m.set(0, &format!("k{n}"), json!(n)).await;
            }
        }
    });
    futures::future::join_all(writers).await;
    let wrote = started.elapsed();
    let applied = 2 + TXS as u64;
    let root = m.root(0).await;
    assert_eq!(root["applied"], json!(applied), "{root}");

    // While node 1 joins, calls to the context there are refused with 503 and how far
    // it got, never 404; `ctx.join {wait}` answers once it is in sync.
    let joining = Instant::now();
    let joined = m.call(1, "ctx.join", json!({"context": m.context})).await;
    assert_eq!(joined["phase"], json!("joining"), "{joined}");
    let get = json!({"context": m.context, "method": "get", "args": ["k0"]});
    let busy = m.rpc(1, "ctx.view", get.clone()).await;
    busy.assert_rpc_error(-32000, 503);
    let message = busy.error_message().unwrap_or_default();
    assert!(
        message.contains("is being joined on this node") && message.contains("retry"),
        "{message}"
    );
    let patient = Client::connect(&m.mesh.nats.url())
        .await
        .with_timeout(Duration::from_secs(300));
    let status = patient
        .call(
            m.node(1),
            "ctx.join",
            json!({"context": m.context, "wait": true}),
            m.token(1),
        )
        .await;
    assert_eq!(status["phase"], json!("in-sync"), "{status}");
    assert_eq!(status["root"], root["root"], "{status}");
    let joined = joining.elapsed();
    m.call(1, "ctx.view", get).await;
    let converged = m.converged(&[0, 1], applied).await;
    assert_eq!(converged["root"], root["root"]);
    let fetched = status["fetched"].as_u64().expect("fetched");
    assert!(fetched >= TXS as u64, "{status}");
    let rate = status["rate"].as_f64().expect("rate");
    assert!(rate > 0.0, "{status}");
    assert_eq!(m.get(1, "k9999").await, json!(9999));
    eprintln!(
        "wrote {TXS} transactions with {WRITERS} writers in {wrote:?} ({:.0}/s); \
         the joiner fetched {fetched} in {joined:?} (it reports {rate:.0}/s)",
        TXS as f64 / wrote.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_catches_up_when_the_author_is_offline() {
    let mut m = members(3, &[1, 2]).await;
    m.join(1).await;
    let writes = (0..2).map(|i| {
        let m = &m;
        async move {
            for n in 0..10 {
                m.set(i, &format!("k-{i}-{n}"), json!(format!("node {i} write {n}")))
                    .await;
            }
        }
    });
    futures::future::join_all(writes).await;
    let root = m.converged(&[0, 1], 23).await;

    let stopped = m.mesh.nodes[0].stop_sigterm().await;
    assert!(stopped.success(), "node 0 exited with {stopped}");
    let apps = m.call(2, "app.list", Value::Null).await;
    assert_eq!(apps, json!([]), "node 2 has no app yet");

    let status = m.join(2).await;
    assert_eq!(status["peer"], json!(m.node(1).to_string()), "{status}");
    let joined = m.converged(&[1, 2], 23).await;
    assert_eq!(joined["root"], root["root"]);
    let apps = m.call(2, "app.list", Value::Null).await;
    assert_eq!(
        apps[0]["app"],
        json!(app_id("kv")),
        "the module came from node 1: {apps}"
    );
    for i in 0..2 {
        for n in [0, 9] {
            let value = m.get(2, &format!("k-{i}-{n}")).await;
            assert_eq!(value, json!(format!("node {i} write {n}")));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_leaves_deletes_its_copy_and_the_others_carry_on() {
    let m = members(3, &[1, 2]).await;
    m.join(1).await;
    m.join(2).await;
    for i in 0..3 {
        for n in 0..5 {
            m.set(i, &format!("k-{i}-{n}"), json!(n)).await;
        }
    }
    m.converged(&[0, 1, 2], 18).await;
    let node2 = m.node(2).to_string();
    assert!(m.member_list(0).await.contains(&node2));

    let left = m.call(2, "ctx.leave", json!({"context": m.context})).await;
    assert!(left["tx"].is_string(), "{left}");
    assert_eq!(left["deleted"], json!(19), "its 18 transactions and the leave: {left}");
    for i in 0..2 {
        eventually(
            &format!("node {i} to drop node 2 from the members"),
            CONVERGE,
            || async { (!m.member_list(i).await.contains(&node2)).then_some(()) },
        )
        .await;
    }
    // Node 2 holds nothing of the context any more.
    for method in ["ctx.status", "ctx.root"] {
        let reply = m.rpc(2, method, json!({"context": m.context})).await;
        assert_eq!(reply.status, 404, "{method} on node 2 after leaving: {}", reply.body);
    }
    let write = m.rpc(2, "ctx.call", m.set_params("after", &json!(1))).await;
    assert_eq!(
        write.status, 404,
        "a write through node 2 after leaving: {}",
        write.body
    );
    // The others carry on (with the leave: 19 transactions).
    for i in 0..2 {
        for n in 0..5 {
            m.set(i, &format!("after-{i}-{n}"), json!(n)).await;
        }
    }
    m.converged(&[0, 1], 29).await;

    // It may come back only if invited again.
    let refused = m.rpc(2, "ctx.join", json!({"context": m.context})).await;
    assert_eq!(
        refused.status, 403,
        "joining again without an invitation: {}",
        refused.body
    );
    assert!(
        refused.error_message().unwrap_or_default().contains("not a member"),
        "{}",
        refused.body
    );
    m.invite(2).await;
    m.join(2).await;
    m.converged(&[0, 1, 2], 30).await;
    assert_eq!(m.get(2, "after-1-4").await, json!(4));
    m.set(2, "back", json!(true)).await;
    m.converged(&[0, 1, 2], 31).await;
    assert_eq!(m.get(0, "back").await, json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_joins_shows_status_and_says_when_not_invited() {
    // The CLI's key is the node admin.
    let home = tempfile::tempdir().expect("tempdir");
    let admin = new_key();
    admin.save(&home.path().join("key")).expect("save the CLI's key");
    let m = members_with(admin, 3, &[1]).await;
    let cli = Cli::new(home.path()).env("CMESH_NATS_URL", &m.mesh.nats.url());
    for i in 0..3 {
        m.set(0, &format!("k{i}"), json!(i)).await;
    }
    let (node1, node2) = (m.node(1).to_string(), m.node(2).to_string());

    let login = cli.run(&["login", "--node", &node1]).await;
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let joined = cli.ok(&["ctx", "join", &m.context, "--node", &node1]).await;
    assert_eq!(joined["phase"], json!("in-sync"), "{joined}");
    let status = cli.ok(&["ctx", "status", &m.context, "--node", &node1]).await;
    assert_eq!(status["phase"], json!("in-sync"), "{status}");
    assert!(status["fetched"].as_u64() >= Some(3), "{status}");
    assert!(status["expected"].is_u64(), "{status}");
    assert_eq!(status["applied"], json!(5), "{status}");
    m.converged(&[0, 1], 5).await;

    // Node 2 was not invited.
    let login = cli.run(&["login", "--node", &node2]).await;
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let refused = cli.run(&["ctx", "join", &m.context, "--node", &node2]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "joining without an invitation: {stderr}");
    assert!(stderr.contains("not a member"), "{stderr}");
}
