//! The registry under faults, with consensus nodes on a real nats-server: leaders
//! killed under load, a linearizability check across kills, a cut-off minority, a
//! snapshot to a new voter, and voters changed under load.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmesh_common::{Address, Status};
use cmesh_consensus::{Applied, Command, ConsensusError, ConsensusNode, Consistency, Role};
use cmesh_testkit::{eventually, EVENTUALLY};
use common::linearizability::{is_linearizable, Answer, Call, Operation};
use common::{fast_settings, key, names, register, Cluster, View};

/// An error a write may end with while leaders change: 503, with advice.
fn assert_retryable(error: &ConsensusError) {
    assert_eq!(error.status(), Status::UNAVAILABLE, "{error}");
    assert!(error.to_string().contains("retry"), "no retry advice: {error}");
}

/// Registers `name` through `node`, retrying while leaders change, until it is in.
async fn commit(node: &ConsensusNode, name: &str) {
    eventually("the write to commit", 3 * EVENTUALLY, || async {
        match node.propose(register(name), Address::from(1)).await {
            Ok(Applied::Done(_)) => Some(()),
            // An earlier try that answered 503 committed after all.
            Ok(Applied::Refused(e)) if e.status == Status::CONFLICT => Some(()),
            Ok(other) => panic!("{name}: {other:?}"),
            Err(error) => {
                assert_retryable(&error);
                None
            }
        }
    })
    .await
}

