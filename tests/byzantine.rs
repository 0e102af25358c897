//! A Byzantine member. Three honest nodes replicate a context; a fourth member, invited
//! like any other but not a running node, is played by this test: it publishes crafted
//! transactions straight on `cmesh.ctx.<context>.txs` with a plain NATS client. The DAG's
//! rules (docs/REPLICATION.md) must hold against it, not only against honest peers:
//! forged signatures, outsiders, transactions of another context, floods of orphans,
//! equivocation and garbage bytes are refused or absorbed, and the honest nodes still
//! agree on one root and keep serving writes.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cmesh_common::{Address, SigningKey};
use cmesh_events::EventEnvelope;
use cmesh_replication::wire::{self, TxBatch};
use cmesh_state::tx::{Limits, Op, Transaction, TxBody, TX_FORMAT};
use cmesh_state::Id;
use cmesh_testkit::*;
use serde_json::{json, Value};

/// Generous: debug builds, a shared machine.
const CONVERGE: Duration = Duration::from_secs(30);
/// Longest a single honest write may take while the Byzantine member floods.
const WRITE_UNDER_FLOOD: Duration = Duration::from_secs(20);
/// Genesis, three invitations (nodes 1 and 2, the Byzantine key) and its writer grant.
const SETUP_TXS: u64 = 5;
const HONEST: [usize; 3] = [0, 1, 2];

/// Three honest nodes, all members of `context`, and the admin logged in on each.
struct Members {
    mesh: Mesh,
    admin: SigningKey,
    tokens: Vec<String>,
    context: String,
    context_id: Id,
}

impl Members {
    fn token(&self, i: usize) -> Option<&str> {
        Some(self.tokens[i].as_str())
    }

    fn node(&self, i: usize) -> Address {
        self.mesh.node(i).address()
    }

    async fn call(&self, i: usize, method: &str, params: Value) -> Value {
        self.mesh.client.call(self.node(i), method, params, self.token(i)).await
    }

    /// `set key value` through node `i`; answers the transaction id.
    async fn set(&self, i: usize, key: &str, value: Value) -> Id {
        let params = json!({"context": self.context, "method": "set", "args": [key, value]});
        let reply = self.call(i, "ctx.call", params).await;
        parse_id(&reply["tx"])
    }

    async fn get(&self, i: usize, key: &str) -> Value {
        let params = json!({"context": self.context, "method": "get", "args": [key]});
        self.call(i, "ctx.view", params).await["result"].clone()
    }

    async fn root_of(&self, i: usize, context: &str) -> Value {
        self.call(i, "ctx.root", json!({"context": context})).await
    }

    async fn root(&self, i: usize) -> Value {
        self.root_of(i, &self.context).await
    }

    /// The heads of `context` on node `i`, to use as parents.
    async fn heads_of(&self, i: usize, context: &str) -> Vec<Id> {
        let root = self.root_of(i, context).await;
        let mut heads: Vec<Id> = root["heads"].as_array().expect("heads").iter().map(parse_id).collect();
        heads.sort();
        heads
    }

    async fn heads(&self) -> Vec<Id> {
        self.heads_of(0, &self.context).await
    }

    async fn status(&self, i: usize) -> Value {
        self.call(i, "ctx.status", json!({"context": self.context})).await
    }

    /// A counter of `ctx.status` (`invalid`, `dropped`, `waiting`) on node `i`.
    async fn counter(&self, i: usize, name: &str) -> u64 {
        let status = self.status(i).await;
        status[name]
            .as_u64()
            .unwrap_or_else(|| panic!("ctx.status without `{name}`: {status}"))
    }

    async fn counters(&self, name: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for i in HONEST {
            out.push(self.counter(i, name).await);
        }
        out
    }

    /// Waits until every honest node's `name` counter is `want[i]`.
    async fn counters_reach(&self, name: &str, want: &[u64]) {
        eventually(&format!("ctx.status `{name}` to reach {want:?}"), CONVERGE, || async {
            (self.counters(name).await == want).then_some(())
        })
        .await
    }

    /// Joins node `i` (already invited) and waits until it is in sync.
    async fn join(&self, i: usize) {
        let joined = self.call(i, "ctx.join", json!({"context": self.context})).await;
        assert_eq!(joined["phase"], json!("joining"), "{joined}");
        eventually(&format!("node {i} to be in sync"), CONVERGE, || async {
            let status = self.status(i).await;
            (status["phase"] == json!("in-sync")).then_some(())
        })
        .await
    }

