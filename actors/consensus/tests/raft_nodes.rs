//! Consensus nodes on a real nats-server: election, replicated writes and reads,
//! admission through the registry, and what strangers on the bus can (not) do.

use std::time::Duration;

use cmesh_common::time::unix_millis;
use cmesh_common::{Address, SigningKey, Status};
use cmesh_consensus::peer_keys::PeerKeys;
use cmesh_consensus::requester::Requester;
use cmesh_consensus::wire::{node_subject, ReplyBody, RequestBody, Rpc, RpcReply};
use cmesh_consensus::{Answer, Applied, Command, Consistency, EntryBody, EntryFault, EntryId, Outcome, Query, Role};
use cmesh_testkit::{eventually, within, EVENTUALLY};
use common::{fast_settings, key, names, register, Cluster};
use futures::StreamExt;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_a_leader_and_replicate_names_written_through_any_node() {
    let cluster = Cluster::start(3, fast_settings()).await;
    let caller = SigningKey::generate().expect("a key").address();
    let leader = cluster.node(cluster.leader().await);
    let nodes = cluster.running();
    let follower = nodes
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
    for node in &cluster.running() {
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
    for node in &cluster.running() {
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
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let caller = SigningKey::generate().expect("a key").address();
    let leader = cluster.node(cluster.leader().await);
    for i in 0..20 {
        leader
            .propose(register(&format!("early{i}.mcom")), caller)
            .await
            .expect("committed");
    }

    // A node that nobody admitted: its proposals are refused, and it learns why.
    let index = cluster.add(key()).await;
    let newcomer = cluster.node(index);
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
    let cluster = Cluster::start(3, fast_settings()).await;
    let leader = cluster.node(cluster.leader().await);
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
        proof: None,
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
    let voter = &cluster.node(0);
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
    let running = cluster.running();
    let target = running
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_client_signature_fails_is_a_no_op_on_every_replica() {
    let cluster = Cluster::start(3, fast_settings()).await;
    let leader = cluster.leader().await;
    let proposer = (leader + 1) % 3;
    let victim = SigningKey::generate().expect("a key");
    let liar = SigningKey::generate().expect("a key");
    // An admitted node claims the victim asked for a name, with a request the liar signed.
    let request = cmesh_common::jcs::signing_bytes(&serde_json::json!({
        "jsonrpc": "2.0", "method": "registrar.register", "id": "0x01", "nonce": 1,
        "params": {"name": "forged.mcom", "target": "I:whoami"},
    }));
    let proof = cmesh_common::rpc::RequestProof {
        signature: liar.sign_personal(&request),
        request,
    };
    let body = |command: Command, proof: Option<cmesh_common::rpc::RequestProof>| EntryBody {
        mesh: cluster.genesis.mesh_id(),
        command,
        caller: victim.address(),
        time_ms: unix_millis(),
        id: proof
            .as_ref()
            .map_or_else(|| EntryId::random().expect("random"), EntryId::of_proof),
        proof,
    };
    let entry = cmesh_consensus::SignedEntry::sign(
        vec![
            body(register("forged.mcom"), Some(proof)),
            body(register("honest.mcom"), None),
        ],
        &cluster.slots[proposer].key,
    );
    let results = cluster.node(proposer).submit(entry).await.expect("committed");
    assert!(
        matches!(
            &results[..],
            [
                Applied::Ignored(EntryFault::ClientProof { .. }),
                Applied::Done(Outcome::Name { .. })
            ]
        ),
        "{results:?}"
    );
    cluster.converged().await;
    let snapshots: Vec<Vec<u8>> = cluster
        .running()
        .iter()
        .map(|node| {
            assert_eq!(names(node), ["honest.mcom"], "replica of {}", node.address());
            node.replica().registry.snapshot()
        })
        .collect();
    assert!(snapshots.windows(2).all(|w| w[0] == w[1]), "the replicas agree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holds_no_replica_and_asks_the_replicas() {
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let caller = SigningKey::generate().expect("a key").address();
    let leader = cluster.node(cluster.leader().await);
    let admin = cluster.admin.address();
    leader
        .propose(register("before.mcom"), caller)
        .await
        .expect("committed");

    // A stranger holds no replica, and the replicas refuse to answer it.
    let stranger = cluster.add(key()).await;
    let stranger = cluster.node(stranger);
    assert!(!stranger.is_replica());
    let refused = stranger
        .query(
            Consistency::Linearizable,
            Query::Resolve {
                name: "before.mcom".into(),
            },
        )
        .await
        .expect_err("a stranger is answered nothing");
    assert!(refused.to_string().contains("not admitted"), "{refused}");

    // Admitted as a member: not added to Raft, yet it reads, writes and knows whom to trust.
    let member = cluster.add_member(&leader).await;
    let member = cluster.node(member);
    grant(&leader, admin, caller, "team=blue").await;
    // Its view is asked again every `member_refresh`: the grant may come a refresh later.
    eventually("the member to learn its role and the grant", EVENTUALLY, || async {
        let role = member.status().await.role;
        (role == Some(Role::Member) && member.attributes(&caller) == ["team=blue"]).then_some(())
    })
    .await;
    assert!(!member.is_replica());

    let written = member
        .propose(register("via-member.mcom"), caller)
        .await
        .expect("committed");
    assert!(matches!(written, Applied::Done(Outcome::Name { .. })), "{written:?}");
    for consistency in [Consistency::Linearizable, Consistency::Local] {
        let (answer, _) = member
            .query(
                consistency,
                Query::Resolve {
                    name: "before.mcom".into(),
                },
            )
            .await
            .expect("a replica answers");
        assert!(
            matches!(answer, Answer::Record(Ok(ref r)) if r.owner == caller),
            "{answer:?}"
        );
    }
    let (answer, _) = member
        .query(
            Consistency::Linearizable,
            Query::Resolve {
                name: "via-member.mcom".into(),
            },
        )
        .await
        .expect("a replica answers");
    assert!(
        matches!(answer, Answer::Record(Ok(_))),
        "its own write, read back at once: {answer:?}"
    );
    let status = leader.status().await;
    assert!(
        !status.learners.contains(&member.address()) && !status.voters.contains(&member.address()),
        "a member is no Raft node: {status:?}"
    );
    assert!(names(&member).is_empty(), "and holds no names itself");

    // Removed: the member hears it from the replicas, and its writes no longer commit.
    let mut admitted = member.watch_nodes();
    let remove = Command::Remove { node: member.address() };
    assert!(matches!(
        leader.propose(remove, admin).await.expect("committed"),
        Applied::Done(_)
    ));
    within(
        "the member to learn of its removal",
        EVENTUALLY,
        admitted.wait_for(|nodes| !nodes.contains_key(&member.address())),
    )
    .await
    .expect("the watch");
    let after = member.propose(register("after.mcom"), caller).await;
    assert!(after.is_err(), "a removed member's write must not commit: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_refuses_entries_dated_far_ahead_of_its_clock() {
    let cluster = Cluster::start(3, fast_settings()).await;
    let leader_index = cluster.leader().await;
    let leader = cluster.node(leader_index);
    let mesh = cluster.genesis.mesh_id();
    // An admitted voter whose clock runs an hour fast would push the registry's clock
    // ahead, and every other node's entries would then be stale.
    let fast = &cluster.slots[(leader_index + 1) % 3].key;
    let client = async_nats::connect(cluster.nats.url()).await.expect("connect");
    let requester = Requester::start(client, fast.clone(), mesh).await.expect("inbox");
    let body = |ahead_ms: u64, name: &str| EntryBody {
        mesh,
        command: register(name),
        caller: cluster.admin.address(),
        time_ms: unix_millis() + ahead_ms,
        id: EntryId::random().expect("random"),
        proof: None,
    };
    let ahead = cmesh_consensus::SignedEntry::sign(vec![body(3_600_000, "future.mcom")], fast);
    let reply = requester
        .call(leader.address(), Rpc::Propose(ahead), Duration::from_secs(5))
        .await
        .expect("an answer");
    match reply {
        RpcReply::Refused(reason) => assert!(reason.contains("ahead of the leader's clock"), "{reason}"),
        other => panic!("an entry an hour ahead must be refused: {other:?}"),
    }
    // A little skew is fine.
    let near = cmesh_consensus::SignedEntry::sign(vec![body(2_000, "near.mcom")], fast);
    let reply = requester
        .call(leader.address(), Rpc::Propose(near), Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(matches!(reply, RpcReply::Propose(Ok(_))), "{reply:?}");
    cluster.converged().await;
    assert_eq!(names(&leader), ["near.mcom"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_made_by_anyone_but_the_claimed_sender_is_ignored() {
    let cluster = Cluster::start(3, fast_settings()).await;
    let leader_index = cluster.leader().await;
    let leader = cluster.node(leader_index);
    // Traffic first, so that the voters use MACs between them.
    leader
        .propose(register("first.mcom"), Address::from(1))
        .await
        .expect("committed");
    let term = leader.status().await.term;
    let mesh = cluster.genesis.mesh_id();
    let voter = cluster.slots[(leader_index + 1) % 3].key.address();
    let leader_public = cluster.slots[leader_index].key.public_key();

    // A stranger who knows the leader's public key (anyone who saw it sign) derives the
    // key it shares with the leader, and MACs a vote request that claims to be a voter's.
    let stranger = SigningKey::generate().expect("a key");
    let stranger_keys = PeerKeys::new(stranger.clone(), mesh);
    stranger_keys.learn(leader.address(), &leader_public);
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term + 100, voter), None);
    let mut forged = RequestBody::new(mesh, &stranger, leader.address(), Rpc::Vote(vote));
    forged.from = voter;
    let (bytes, _, with_mac) = forged.seal_for(&stranger_keys).expect("sealed");
    assert!(with_mac);
    let client = async_nats::connect(cluster.nats.url()).await.expect("connect");
    let answer = tokio::time::timeout(
        Duration::from_millis(500),
        client.request(node_subject(&mesh, &leader.address()), bytes.into()),
    )
    .await;
    assert!(answer.is_err(), "a forged MAC gets no answer: {answer:?}");
    assert_eq!(leader.status().await.term, term, "and moves nothing");
    let after = leader
        .propose(register("after.mcom"), Address::from(1))
        .await
        .expect("committed");
    assert!(matches!(after, Applied::Done(_)), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lying_voter_cannot_feed_a_member_a_false_view() {
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let leader_index = cluster.leader().await;
    let leader = cluster.node(leader_index);
    let admin = cluster.admin.address();
    let caller = SigningKey::generate().expect("a key").address();
    let member_index = cluster.add_member(&leader).await;
    let member = cluster.node(member_index);
    eventually("the member to learn its role", EVENTUALLY, || async {
        (member.status().await.role == Some(Role::Member)).then_some(())
    })
    .await;

    // A voter other than the leader turns liar: its node stops, and its key answers every
    // query, correctly signed (or MAC'd), with a view that makes a stranger a mesh admin.
    let liar_index = (leader_index + 1) % 3;
    cluster.kill(liar_index).await;
    let liar = cluster.slots[liar_index].key.clone();
    let stranger = SigningKey::generate().expect("a key").address();
    let forged = {
        let mut trust = match Query::Trust.run(&leader.replica().registry) {
            Answer::Trust(trust) => trust,
            other => panic!("{other:?}"),
        };
        trust.attributes.insert(stranger, vec!["role=admin".to_string()]);
        trust
    };
    let (lies, told) = lie_as(&cluster, liar, forged).await;

    // The two honest voters agree: a grant made now reaches the member, the lie never does,
    // and the member's writes still go to the real leader.
    grant(&leader, admin, caller, "team=blue").await;
    eventually(
        "the member to hold the honest grant, having heard the liar",
        EVENTUALLY,
        || async {
            let heard = told.load(std::sync::atomic::Ordering::Relaxed) > 0;
            (heard && member.attributes(&caller) == ["team=blue"]).then_some(())
        },
    )
    .await;
    assert!(member.attributes(&stranger).is_empty(), "the liar's view was taken");
    let written = member
        .propose(register("honest.mcom"), caller)
        .await
        .expect("committed");
    assert!(matches!(written, Applied::Done(_)), "{written:?}");
    lies.abort();
}

/// Answers every query to `liar`'s subject, correctly signed or MAC'd to any node of the
/// cluster, with `forged`, and counts them (Raft's own messages get no answer).
async fn lie_as(
    cluster: &Cluster,
    liar: SigningKey,
    forged: cmesh_consensus::Trust,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let mesh = cluster.genesis.mesh_id();
    let keys = PeerKeys::new(liar.clone(), mesh);
    for slot in &cluster.slots {
        keys.learn(slot.key.address(), &slot.key.public_key());
    }
    let client = async_nats::connect(cluster.nats.url()).await.expect("connect");
    let mut asked = client
        .subscribe(node_subject(&mesh, &liar.address()))
        .await
        .expect("subscribe");
    let told = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lies = tokio::spawn({
        let liar = liar.address();
        let told = told.clone();
        async move {
            while let Some(message) = asked.next().await {
                let Some(reply_to) = message.reply else { continue };
                let Ok((request, digest, proven)) = RequestBody::open_with(&message.payload, &keys) else {
                    continue;
                };
                if !matches!(request.rpc, Rpc::Query { .. }) {
                    continue;
                }
                let reply = ReplyBody {
                    request: digest,
                    from: liar,
                    reply: RpcReply::Query(Ok(cmesh_consensus::query::Answered {
                        answer: Answer::Trust(forged.clone()),
                        info: cmesh_consensus::ReadInfo {
                            applied: Some(1_000_000),
                            stale: false,
                        },
                        leader: Some(liar),
                    })),
                };
                if let Ok(bytes) = reply.seal_for(&keys, &request.from, proven.is_mac()) {
                    if client.publish(reply_to, bytes.into()).await.is_ok() {
                        told.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    });
    (lies, told)
}

/// A replica without a leader asks the voters about a Raft peer its registry does not
/// know (it may lag behind an admission): one lying voter's word that a stranger is a
/// voter is not enough, and the stranger's vote requests and appends still count for
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lying_voter_cannot_vouch_a_stranger_into_raft() {
    let mut cluster = Cluster::start(3, fast_settings()).await;
    let leader_index = cluster.leader().await;
    let (liar_index, target_index) = ((leader_index + 1) % 3, (leader_index + 2) % 3);
    let target = cluster.node(target_index);
    // The target loses its leader (so it asks), and one of the voters it asks lies.
    cluster.kill(leader_index).await;
    cluster.kill(liar_index).await;
    let liar = cluster.slots[liar_index].key.clone();
    let stranger = SigningKey::generate().expect("a key");
    let forged = {
        let mut trust = match Query::Trust.run(&target.replica().registry) {
            Answer::Trust(trust) => trust,
            other => panic!("{other:?}"),
        };
        trust.nodes.insert(stranger.address(), Role::Voter);
        trust
    };
    let (lies, told) = lie_as(&cluster, liar, forged).await;

    let mesh = cluster.genesis.mesh_id();
    let client = async_nats::connect(cluster.nats.url()).await.expect("connect");
    let requester = Requester::start(client, stranger.clone(), mesh)
        .await
        .expect("a requester");
    let term = target.status().await.term;
    let vote = || {
        let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term + 100, stranger.address()), None);
        requester.call(target.address(), Rpc::Vote(vote), Duration::from_secs(5))
    };
    // Asked again after each refusal, so that the target asks the voters more than once.
    eventually("the target to ask the liar about the stranger", EVENTUALLY, || async {
        match vote().await {
            Ok(RpcReply::Refused(_)) => {}
            other => panic!("a stranger's vote must be refused: {other:?}"),
        }
        (told.load(std::sync::atomic::Ordering::Relaxed) > 1).then_some(())
    })
    .await;
    assert!(
        matches!(vote().await, Ok(RpcReply::Refused(_))),
        "one voter's word made a stranger a Raft peer"
    );
    let append = openraft::raft::AppendEntriesRequest {
        vote: openraft::Vote::new_committed(term + 100, stranger.address()),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let appended = requester
        .call(target.address(), Rpc::Append(append), Duration::from_secs(5))
        .await;
    assert!(
        matches!(appended, Ok(RpcReply::Refused(_))),
        "a stranger's append must be refused: {appended:?}"
    );
    assert!(
        target.status().await.term < term + 100,
        "a stranger's vote request moved the term"
    );
    lies.abort();
}

/// Has `admin` grant `attribute` to `address` through `node`; it must apply.
async fn grant(node: &cmesh_consensus::ConsensusNode, admin: Address, address: Address, attribute: &str) {
    let grant = Command::Grant {
        address,
        attribute: attribute.into(),
    };
    let applied = node.propose(grant, admin).await.expect("committed");
    assert!(matches!(applied, Applied::Done(_)), "{applied:?}");
}