/// Writers that register fresh names through the given nodes until stopped, recording
/// every name acknowledged.
struct Writers {
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `per_node` writers through each of the nodes in `slots`, whichever runs there.
    fn start(view: &View, slots: &[usize], per_node: usize) -> Writers {
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for &n in slots {
            for w in 0..per_node {
                let (view, acknowledged, stopped) = (view.clone(), acknowledged.clone(), stopped.clone());
                tasks.push(tokio::spawn(async move {
                    let mut i = 0;
                    while !*stopped.borrow() {
                        let Some(node) = view.get(n) else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let name = format!("w{n}x{w}x{i}.mcom");
                        i += 1;
                        match node.propose(register(&name), Address::from(1)).await {
                            Ok(Applied::Done(_)) => {
                                acknowledged.lock().expect("lock").insert(name);
                            }
                            Ok(other) => panic!("a fresh name must register: {other:?}"),
                            Err(error) => {
                                assert_retryable(&error);
                                // The node may be the one that was killed: wait a little.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }));
            }
        }
        Writers {
            acknowledged,
            stop,
            tasks,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().expect("lock").len()
    }

    async fn wait_for_more(&self, than: usize) {
        eventually("more acknowledged writes", 3 * EVENTUALLY, || async {
            (self.count() > than).then_some(())
        })
        .await;
    }

    async fn stop(self) -> BTreeSet<String> {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.expect("a writer panicked");
        }
        Arc::try_unwrap(self.acknowledged)
            .expect("writers stopped")
            .into_inner()
            .expect("lock")
    }
}

/// Every acknowledged name is on every running node, and the nodes hold the same names.
async fn assert_all_hold(cluster: &Cluster, acknowledged: &BTreeSet<String>) {
    let leader = cluster.leader().await;
    cluster
        .node(leader)
        .read(Consistency::Linearizable, |_| ())
        .await
        .expect("a read through the leader");
    cluster.converged().await;
    let reference = names(&cluster.node(leader));
    for node in cluster.running() {
        let held = names(&node);
        assert_eq!(held, reference, "{} differs from the leader", node.address());
        let missing: Vec<_> = acknowledged.iter().filter(|n| held.binary_search(n).is_err()).collect();
        assert!(
            missing.is_empty(),
            "{} lost acknowledged names: {missing:?}",
            node.address()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leaders_lose_no_acknowledged_name() {
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let writers = Writers::start(&cluster.view, &[0, 1, 2], 4);
    for _ in 0..3 {
        writers.wait_for_more(writers.count() + 20).await;
        let leader = cluster.leader().await;
        cluster.kill(leader).await;
        let failed_over = Instant::now();
        // A new leader among the other two, which takes writes again.
        let count = writers.count();
        writers.wait_for_more(count).await;
        eprintln!("writes resumed {:?} after the kill", failed_over.elapsed());
        cluster.restart(leader).await;
    }
    let acknowledged = writers.stop().await;
    assert!(
        acknowledged.len() > 60,
        "too few writes to tell: {}",
        acknowledged.len()
    );
    assert_all_hold(&cluster, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_transfers_and_resolves_stay_linearizable_across_leader_kills() {
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let clients: Vec<Address> = (1..=6).map(Address::from).collect();
    const NAMES: [&str; 2] = ["a.mcom", "b.mcom"];
    let start = Instant::now();
    let histories: Arc<Mutex<Vec<Vec<Operation>>>> = Arc::new(Mutex::new(vec![Vec::new(); NAMES.len()]));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (c, caller) in clients.iter().copied().enumerate() {
        let (histories, stopped) = (histories.clone(), stopped.clone());
        let view = cluster.view.clone();
        tasks.push(tokio::spawn(async move {
            let mut round = 0usize;
            while !*stopped.borrow() && round < 40 {
                round += 1;
                let which = (round + c) % NAMES.len();
                let name = NAMES[which];
                let Some(node) = view.get((round * 7 + c) % 3) else {
                    continue;
                };
                let call = match (round + c) % 3 {
                    0 => Call::Register { caller },
                    1 => Call::Transfer {
                        caller,
                        to: Address::from(1 + (round % 3) as u64),
                    },
                    _ => Call::Resolve,
                };
                let called_at = start.elapsed().as_micros() as u64;
                let answer = match call {
                    Call::Resolve => node
                        .read(Consistency::Linearizable, |r| {
                            r.resolve(name).map(|record| record.owner)
                        })
                        .await
                        .map(|(found, _)| match found {
                            Ok(owner) => Answer::Owner(owner),
                            Err(e) if e.status == Status::NOT_FOUND => Answer::NotFound,
                            Err(e) => panic!("resolve: {e:?}"),
                        }),
                    Call::Register { .. } | Call::Transfer { .. } => {
                        let command = match call {
                            Call::Register { .. } => register(name),
                            Call::Transfer { to, .. } => Command::Transfer { name: name.into(), to },
                            Call::Resolve => unreachable!(),
                        };
                        node.propose(command, caller).await.map(|applied| match applied {
                            Applied::Done(_) => Answer::Done,
                            Applied::Refused(e) if e.status == Status::CONFLICT => Answer::Taken,
                            Applied::Refused(e) if e.status == Status::FORBIDDEN => Answer::NotOwner,
                            Applied::Refused(e) if e.status == Status::NOT_FOUND => Answer::NotFound,
                            other => panic!("unexpected result: {other:?}"),
                        })
                    }
                };
                let returned_at = start.elapsed().as_micros() as u64;
                let returned = match answer {
                    Ok(answer) => Some((returned_at, answer)),
                    // Nothing was written: the operation did not happen.
                    Err(ConsensusError::NoLeader { .. }) if !matches!(call, Call::Resolve) => continue,
                    Err(error) => {
                        assert_retryable(&error);
                        if matches!(call, Call::Resolve) {
                            continue;
                        }
                        None
                    }
                };
                histories.lock().expect("lock")[which].push(Operation {
                    call,
                    called_at,
                    returned,
                });
            }
        }));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = cluster.leader().await;
        cluster.kill(leader).await;
        cluster.leader().await;
        cluster.restart(leader).await;
    }
    // Enough operations on each name to tell, however slowly a loaded machine gets there
    // (a write forwarded to a leader as it dies waits out its timeout).
    eventually("enough operations on every name", Duration::from_secs(60), || async {
        let histories = histories.lock().expect("lock");
        histories.iter().all(|h| h.len() >= 12).then_some(())
    })
    .await;
    stop.send_replace(true);
    for task in tasks {
        task.await.expect("a client panicked");
    }
    let histories = histories.lock().expect("lock").clone();
    for (name, history) in NAMES.iter().zip(&histories) {
        assert!(
            history.len() >= 10,
            "too few operations on {name} to tell: {}",
            history.len()
        );
        assert!(
            is_linearizable(history),
            "the history of {name} is not linearizable: {history:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_minority_refuses_writes_marks_reads_stale_and_converges_after_the_heal() {
    let cluster = Cluster::start(3, fast_settings()).await;
    let leader = cluster.leader().await;
    cluster
        .node(leader)
        .propose(register("before.mcom"), Address::from(1))
        .await
        .expect("write");
    // Cut off the leader: it is the minority of one.
    cluster.slots[leader].proxy.cut().await;
    let minority = cluster.node(leader);
    let minority = &minority;
    let refused = minority.propose(register("minority.mcom"), Address::from(1)).await;
    let error = refused.expect_err("a minority must not commit");
    assert_retryable(&error);
    let (_, info) = minority
        .read(Consistency::Local, |r| r.resolve("before.mcom").is_ok())
        .await
        .expect("a local read still answers");
    assert!(info.stale, "a cut-off node's local reads must say they are stale");

    // The majority elects a leader and goes on.
    let majority: Vec<ConsensusNode> = cluster
        .running()
        .into_iter()
        .filter(|n| n.address() != minority.address())
        .collect();
    commit(&majority[0], "majority.mcom").await;

    cluster.slots[leader].proxy.restore();
    eventually("the healed node to catch up", EVENTUALLY, || async {
        let held = names(minority);
        (held.contains(&"majority.mcom".to_string())).then_some(())
    })
    .await;
    assert!(!names(minority).contains(&"minority.mcom".to_string()));
    let (_, info) = minority
        .read(Consistency::Linearizable, |_| ())
        .await
        .expect("a read after the heal");
    assert!(!info.stale);
    assert_all_hold(
        &cluster,
        &BTreeSet::from(["before.mcom".to_string(), "majority.mcom".to_string()]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_joins_after_ten_thousand_names_gets_them_by_snapshot() {
    let settings = cmesh_consensus::ConsensusSettings {
        snapshot_after_entries: 20,
        keep_after_snapshot: 0,
        ..fast_settings()
    };
    let mut cluster = Cluster::start(3, settings).await;
    let leader = cluster.leader().await;
    let node = cluster.node(leader);
    let mut writes = Vec::new();
    for i in 0..10_000 {
        let node = node.clone();
        writes.push(async move { node.propose(register(&format!("n{i}.mcom")), Address::from(1)).await });
        if writes.len() == 500 {
            for result in futures::future::join_all(writes.drain(..)).await {
                assert!(matches!(result, Ok(Applied::Done(_))), "{result:?}");
            }
        }
    }
    eventually("the leader to snapshot and purge its log", EVENTUALLY, || async {
        let metrics = node.raft().metrics().borrow().clone();
        metrics.purged.is_some().then_some(())
    })
    .await;

    let joiner = key();
    let admitted = node
        .propose(
            Command::Admit {
                node: joiner.address(),
                role: Role::Voter,
            },
            cluster.admin.address(),
        )
        .await
        .expect("committed");
    assert!(matches!(admitted, Applied::Done(_)), "{admitted:?}");
    let index = cluster.add(joiner).await;
    let joined = cluster.node(index);
    eventually("the new voter to hold every name", Duration::from_secs(30), || async {
        (names(&joined).len() == 10_000).then_some(())
    })
    .await;
    let metrics = joined.raft().metrics().borrow().clone();
    assert!(
        metrics.snapshot.is_some(),
        "the new voter must have installed a snapshot: {metrics:?}"
    );
    eventually("the new voter to be a Raft voter", EVENTUALLY, || async {
        node.status().await.voters.contains(&joined.address()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_is_removed_and_another_added_under_load() {
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let leaving = cluster.node(0);
    let staying = [cluster.node(1), cluster.node(2)];
    let writers = Writers::start(&cluster.view, &[1, 2], 3);
    writers.wait_for_more(20).await;

    let newcomer = key();
    let admin = cluster.admin.address();
    let admitted = staying[0]
        .propose(
            Command::Admit {
                node: newcomer.address(),
                role: Role::Voter,
            },
            admin,
        )
        .await
        .expect("committed");
    assert!(matches!(admitted, Applied::Done(_)), "{admitted:?}");
    let index = cluster.add(newcomer.clone()).await;
    let removed = staying[0]
        .propose(
            Command::Remove {
                node: leaving.address(),
            },
            admin,
        )
        .await
        .expect("committed");
    assert!(matches!(removed, Applied::Done(_)), "{removed:?}");
    let expected: BTreeSet<Address> = [staying[0].address(), staying[1].address(), newcomer.address()].into();
    eventually("Raft's voters to follow the registry", EVENTUALLY, || async {
        let leader = cluster.leader().await;
        let voters: BTreeSet<Address> = cluster.node(leader).status().await.voters.into_iter().collect();
        (voters == expected).then_some(())
    })
    .await;
    let count = writers.count();
    writers.wait_for_more(count + 20).await;
    let acknowledged = writers.stop().await;

    // The removed node takes no part any more: its proposals do not commit.
    let refused = leaving
        .propose(register("from-the-removed.mcom"), Address::from(1))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    drop(leaving);
    cluster.kill(0).await;
    assert_all_hold(&cluster, &acknowledged).await;
    assert!(names(&cluster.node(index)).len() >= acknowledged.len());
}

/// A voter that was down while the other voters were replaced finds neither newcomer in
/// its own registry when it comes back, and one of them leads: the voters its registry
/// knows (removed, but still running) vouch for the newcomers, and it catches up from
/// their appends.
#[tokio::test(flavor = "multi_thread")]
async fn a_voter_back_after_its_peers_were_replaced_catches_up_from_the_newcomers() {
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let first = cluster.leader().await;
    let lagging = (first + 1) % 3;
    let replaced: Vec<usize> = (0..3).filter(|i| *i != lagging).collect();
    cluster.kill(lagging).await;

    let admin = cluster.admin.address();
    let newcomers = [key(), key()];
    let mut indexes = Vec::new();
    for newcomer in &newcomers {
        let admit = Command::Admit {
            node: newcomer.address(),
            role: Role::Voter,
        };
        let admitted = cluster.node(first).propose(admit, admin).await.expect("committed");
        assert!(matches!(admitted, Applied::Done(_)), "{admitted:?}");
        indexes.push(cluster.add(newcomer.clone()).await);
    }
    let via = cluster.node(indexes[0]);
    for old in &replaced {
        let remove = Command::Remove {
            node: cluster.slots[*old].key.address(),
        };
        let removed = via.propose(remove, admin).await.expect("committed");
        assert!(matches!(removed, Applied::Done(_)), "{removed:?}");
    }
    let expected: BTreeSet<Address> = [
        cluster.slots[lagging].key.address(),
        newcomers[0].address(),
        newcomers[1].address(),
    ]
    .into();
    eventually("a newcomer to lead the new voters", EVENTUALLY, || async {
        let status = via.status().await;
        let voters: BTreeSet<Address> = status.voters.into_iter().collect();
        let newcomer_leads = status
            .leader
            .is_some_and(|leader| newcomers.iter().any(|n| n.address() == leader));
        (voters == expected && newcomer_leads).then_some(())
    })
    .await;
    for n in 0..5 {
        let name = format!("under-the-newcomers-{n}.mcom");
        let applied = via.propose(register(&name), admin).await.expect("committed");
        assert!(matches!(applied, Applied::Done(_)), "{applied:?}");
    }

    cluster.restart(lagging).await;
    let back = cluster.node(lagging);
    assert_eq!(
        back.replica().registry.role(&newcomers[0].address()),
        None,
        "the returning voter starts from a registry that predates the admissions"
    );
    eventually("the returning voter to catch up", EVENTUALLY, || async {
        let held = names(&back);
        let caught_up = (0..5).all(|n| held.contains(&format!("under-the-newcomers-{n}.mcom")));
        caught_up.then_some(())
    })
    .await;
    let registry = &back.replica().registry;
    assert_eq!(registry.role(&newcomers[1].address()), Some(Role::Voter));
    assert_eq!(registry.role(&cluster.slots[replaced[0]].key.address()), None);
}
