//! Consensus nodes on a real nats-server: election, replicated writes and reads,
//! admission through the registry, and what strangers on the bus can (not) do.

use std::time::Duration;

use cmesh_common::genesis::Genesis;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, SigningKey, Status};
use cmesh_consensus::requester::Requester;
use cmesh_consensus::wire::{node_subject, ReplyBody, RequestBody, Rpc, RpcReply};
use cmesh_consensus::{
    Applied, Command, ConsensusNode, ConsensusSettings, Consistency, EntryBody, EntryId, Outcome, Role,
};
use cmesh_testkit::{eventually, within, NatsServer, EVENTUALLY};
use futures::StreamExt;

/// A mesh of consensus nodes on one nats-server, with its admin's key.
struct Cluster {
    nats: NatsServer,
    genesis: Genesis,
    admin: SigningKey,
    dir: tempfile::TempDir,
    nodes: Vec<ConsensusNode>,
}

fn fast_settings() -> ConsensusSettings {
    ConsensusSettings {
        heartbeat: Duration::from_millis(100),
        election_min: Duration::from_millis(500),
        election_max: Duration::from_millis(1000),
        ..ConsensusSettings::default()
    }
}

impl Cluster {
    async fn start(voters: usize) -> Cluster {
        let nats = NatsServer::start();
        let admin = SigningKey::generate().expect("a key");
        let keys: Vec<SigningKey> = (0..voters).map(|_| SigningKey::generate().expect("a key")).collect();
        let genesis = Genesis::new(
            "test",
            vec![admin.address()],
            keys.iter().map(|k| k.address()).collect(),
        )
        .expect("a genesis");
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cluster = Cluster {
            nats,
            genesis,
            admin,
            dir,
            nodes: Vec::new(),
        };
        for key in keys {
            let node = cluster.start_node(key).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    async fn start_node(&self, key: SigningKey) -> ConsensusNode {
        let client = async_nats::connect(self.nats.url()).await.expect("connect to nats");
        let path = self.dir.path().join(format!("{}.redb", key.address()));
        ConsensusNode::start(&self.genesis, key, &path, client, fast_settings())
            .await
            .expect("the node starts")
    }

    async fn leader(&self) -> ConsensusNode {
        eventually("a leader", EVENTUALLY, || async {
            let leader = self.nodes[0].raft().metrics().borrow().current_leader?;
            self.nodes.iter().find(|n| n.address() == leader).cloned()
        })
        .await
    }
}

fn register(name: &str) -> Command {
    Command::Register {
        name: name.to_string(),
        target: "I:whoami".to_string(),
    }
}

fn names(node: &ConsensusNode) -> Vec<String> {
    node.replica().registry.names().map(|r| r.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_a_leader_and_replicate_names_written_through_any_node() {
    let cluster = Cluster::start(3).await;
    let caller = SigningKey::generate().expect("a key").address();
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.address() != leader.address())
        .expect("a follower");

    // Writes through the leader and through a follower (forwarded) both commit.
    for (i, node) in [&leader, follower].into_iter().enumerate() {
        let applied = node
            .propose(register(&format!("n{i}.mcom")), caller)
            .await
            .expect("committed");
        assert!(matches!(applied, Applied::Done(Outcome::Name { .. })), "{applied:?}");
    }
    // The same name again is refused with the registrar's status, on every path.
    let again = follower.propose(register("n0.mcom"), caller).await.expect("committed");
    match again {
        Applied::Refused(error) => assert_eq!(error.status, Status::CONFLICT),
        other => panic!("a taken name must be refused: {other:?}"),
    }

    // A linearizable read on any node sees both writes at once.
    for node in &cluster.nodes {
        let (found, info) = node
            .read(Consistency::Linearizable, |registry| {
                registry.resolve("n1.mcom").map(|r| r.owner)
            })
            .await
            .expect("a linearizable read");
        assert_eq!(found.expect("n1.mcom resolves"), caller);
        assert!(info.applied.is_some());
    }
    let expected = vec!["n0.mcom".to_string(), "n1.mcom".to_string()];
    for node in &cluster.nodes {
        assert_eq!(names(node), expected, "replica of {}", node.address());
    }

    let status = leader.status().await;
    assert_eq!(status.raft, "leader");
    assert_eq!(status.leader, Some(leader.address()));
    assert_eq!(status.voters.len(), 3);
    assert_eq!(status.role, Some(Role::Voter));
    assert!(status.committed >= status.applied.map(|_| 0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_learner_gets_the_registry_and_a_removed_one_is_refused() {
    let cluster = Cluster::start(3).await;
    let caller = SigningKey::generate().expect("a key").address();
    let leader = cluster.leader().await;
    for i in 0..20 {
        leader
            .propose(register(&format!("early{i}.mcom")), caller)
            .await
            .expect("committed");
    }

    // A node that nobody admitted: its proposals are refused, and it learns why.
    let newcomer = cluster.start_node(SigningKey::generate().expect("a key")).await;
    let refused = newcomer.propose(register("intruder.mcom"), caller).await;
    assert!(
        refused.is_err(),
        "a non-admitted node's proposal must not commit: {refused:?}"
    );

    // Only an admin may admit.
    let by_stranger = leader
        .propose(
            Command::Admit {
                node: newcomer.address(),
                role: Role::Learner,
            },
            caller,
        )
        .await
        .expect("committed");
    assert!(
        matches!(&by_stranger, Applied::Refused(e) if e.status == Status::FORBIDDEN),
        "{by_stranger:?}"
    );

    let admitted = leader
        .propose(
            Command::Admit {
                node: newcomer.address(),
                role: Role::Learner,
            },
            cluster.admin.address(),
        )
        .await
        .expect("committed");
    assert!(matches!(admitted, Applied::Done(_)), "{admitted:?}");

    // The learner is added to Raft and catches up with everything before its admission.
    eventually("the learner's replica", EVENTUALLY, || async {
        (names(&newcomer).len() == 20).then_some(())
    })
    .await;
    let through_learner = newcomer
        .propose(register("late.mcom"), caller)
        .await
        .expect("committed");
    assert!(matches!(through_learner, Applied::Done(_)), "{through_learner:?}");
    let (late, info) = newcomer
        .read(Consistency::Local, |r| r.resolve("late.mcom").is_ok())
        .await
        .expect("a local read");
    assert!(late, "a learner's own write is in its replica once acknowledged");
    assert!(!info.stale);

    // Removed: its requests count for nothing from the commit of the removal on.
    let removed = leader
        .propose(
            Command::Remove {
                node: newcomer.address(),
            },
            cluster.admin.address(),
        )
        .await
        .expect("committed");
    assert!(matches!(removed, Applied::Done(_)), "{removed:?}");
    eventually("the learner leaves Raft", EVENTUALLY, || async {
        let status = leader.status().await;
        (!status.learners.contains(&newcomer.address())).then_some(())
    })
    .await;
    let after = newcomer.propose(register("afterwards.mcom"), caller).await;
    assert!(after.is_err(), "a removed node's proposal must not commit: {after:?}");
    let (found, _) = leader
        .read(Consistency::Linearizable, |r| r.resolve("afterwards.mcom").is_ok())
        .await
        .expect("a read");
    assert!(!found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_propose_vote_or_answer_for_a_node() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let term = leader.status().await.term;
    let mesh = cluster.genesis.mesh_id();
    let stranger = SigningKey::generate().expect("a key");
    let client = async_nats::connect(cluster.nats.url()).await.expect("connect");

    // 1. A stranger's signed proposal and vote request: refused, with the reason, and
    //    nothing changes.
    let requester = Requester::start(client.clone(), stranger.clone(), mesh)
        .await
        .expect("inbox");
    let entry = EntryBody {
        mesh,
        command: register("stolen.mcom"),
        caller: cluster.admin.address(),
        time_ms: unix_millis(),
        id: EntryId::random().expect("random"),
    }
    .sign(&stranger);
    let reply = requester
        .call(leader.address(), Rpc::Propose(entry), Duration::from_secs(5))
        .await
        .expect("an answer");
    match reply {
        RpcReply::Refused(reason) => assert!(reason.contains("not admitted"), "{reason}"),
        other => panic!("a stranger's proposal must be refused: {other:?}"),
    }
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term + 100, stranger.address()), None);
    let reply = requester
        .call(leader.address(), Rpc::Vote(vote), Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(matches!(reply, RpcReply::Refused(_)), "{reply:?}");
    assert_eq!(
        leader.status().await.term,
        term,
        "a stranger's vote request must not move the term"
    );

    // 2. An admitted node's request replayed by a stranger from a minute ago is refused;
    //    unsigned bytes get no answer at all.
    let voter = &cluster.nodes[0];
    let old = RequestBody {
        mesh,
        from: stranger.address(),
        to: voter.address(),
        time_ms: unix_millis() - 10 * 60 * 1000,
        rpc: Rpc::ReadIndex,
    };
    let (bytes, _) = old.seal(&stranger).expect("sealed");
    let answer = client
        .request(node_subject(&mesh, &voter.address()), bytes.into())
        .await
        .expect("an answer");
    let answer = ReplyBody::open(&answer.payload).expect("a signed answer");
    assert!(matches!(answer.reply, RpcReply::Refused(_)));
    let silent = tokio::time::timeout(
        Duration::from_millis(500),
        client.request(node_subject(&mesh, &voter.address()), "not msgpack".into()),
    )
    .await;
    assert!(silent.is_err(), "garbage gets no answer: {silent:?}");

    // 3. A stranger answers first on a node's subject: the caller ignores the spoof and
    //    takes the real, signed answer.
    let target = cluster
        .nodes
        .iter()
        .find(|n| n.address() != leader.address())
        .expect("a follower");
    let mut spoofed = client
        .subscribe(node_subject(&mesh, &target.address()))
        .await
        .expect("subscribe");
    let target_address = target.address();
    let spoofer = tokio::spawn({
        let client = client.clone();
        let stranger = stranger.clone();
        async move {
            while let Some(message) = spoofed.next().await {
                let Some(reply) = message.reply else { continue };
                let Ok((_, digest)) = RequestBody::open(&message.payload) else {
                    continue;
                };
                // Claims to be the target, signed by the stranger.
                let forged = ReplyBody {
                    request: digest,
                    from: target_address,
                    reply: RpcReply::ReadIndex(Ok(None)),
                };
                let bytes = forged.seal(&stranger).expect("sealed");
                let _ = client.publish(reply, bytes.into()).await;
            }
        }
    });
    let honest = Requester::start(client.clone(), SigningKey::generate().expect("a key"), mesh)
        .await
        .expect("inbox");
    // The honest caller is a stranger too, so the real answer is a signed refusal; what
    // matters is that it is the target's answer and not the forgery.
    let reply = within(
        "the target's own answer",
        Duration::from_secs(5),
        honest.call(target.address(), Rpc::ReadIndex, Duration::from_secs(5)),
    )
    .await
    .expect("an answer");
    assert!(matches!(reply, RpcReply::Refused(_)), "took a forged reply: {reply:?}");
    spoofer.abort();

    // The leader is still the leader, and writes still go through.
    let applied = leader
        .propose(register("still.mcom"), Address::from(7))
        .await
        .expect("committed");
    assert!(matches!(applied, Applied::Done(_)));
}