    /// Waits until every honest node holds `applied` transactions and they agree on
    /// heads and root; answers the `ctx.root` they agree on.
    async fn converged(&self, applied: u64) -> Value {
        self.converged_on(&HONEST, applied).await
    }

    /// [`Members::converged`] for some of the nodes.
    async fn converged_on(&self, nodes: &[usize], applied: u64) -> Value {
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

    /// The honest nodes are still fine: a write through each succeeds, and they converge
    /// on `applied` plus those three. Answers the new count.
    async fn still_serving(&self, applied: u64) -> u64 {
        for i in HONEST {
            let started = Instant::now();
            within(
                &format!("a write through node {i}"),
                WRITE_UNDER_FLOOD,
                self.set(i, &format!("after-{i}"), json!(applied)),
            )
            .await;
            eprintln!("a write through node {i} took {:?}", started.elapsed());
        }
        self.converged(applied + 3).await;
        for i in HONEST {
            for j in HONEST {
                assert_eq!(
                    self.get(i, &format!("after-{j}")).await,
                    json!(applied),
                    "node {i} sees node {j}'s write"
                );
            }
        }
        applied + 3
    }

    /// Publishes raw bytes on `context`'s transaction subject, as any NATS client can,
    /// and waits until the server has them.
    async fn publish_raw(&self, context: &Id, payload: Vec<u8>) {
        self.mesh
            .client
            .nats
            .publish(wire::txs_subject(context), payload.into())
            .await
            .expect("publish on the txs subject");
        self.mesh.client.sync().await;
    }

    /// Publishes `txs` as one batch on `context`'s transaction subject.
    async fn publish(&self, context: &Id, txs: &[Transaction]) {
        self.publish_raw(context, batch(txs)).await;
    }
}

/// The Byzantine member: a key invited into the context and granted the writer role,
/// whose transactions this test makes by hand.
struct Byzantine {
    key: SigningKey,
    /// Its last `seq` per context.
    seqs: HashMap<Id, u64>,
}

impl Byzantine {
    fn address(&self) -> Address {
        self.key.address()
    }

    /// A well-formed body of the next `seq` in `context`, on its own behalf.
    fn body(&mut self, context: Id, parents: Vec<Id>, op: Op) -> TxBody {
        let seq = self.seqs.entry(context).or_insert(0);
        *seq += 1;
        body(&self.key, *seq, context, parents, op)
    }

