//! The mesh registry's Raft across `cmesh node run` processes: the leader SIGKILLed
//! under write load, twice. (The in-process fault tests in actors/consensus/tests run
//! the same code with partitions, snapshots and voter changes; here the nodes are the
//! real binary, killed as an operator's machine would lose them.)

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmesh_common::Address;
use cmesh_testkit::*;
use serde_json::json;

/// Writers registering names at once.
const WRITERS: usize = 6;
/// Acknowledged names between two kills.
const BETWEEN_KILLS: usize = 30;
/// How long the writes may take to come back after a kill: a new leader is elected in
/// about 2 s, but writes in flight to the dead leader wait out their 5 s timeout first,
/// and CI runs this beside the other tests.
const RECOVERY: Duration = Duration::from_secs(45);
/// How long after a kill NATS may still deliver to the dead node's subscription.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// A write must be answered within this: a write that hears nothing is a defect.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// The leader the running nodes agree on.
async fn leader(mesh: &Mesh, token: &str, running: &[usize]) -> usize {
    eventually("the running nodes to agree on a leader", EVENTUALLY, || async {
        let mut leaders = BTreeSet::new();
        for &i in running {
            let reply = mesh.client.fqmn(mesh.node(i), "C:status", Some(token)).await;
            if reply.status != 200 {
                return None;
            }
            leaders.insert(reply.body["leader"].as_str()?.to_string());
        }
        let leader: Address = leaders.pop_first().filter(|_| leaders.is_empty())?.parse().ok()?;
        running.iter().copied().find(|&i| mesh.node(i).address() == leader)
    })
    .await
}

/// Every node's status once all have applied the same index.
async fn converged(mesh: &Mesh, token: &str) -> u64 {
    eventually("every node to apply the same log", EVENTUALLY, || async {
        let mut applied = BTreeSet::new();
        for node in &mesh.nodes {
            let reply = mesh.client.fqmn(node, "C:status", Some(token)).await;
            applied.insert(reply.body["applied"].as_u64()?);
        }
        (applied.len() == 1).then(|| applied.pop_first()).flatten()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_sigkilled_under_load_loses_no_acknowledged_name() {
    let mut mesh = Mesh::start(3).await;
    let owner = new_key();
    let token = mesh.client.login(&owner, mesh.node(0)).await;
    let client = Arc::new(Client::connect(&mesh.nats.url()).await.with_timeout(ANSWER_WITHIN));
    let addresses: Vec<Address> = mesh.addresses();
    let owner_address = owner.address();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let unavailable = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    // When each node was killed: a write in flight to the node killed cannot be answered
    // by it (its fate is unknown, as with any server lost mid-request).
    let kills = Arc::new(Mutex::new(Vec::<(Address, Instant)>::new()));

    // Writers through every node in turn; a dead node has no responders, and a write in
    // flight when the leader dies must still hear back (200 or 503 with its advice).
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, token, addresses) = (client.clone(), token.clone(), addresses.clone());
            let (acknowledged, unavailable, stop) = (acknowledged.clone(), unavailable.clone(), stop.clone());
            let kills = kills.clone();
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let name = format!("w{w}-{n}.mcom");
                    let params = json!({"name": name, "target": "I:whoami"});
                    let to = addresses[n % addresses.len()];
                    let started = Instant::now();
                    match client.try_call(to, "registrar.register", params, Some(&token)).await {
                        Ok(record) => {
                            assert_eq!(record["owner"], json!(owner_address), "{record}");
                            acknowledged.lock().expect("names").push(name);
                        }
                        Err(ClientError::NoResponders { .. }) => tokio::task::yield_now().await,
                        Err(ClientError::Rpc {
                            status: 503, message, ..
                        }) => {
                            assert!(
                                message.contains("retry") || message.contains("read it back"),
                                "{message}"
                            );
                            *unavailable.lock().expect("count") += 1;
                        }
                        // Killed while asked, or just before: NATS may still hold the dead
                        // node's subscription for a moment, so the request went nowhere.
                        Err(ClientError::Timeout { .. })
                            if kills
                                .lock()
                                .expect("kills")
                                .iter()
                                .any(|(node, at)| *node == to && *at + KILL_GRACE >= started) => {}
                        Err(e) => panic!("a write through {to} must be answered with 200 or 503: {e}"),
                    }
                }
            })
        })
        .collect();
    let acknowledged_now = || acknowledged.lock().expect("names").len();

    let mut running = vec![0, 1, 2];
    for kill in 0..2 {
        let target = acknowledged_now() + BETWEEN_KILLS;
        eventually("writes to be acknowledged", RECOVERY, || async {
            (acknowledged_now() >= target).then_some(())
        })
        .await;
        let killed = leader(&mesh, &token, &running).await;
        kills
            .lock()
            .expect("kills")
            .push((mesh.node(killed).address(), Instant::now()));
        mesh.nodes[killed].kill().await;
        running.retain(|&i| i != killed);
        // A new leader among the others, and writes acknowledged again.
        let new_leader = leader(&mesh, &token, &running).await;
        assert_ne!(new_leader, killed, "kill {kill}");
        let target = acknowledged_now() + BETWEEN_KILLS;
        eventually("writes after the failover", RECOVERY, || async {
            (acknowledged_now() >= target).then_some(())
        })
        .await;
        // The killed node comes back on its data dir and catches up.
        mesh.nodes[killed].respawn();
        mesh.nodes[killed].wait_ready(READY_TIMEOUT).await;
        running.push(killed);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("a writer panicked");
    }

    // Every acknowledged name is on every node, and the nodes hold the same names.
    converged(&mesh, &token).await;
    let acknowledged = acknowledged.lock().expect("names").clone();
    let mut replicas = Vec::new();
    for node in &mesh.nodes {
        let list = mesh
            .client
            .call(
                node,
                "registrar.list",
                json!({"owner": owner.address(), "consistency": "local"}),
                Some(&token),
            )
            .await;
        let names: BTreeSet<String> = list["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        for name in &acknowledged {
            assert!(
                names.contains(name),
                "{name} acknowledged but not on {}",
                node.address()
            );
        }
        replicas.push(names);
    }
    assert!(replicas.windows(2).all(|w| w[0] == w[1]), "the nodes disagree");
    assert!(
        replicas[0].len() < cmesh_registrar::LIST_CAP,
        "the list must not be cut off for this comparison"
    );
    eprintln!(
        "{} names acknowledged, {} answered 503, across 2 leader kills",
        acknowledged.len(),
        unavailable.lock().expect("count")
    );
}