    fn sign(&self, body: TxBody) -> (Transaction, Id) {
        body.sign(&self.key).expect("sign")
    }
}

fn body(author: &SigningKey, seq: u64, context: Id, parents: Vec<Id>, op: Op) -> TxBody {
    TxBody {
        format: TX_FORMAT,
        context,
        author: author.address(),
        seq,
        parents,
        time_ms: unix_ms(),
        caller: author.address(),
        caller_proof: None,
        op,
    }
}

/// `set key value` as an op.
fn set_op(key: &str, value: Value) -> Op {
    Op::Call {
        method: "set".into(),
        args: serde_json::to_vec(&json!([key, value])).expect("args"),
    }
}

fn batch(txs: &[Transaction]) -> Vec<u8> {
    let txs = txs
        .iter()
        .map(|tx| tx.encode().expect("encode a transaction").into())
        .collect();
    rmp_serde::to_vec(&TxBatch { txs }).expect("encode a batch")
}

fn parse_id(value: &Value) -> Id {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an id: {value}"))
}

fn random_id() -> Id {
    Id::random().expect("random id")
}

/// Three honest nodes in one context (kv deployed on node 0, nodes 1 and 2 invited and
/// joined) and the Byzantine member, invited and granted the writer role.
async fn byzantine_members() -> (Members, Byzantine) {
    let admin = new_key();
    let mesh = Mesh::with(MeshOptions::new(3).admin(admin.address())).await;
    let mut tokens = Vec::new();
    for i in HONEST {
        tokens.push(mesh.client.login(&admin, mesh.node(i).address()).await);
    }
    let node0 = mesh.node(0).address();
    deploy(&mesh.client, node0, Some(&tokens[0]), "kv", "1.0.0").await;
    let context = create(&mesh.client, node0, Some(&tokens[0]), "kv").await;
    let context_id = context.parse().expect("a context id");
    let m = Members {
        mesh,
        admin,
        tokens,
        context,
        context_id,
    };
    let byzantine = Byzantine {
        key: new_key(),
        seqs: HashMap::new(),
    };
    for member in [m.node(1), m.node(2), byzantine.address()] {
        m.call(0, "ctx.invite", json!({"context": m.context, "member": member}))
            .await;
    }
    grant(&m.mesh.client, node0, m.token(0), &m.context, &byzantine.key, "writer").await;
    m.join(1).await;
    m.join(2).await;
    m.converged(SETUP_TXS).await;
    assert_eq!(m.counters("invalid").await, vec![0, 0, 0], "nothing refused yet");
    (m, byzantine)
}

/// Reads `state.invalid` events until each of `nodes` has published events whose
/// refused transactions (`data.transactions`, all events of that node together) satisfy
/// `done`. Answers them per node.
async fn invalid_events(
    sub: &mut async_nats::Subscriber,
    nodes: &[Address],
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> HashMap<Address, Vec<Value>> {
    let mut seen: HashMap<Address, Vec<Value>> = HashMap::new();
    within(&format!("state.invalid events: {what}"), CONVERGE, async {
        while !nodes.iter().all(|n| seen.get(n).is_some_and(|txs| done(txs))) {
            let message = next_message(sub, what).await;
            let envelope: EventEnvelope = serde_json::from_slice(&message.payload).expect("an event envelope");
            assert_eq!(
                (envelope.service.as_str(), envelope.kind.as_str()),
                ("state", "invalid")
            );
            let txs = envelope.data["transactions"].as_array().cloned().unwrap_or_default();
            seen.entry(envelope.node).or_default().extend(txs);
        }
    })
    .await;
    seen
}

/// Whether refused-transaction entries name every id in `ids`.
fn names_all(entries: &[Value], ids: &[Id]) -> bool {
    ids.iter()
        .all(|id| entries.iter().any(|e| e["tx"] == json!(id.to_string())))
}

fn addresses(m: &Members) -> Vec<Address> {
    HONEST.iter().map(|&i| m.node(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signatures_are_refused_and_reported() {
    let (m, mut byzantine) = byzantine_members().await;
    let mut events = m.mesh.client.subscribe("cmesh.events.state.invalid").await;
    let parents = m.heads().await;

    // A valid body signed by another key (claiming the Byzantine member as author).
    let forger = new_key();
    let genuine = byzantine.body(m.context_id, parents.clone(), set_op("forged", json!("by another key")));
    let (by_other, forged_id) = genuine.clone().sign(&forger).expect("sign");
    assert_eq!(by_other.body.author, byzantine.address());
    // The Byzantine member's own signature with flipped bytes.
    let flipped_body = byzantine.body(m.context_id, parents.clone(), set_op("forged", json!("flipped")));
    let (mut flipped, flipped_id) = byzantine.sign(flipped_body);
    for byte in &mut flipped.signature.0[..4] {
        *byte ^= 0xff;
    }
    m.publish(&m.context_id, &[by_other, flipped]).await;

    m.counters_reach("invalid", &[2, 2, 2]).await;
    let seen = invalid_events(&mut events, &addresses(&m), "both forgeries", |txs| {
        names_all(txs, &[forged_id, flipped_id])
    })
    .await;
    for (node, txs) in &seen {
        for tx in txs {
            let reason = tx["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("signature") || reason.contains("signed by"),
                "node {node}: {tx}"
            );
        }
    }
    let root = m.converged(SETUP_TXS).await;
    let heads: Vec<Id> = root["heads"].as_array().expect("heads").iter().map(parse_id).collect();
    assert!(!heads.contains(&forged_id) && !heads.contains(&flipped_id), "{root}");

    // A forgery does not taint its body's id: the genuine transaction is still taken.
    let (signed, id) = byzantine.sign(genuine);
    assert_eq!(id, forged_id, "the id covers the body only");
    m.publish(&m.context_id, &[signed]).await;
    let root = m.converged(SETUP_TXS + 1).await;
    assert_eq!(root["heads"], json!([forged_id.to_string()]), "{root}");
    for i in HONEST {
        assert_eq!(m.get(i, "forged").await, json!("by another key"), "node {i}");
    }
    assert_eq!(m.counters("invalid").await, vec![2, 2, 2]);
    m.still_serving(SETUP_TXS + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_is_refused_by_every_node() {
    let (m, _byzantine) = byzantine_members().await;
    let mut events = m.mesh.client.subscribe("cmesh.events.state.invalid").await;
    let outsider = new_key();
    let parents = m.heads().await;
    let (tx, id) = body(&outsider, 1, m.context_id, parents, set_op("outsider", json!(1)))
        .sign(&outsider)
        .expect("sign");
    m.publish(&m.context_id, &[tx]).await;

    // Each node looked at it (and refused it) before the absence below means anything.
    m.counters_reach("invalid", &[1, 1, 1]).await;
    let seen = invalid_events(&mut events, &addresses(&m), "the outsider's transaction", |txs| {
        names_all(txs, &[id])
    })
    .await;
    for (node, txs) in &seen {
        let reason = txs[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("not a member"), "node {node}: {txs:?}");
    }
    let root = m.converged(SETUP_TXS).await;
    assert!(!root["heads"].to_string().contains(&id.to_string()), "{root}");
    for i in HONEST {
        assert_eq!(m.get(i, "outsider").await, Value::Null, "node {i}");
    }
    m.still_serving(SETUP_TXS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_another_context_is_refused() {
    let (m, mut byzantine) = byzantine_members().await;
    let node0 = m.node(0);
    // Context B, on node 0 only, where the Byzantine member is a writer too: its
    // transaction is valid there.
    let other = create(&m.mesh.client, node0, m.token(0), "kv").await;
    let other_id: Id = other.parse().expect("a context id");
    m.call(
        0,
        "ctx.invite",
        json!({"context": other, "member": byzantine.address()}),
    )
    .await;
    grant(&m.mesh.client, node0, m.token(0), &other, &byzantine.key, "writer").await;
    let other_before = m.root_of(0, &other).await;
    assert_eq!(other_before["applied"], json!(3), "{other_before}");
    let before = m.converged(SETUP_TXS).await;

    let mut events = m.mesh.client.subscribe("cmesh.events.state.invalid").await;
    let parents = m.heads_of(0, &other).await;
    let of_b = byzantine.body(other_id, parents, set_op("replayed", json!("from B")));
    let (of_b, of_b_id) = byzantine.sign(of_b);
    // And a genesis, whose context is its own id: never the subject's.
    let genesis = TxBody {
        parents: Vec::new(),
        context: Id::ZERO,
        op: Op::Create {
            app: app_id("kv").parse().expect("app id"),
            name: "kv".into(),
            version: "1.0.0".into(),
            salt: random_id(),
            limits: Limits {
                gas: 1_000_000,
                memory_bytes: 1 << 24,
            },
        },
        ..byzantine.body(Id::ZERO, Vec::new(), Op::Leave)
    };
    let (genesis, genesis_id) = byzantine.sign(genesis);
    m.publish(&m.context_id, &[of_b.clone(), genesis]).await;

    m.counters_reach("invalid", &[2, 2, 2]).await;
    let seen = invalid_events(&mut events, &addresses(&m), "the misrouted transactions", |txs| {
        names_all(txs, &[of_b_id, genesis_id])
    })
    .await;
    for (node, txs) in &seen {
        for tx in txs {
            let reason = tx["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("belongs to context"), "node {node}: {tx}");
        }
    }
    let after = m.converged(SETUP_TXS).await;
    assert_eq!(after, before, "context A is unaffected");
    assert_eq!(m.root_of(0, &other).await, other_before, "nor is B, from A's subject");
    for i in HONEST {
        assert_eq!(m.get(i, "replayed").await, Value::Null, "node {i}");
    }

    // The refusal was about the subject: on B's own subject, node 0 takes it.
    m.publish(&other_id, &[of_b]).await;
    eventually("node 0 to apply B's transaction on B's subject", CONVERGE, || async {
        let root = m.root_of(0, &other).await;
        (root["heads"] == json!([of_b_id.to_string()]) && root["applied"] == json!(4)).then_some(())
    })
    .await;
    m.still_serving(SETUP_TXS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_parent_flood_is_bounded() {
    const FLOOD: u64 = 2_000;
    const PER_BATCH: usize = 50;
    let (m, mut byzantine) = byzantine_members().await;
    let context = m.context_id;
    let started = Instant::now();
    let flood: Vec<Transaction> = (0..FLOOD)
        .map(|n| {
            let body = byzantine.body(context, vec![random_id()], set_op("flood", json!(n)));
            byzantine.sign(body).0
        })
        .collect();
    eprintln!("signed {FLOOD} transactions in {:?}", started.elapsed());
    let payloads: Vec<Vec<u8>> = flood.chunks(PER_BATCH).map(batch).collect();
    let nats = m.mesh.client.nats.clone();
    let subject = wire::txs_subject(&context);
    let publishing = tokio::spawn(async move {
        for payload in payloads {
            nats.publish(subject.clone(), payload.into()).await.expect("publish");
        }
        nats.flush().await.expect("flush");
    });

    // While the nodes work through it: honest writes go through, and the waiting
    // buffer stays within its bound.
    let mut applied = SETUP_TXS;
    for i in HONEST {
        let started = Instant::now();
        within(
            &format!("a write through node {i} during the flood"),
            WRITE_UNDER_FLOOD,
            m.set(i, &format!("during-{i}"), json!(i)),
        )
        .await;
        eprintln!("a write through node {i} during the flood took {:?}", started.elapsed());
        applied += 1;
        for j in HONEST {
            let waiting = m.counter(j, "waiting").await;
            assert!(
                waiting <= 1_024,
                "node {j} holds {waiting} waiting transactions of one author"
            );
        }
    }
    publishing.await.expect("the flood was published");

    // Every one of them ends up dropped (none had parents anybody holds), none waits
    // forever, none counts as invalid (an orphan is not a rule breaker).
    eventually("every node to have dropped the whole flood", CONVERGE, || async {
        let mut all = Vec::new();
        for i in HONEST {
            let status = m.status(i).await;
            let waiting = status["waiting"].as_u64().unwrap_or(u64::MAX);
            assert!(waiting <= 1_024, "node {i}: {status}");
            all.push((status["dropped"].clone(), status["waiting"].clone()));
        }
        all.iter().all(|s| *s == (json!(FLOOD), json!(0))).then_some(())
    })
    .await;
    assert_eq!(m.counters("invalid").await, vec![0, 0, 0]);
    let root = m.converged(applied).await;
    let heads: BTreeSet<Id> = root["heads"].as_array().expect("heads").iter().map(parse_id).collect();
    assert!(
        flood.iter().all(|tx| !heads.contains(&tx.body.id().expect("id"))),
        "{root}"
    );
    for i in HONEST {
        assert_eq!(m.get(i, "flood").await, Value::Null, "node {i}");
    }
    m.still_serving(applied).await;
    eprintln!("the flood test took {:?} after setup", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_is_kept_without_a_fork() {
    let (m, mut byzantine) = byzantine_members().await;
    let parents = m.heads().await;
    let first = byzantine.body(m.context_id, parents.clone(), set_op("twin", json!("first")));
    let mut second = first.clone();
    second.op = set_op("twin", json!("second"));
    assert_eq!(
        (first.seq, &first.parents),
        (second.seq, &second.parents),
        "same seq, same parents"
    );
    let (first, first_id) = byzantine.sign(first);
    let (second, second_id) = byzantine.sign(second);
    assert_ne!(first_id, second_id);
    // Separately, as an equivocator would send them to different audiences.
    m.publish(&m.context_id, &[first]).await;
    m.publish(&m.context_id, &[second]).await;

    let root = m.converged(SETUP_TXS + 2).await;
    let heads: BTreeSet<Id> = root["heads"].as_array().expect("heads").iter().map(parse_id).collect();
    assert_eq!(
        heads,
        BTreeSet::from([first_id, second_id]),
        "both twins are heads: {root}"
    );
    let twin = m.get(0, "twin").await;
    // (height, id) order: the twin with the larger id is applied last and wins.
    let last = if first_id > second_id { "first" } else { "second" };
    assert_eq!(twin, json!(last), "the later twin in (height, id) order wins");
    for i in HONEST {
        assert_eq!(m.get(i, "twin").await, twin, "node {i}");
    }
    assert_eq!(
        m.counters("invalid").await,
        vec![0, 0, 0],
        "equivocation is not invalid"
    );

    // A later write merges them.
    let merge = m.set(1, "merge", json!(true)).await;
    let root = m.converged(SETUP_TXS + 3).await;
    assert_eq!(root["heads"], json!([merge.to_string()]), "{root}");
    m.still_serving(SETUP_TXS + 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_payloads_are_ignored_and_counted() {
    let (m, _byzantine) = byzantine_members().await;
    let context = m.context_id;
    let mut events = m.mesh.client.subscribe("cmesh.events.state.invalid").await;
    let max_payload = m.mesh.client.nats.server_info().max_payload;
    assert!(max_payload >= 256 * 1024, "the server's max_payload: {max_payload}");
    // Room for the NATS framing; still far beyond any honest batch of small writes.
    let large = max_payload - 4 * 1024;
    // 0xc1 is never used in MessagePack: nothing starting with it decodes.
    let garbage = |len: usize| -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
        bytes[0] = 0xc1;
        bytes
    };
    let whole = {
        let parents = m.heads().await;
        let key = new_key();
        let (tx, _) = body(&key, 1, context, parents, set_op("x", json!(1)))
            .sign(&key)
            .expect("sign");
        batch(&[tx])
    };
    let cut = whole[..whole.len() / 2].to_vec();
    let bad_entries = |entries: Vec<Vec<u8>>| -> Vec<u8> {
        let txs = entries.into_iter().map(Into::into).collect();
        rmp_serde::to_vec(&TxBatch { txs }).expect("encode a batch")
    };

    // Malformed batches: one refusal each.
    m.publish_raw(&context, garbage(64)).await;
    m.publish_raw(&context, cut).await;
    m.publish_raw(&context, garbage(large)).await;
    m.counters_reach("invalid", &[3, 3, 3]).await;
    // Batches that decode, with entries that are not transactions: one refusal each.
    m.publish_raw(&context, bad_entries(vec![garbage(1), garbage(100), Vec::new()]))
        .await;
    m.publish_raw(&context, bad_entries(vec![garbage(large - 64)])).await;
    m.counters_reach("invalid", &[7, 7, 7]).await;

    invalid_events(&mut events, &addresses(&m), "the malformed batches", |txs| {
        txs.iter()
            .filter(|t| t["reason"].as_str().is_some_and(|r| r.contains("malformed batch")))
            .count()
            >= 3
            && txs.len() >= 7
    })
    .await;
    for i in HONEST {
        m.mesh.client.assert_alive(m.node(i)).await;
    }
    m.converged(SETUP_TXS).await;
    m.still_serving(SETUP_TXS).await;
    assert_eq!(m.counters("invalid").await, vec![7, 7, 7]);
}

/// An equivocation one node saw only half of: it holds the first twin when the second
/// one, and a later write on top of it, reach the others. Catching up by seq cannot see
/// the second twin (its seq is one the node holds); asking for the heads and their
/// missing parents must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_saw_one_twin_catches_up_the_other() {
    let (mut m, mut byzantine) = byzantine_members().await;
    let parents = m.heads().await;
    let first = byzantine.body(m.context_id, parents, set_op("twin", json!("first")));
    let mut second = first.clone();
    second.op = set_op("twin", json!("second"));
    let (first, first_id) = byzantine.sign(first);
    let (second, second_id) = byzantine.sign(second);
    assert_ne!(first_id, second_id);
    m.publish(&m.context_id, &[first]).await;
    let root = m.converged(SETUP_TXS + 1).await;
    assert_eq!(root["heads"], json!([first_id.to_string()]), "{root}");

    // Node 2 is away while the second twin and a write merging both go round.
    m.mesh.nodes[2].stop_sigterm().await;
    m.publish(&m.context_id, &[second]).await;
    m.converged_on(&[0, 1], SETUP_TXS + 2).await;
    let merge = m.set(0, "merge", json!(true)).await;
    let root = m.converged_on(&[0, 1], SETUP_TXS + 3).await;
    assert_eq!(root["heads"], json!([merge.to_string()]), "{root}");

    m.mesh.restart_node(2).await;
    m.tokens[2] = m.mesh.client.login(&m.admin, m.node(2)).await;
    let root = m.converged(SETUP_TXS + 3).await;
    assert_eq!(root["heads"], json!([merge.to_string()]), "{root}");
    let twin = m.get(0, "twin").await;
    assert_eq!(
        m.get(2, "twin").await,
        twin,
        "node 2 applied both twins in the same order"
    );
    m.still_serving(SETUP_TXS + 3).await;
}
