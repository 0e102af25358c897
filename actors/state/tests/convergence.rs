//! Replication logic under random schedules: three members of one context (real redb,
//! real wasmer, the committed kv app, one state actor each) write concurrently while
//! their transactions travel in any order, late, twice, or not until the end (a
//! partition). Transactions that arrive before their parents go back to wait, as the
//! bounded buffer does. Once everything is delivered, every member has the same heads,
//! the same number of transactions and the same root, and so does a fresh node that
//! receives the whole DAG at once: rolling back and applying again gives exactly what
//! applying in order gives.
//!
//! Writes are `set` and `copy` (which reads one key and writes another) on a few keys by
//! two users; the admin grants and revokes the second user's writer role concurrently, so
//! whether that user's writes take effect depends on the order every member must agree
//! on. Received writes that touch other keys than those applied after their place are
//! applied last without undoing anything; the others roll back: both must give the root
//! of applying in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::Addr;
use cmesh_common::{Address, SigningKey};
use cmesh_runtime::RuntimeConfig;
use cmesh_state::{
    CallContext, ContextMembers, ContextRoot, Id, Persist, Receive, ReceiveReport, Requester, Role, RootReply, SetRole,
    StateActor, StateConfig, Stats,
};
use proptest::prelude::*;
use serde_json::json;

mod common;
use common::*;

const MEMBERS: usize = 3;
/// Keys written: few enough that concurrent writes often touch the same ones.
const KEYS: u8 = 6;

#[derive(Debug, Clone)]
enum Step {
    /// `user` (0: the admin, 1: the other user) sets `key` to `value` through `node`.
    Write {
        node: usize,
        user: usize,
        key: u8,
        value: u8,
    },
    /// `user` copies the value of `from` to `to` through `node` (nothing if `from` is
    /// unset, so the write depends on what was read).
    Copy { node: usize, user: usize, from: u8, to: u8 },
    /// The admin grants (or revokes) the other user's writer role through `node`.
    Role { node: usize, grant: bool },
    /// `to` receives some of what is on its way to it, in this order; a pick may
    /// repeat (a duplicate), and what is not picked waits.
    Deliver { to: usize, picks: Vec<usize> },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..MEMBERS, 0..2usize, 0..KEYS, any::<u8>())
            .prop_map(|(node, user, key, value)| Step::Write { node, user, key, value }),
        2 => (0..MEMBERS, 0..2usize, 0..KEYS, 0..KEYS)
            .prop_map(|(node, user, from, to)| Step::Copy { node, user, from, to }),
        2 => (0..MEMBERS, any::<bool>()).prop_map(|(node, grant)| Step::Role { node, grant }),
        3 => (0..MEMBERS, proptest::collection::vec(0..64usize, 1..6))
            .prop_map(|(to, picks)| Step::Deliver { to, picks }),
    ]
}

struct Member {
    state: Addr<StateActor>,
    /// Transactions on their way to this member: (id, encoded).
    inbox: Vec<(Id, Vec<u8>)>,
}

struct Mesh {
    _dir: tempfile::TempDir,
    cache: PathBuf,
    base: PathBuf,
    admin: Address,
    user: Address,
    context: Id,
    members: Vec<Member>,
    /// Every transaction made, in the order made.
    all: Vec<(Id, Vec<u8>)>,
}

/// A state actor with a fresh node key; answers it and the node's address.
fn start(base: &Path, cache: &Path, name: &str) -> (Addr<StateActor>, Address) {
    let config = StateConfig {
        dir: base.join(name),
        runtime: RuntimeConfig {
            cache_dir: Some(cache.to_path_buf()),
            ..RuntimeConfig::default()
        },
        view_threads: 1,
    };
    let key = Arc::new(SigningKey::generate().expect("node key"));
    let address = key.address();
    (
        StateActor::start(config, key, None, None).expect("state actor"),
        address,
    )
}

async fn receive(state: &Addr<StateActor>, txs: &[(Id, Vec<u8>)], joining: Option<Id>) -> ReceiveReport {
    let txs = txs.iter().map(|(_, encoded)| decode(encoded)).collect();
    state
        .send(Receive { txs, joining })
        .await
        .expect("mailbox")
        .expect("receive")
}

async fn root(state: &Addr<StateActor>, by: Address, context: Id) -> RootReply {
    state
        .send(ContextRoot {
            by,
            context: context.to_string(),
        })
        .await
        .expect("mailbox")
        .expect("root")
}

impl Mesh {
    async fn new() -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().to_path_buf();
        let cache = base.join("modules");
        let admin = SigningKey::generate().expect("admin").address();
        let user = SigningKey::generate().expect("user").address();
        let mut states = Vec::new();
        let mut addresses = Vec::new();
        for i in 0..MEMBERS {
            let (state, address) = start(&base, &cache, &format!("node{i}"));
            deploy(&state, admin).await;
            states.push(state);
            addresses.push(address);
        }
        let context = create_kv_context(&states[0], admin).await;
        let mut all = vec![(context, fetch(&states[0], context, context).await)];
        for address in addresses[1..].iter().copied() {
            let invitation = invite(&states[0], admin, context, address).await;
            all.push((invitation, fetch(&states[0], context, invitation).await));
        }
        // The invitees join: they take the genesis and the invitations.
        for state in &states[1..] {
            let report = receive(state, &all, Some(context)).await;
            assert_eq!(report.added.len(), all.len(), "{report:?}");
        }
        let members = states
            .into_iter()
            .map(|state| Member {
                state,
                inbox: Vec::new(),
            })
            .collect();
        Mesh {
            _dir: dir,
            cache,
            base,
            admin,
            user,
            context,
            members,
            all,
        }
    }

    /// Sends a transaction `from` made to every other member.
    fn broadcast(&mut self, from: usize, tx: (Id, Vec<u8>)) {
        for (i, member) in self.members.iter_mut().enumerate() {
            if i != from {
                member.inbox.push(tx.clone());
            }
        }
        self.all.push(tx);
    }

    async fn run(&mut self, step: &Step) {
        match step {
            Step::Write { node, user, key, value } => {
                self.call(*node, *user, "set", json!([format!("k{key}"), value])).await;
            }
            Step::Copy { node, user, from, to } => {
                self.call(*node, *user, "copy", json!([format!("k{from}"), format!("k{to}")]))
                    .await;
            }
            Step::Role { node, grant } => {
                let set = SetRole {
                    by: Requester::new(self.admin),
                    context: self.context.to_string(),
                    user: self.user,
                    role: grant.then_some(Role::Writer),
                };
                let reply = self.members[*node]
                    .state
                    .send(set)
                    .await
                    .expect("mailbox")
                    .expect("the admin sets roles");
                let encoded = fetch(&self.members[*node].state, self.context, reply.tx).await;
                self.broadcast(*node, (reply.tx, encoded));
            }
            Step::Deliver { to, picks } => {
                let inbox = &mut self.members[*to].inbox;
                if inbox.is_empty() {
                    return;
                }
                let mut batch = Vec::new();
                for pick in picks {
                    batch.push(inbox[pick % inbox.len()].clone());
                }
                let delivered: Vec<Id> = batch.iter().map(|(id, _)| *id).collect();
                inbox.retain(|(id, _)| !delivered.contains(id));
                let report = receive(&self.members[*to].state, &batch, None).await;
                self.settle(*to, &batch, report);
            }
        }
    }

    /// `user` (0: the admin, 1: the other user) calls `method` through `node`; what it
    /// makes is sent to the others.
    async fn call(&mut self, node: usize, user: usize, method: &str, args: serde_json::Value) {
        let by = if user == 0 { self.admin } else { self.user };
        let call = CallContext {
            by: Requester::new(by),
            context: self.context.to_string(),
            method: method.into(),
            args: serde_json::to_vec(&args).expect("args"),
            version_req: None,
            write: true,
        };
        // The other user may lack the role here: then nothing is made.
        if let Ok(reply) = self.members[node].state.send(call).await.expect("mailbox") {
            let tx = reply.tx.expect("a write is a transaction");
            let encoded = fetch(&self.members[node].state, self.context, tx).await;
            self.broadcast(node, (tx, encoded));
        } else {
            assert_eq!(user, 1, "the admin may always write");
        }
    }

    /// Puts back what waits for parents; checks nothing was refused.
    fn settle(&mut self, to: usize, batch: &[(Id, Vec<u8>)], report: ReceiveReport) {
        assert!(report.invalid.is_empty(), "honest transactions are valid: {report:?}");
        assert_eq!(report.unknown_context, 0, "{report:?}");
        for (id, _) in &report.missing {
            let tx = batch
                .iter()
                .find(|(b, _)| b == id)
                .expect("a delivered transaction")
                .clone();
            if !self.members[to].inbox.iter().any(|(i, _)| i == id) {
                self.members[to].inbox.push(tx);
            }
        }
    }

    /// Delivers everything still on its way, newest first (the worst order), until
    /// every inbox is empty.
    async fn deliver_all(&mut self) {
        for _round in 0..self.all.len() + 2 {
            let mut idle = true;
            for to in 0..MEMBERS {
                let mut batch = std::mem::take(&mut self.members[to].inbox);
                if batch.is_empty() {
                    continue;
                }
                idle = false;
                batch.reverse();
                let report = receive(&self.members[to].state, &batch, None).await;
                self.settle(to, &batch, report);
            }
            if idle {
                return;
            }
        }
        panic!("transactions still wait for parents after every one was delivered");
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn members_reach_the_same_root_whatever_the_schedule(steps in proptest::collection::vec(step(), 1..40)) {
        let system = actix::System::new();
        system.block_on(async {
            let mut mesh = Mesh::new().await;
            for step in &steps {
                mesh.run(step).await;
            }
            mesh.deliver_all().await;
            let first = root(&mesh.members[0].state, mesh.admin, mesh.context).await;
            assert_eq!(first.applied, mesh.all.len() as u64, "every transaction is held");
            for member in &mesh.members[1..] {
                let other = root(&member.state, mesh.admin, mesh.context).await;
                assert_eq!((other.root, &other.heads, other.applied), (first.root, &first.heads, first.applied));
            }
            let members = mesh.members[0]
                .state
                .send(ContextMembers { by: mesh.admin, context: mesh.context.to_string() })
                .await
                .expect("mailbox")
                .expect("members");
            assert_eq!(members.members.len(), MEMBERS);
            // A newcomer given the whole DAG at once, newest first, applies it in order.
            let (fresh, _) = start(&mesh.base, &mesh.cache, "fresh");
            deploy(&fresh, mesh.admin).await;
            let mut all = mesh.all.clone();
            all.reverse();
            let report = receive(&fresh, &all, Some(mesh.context)).await;
            assert_eq!(report.added.len(), all.len(), "{report:?}");
            let fresh_root = root(&fresh, mesh.admin, mesh.context).await;
            assert_eq!((fresh_root.root, &fresh_root.heads), (first.root, &first.heads));
        });
    }
}

#[test]
fn a_newcomer_catches_up_page_by_page_and_later_only_what_it_lacks() {
    let system = actix::System::new();
    system.block_on(async {
        let Pair {
            dir: _dir,
            admin,
            a,
            b,
            context,
            ..
        } = invited_pair().await;
        let write = |i: u32| CallContext {
            by: Requester::new(admin),
            context: context.to_string(),
            method: "set".into(),
            args: serde_json::to_vec(&json!([format!("k{}", i % 7), i])).expect("args"),
            version_req: None,
            write: true,
        };
        for i in 0..40 {
            a.send(write(i)).await.expect("mailbox").expect("write");
        }
        assert_eq!(
            catch_up(&a, &b, context, true, 7).await,
            42,
            "genesis, invitation, 40 writes"
        );
        let (ra, rb) = (root(&a, admin, context).await, root(&b, admin, context).await);
        assert_eq!((ra.root, &ra.heads, ra.applied), (rb.root, &rb.heads, rb.applied));

        // Both write while apart; then each asks the other for what it lacks.
        for i in 40..50 {
            a.send(write(i)).await.expect("mailbox").expect("write");
            b.send(write(i + 100)).await.expect("mailbox").expect("write");
        }
        assert_eq!(catch_up(&a, &b, context, false, 4).await, 10, "only A's ten new writes");
        assert_eq!(catch_up(&b, &a, context, false, 4).await, 10, "only B's ten new writes");
        let (ra, rb) = (root(&a, admin, context).await, root(&b, admin, context).await);
        assert_eq!(ra.applied, 62);
        assert_eq!((ra.root, &ra.heads, ra.applied), (rb.root, &rb.heads, rb.applied));
        let members = b
            .send(ContextMembers {
                by: admin,
                context: context.to_string(),
            })
            .await
            .expect("mailbox")
            .expect("members");
        assert_eq!(members.members.len(), 2);
    });
}

/// Two members of a new kv context: A made it, B joined.
struct Pair {
    dir: tempfile::TempDir,
    cache: PathBuf,
    admin: Address,
    a: Addr<StateActor>,
    b: Addr<StateActor>,
    context: Id,
}

async fn pair() -> Pair {
    let pair = invited_pair().await;
    catch_up(&pair.a, &pair.b, pair.context, true, 16).await;
    pair
}

/// [`pair`] before B joins: B is invited but holds nothing of the context yet.
async fn invited_pair() -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("modules");
    let admin = SigningKey::generate().expect("admin").address();
    let (a, _) = start(dir.path(), &cache, "a");
    let (b, b_address) = start(dir.path(), &cache, "b");
    deploy(&a, admin).await;
    deploy(&b, admin).await;
    let context = create_kv_context(&a, admin).await;
    invite(&a, admin, context, b_address).await;
    Pair {
        dir,
        cache,
        admin,
        a,
        b,
        context,
    }
}

/// Makes a write through `state`; answers its id and encoding.
async fn call(
    state: &Addr<StateActor>,
    admin: Address,
    context: Id,
    method: &str,
    args: serde_json::Value,
) -> (Id, Vec<u8>) {
    let call = CallContext {
        by: Requester::new(admin),
        context: context.to_string(),
        method: method.into(),
        args: serde_json::to_vec(&args).expect("args"),
        version_req: None,
        write: true,
    };
    let tx = state
        .send(call)
        .await
        .expect("mailbox")
        .expect("write")
        .tx
        .expect("a transaction");
    (tx, fetch(state, context, tx).await)
}

async fn get(state: &Addr<StateActor>, admin: Address, context: Id, key: &str) -> serde_json::Value {
    let view = CallContext {
        by: Requester::new(admin),
        context: context.to_string(),
        method: "get".into(),
        args: serde_json::to_vec(&json!([key])).expect("args"),
        version_req: None,
        write: false,
    };
    state.send(view).await.expect("mailbox").expect("view").result
}

#[test]
fn a_received_write_that_commutes_undoes_nothing_and_one_that_read_a_later_write_rolls_back() {
    let system = actix::System::new();
    system.block_on(async {
        let Pair {
            dir,
            cache,
            admin,
            a,
            b,
            context,
        } = pair().await;

        // Apart: A writes five keys in a chain; B writes another key, then copies one
        // of A's keys (absent at B, so B's copy wrote nothing).
        let mut made_by_a = Vec::new();
        for i in 0..5 {
            made_by_a.push(call(&a, admin, context, "set", json!([format!("a{i}"), i])).await);
        }
        let b_set = call(&b, admin, context, "set", json!(["b0", "x"])).await;
        let b_copy = call(&b, admin, context, "copy", json!(["a4", "b1"])).await;

        // B's set sorts before A's later writes and touches none of their keys.
        let report = receive(&a, std::slice::from_ref(&b_set), None).await;
        assert_eq!(
            (report.added.len(), report.applied, report.undone),
            (1, 1, 0),
            "{report:?}"
        );
        // B's copy sorts before A's write of a4, which it reads: applied last it would
        // copy a4, so A rolls back to its place instead.
        let report = receive(&a, std::slice::from_ref(&b_copy), None).await;
        assert_eq!(report.added.len(), 1, "{report:?}");
        assert!(
            report.undone > 0,
            "the copy read a key written after its place: {report:?}"
        );
        assert_eq!(get(&a, admin, context, "b1").await, serde_json::Value::Null);
        assert_eq!(get(&a, admin, context, "b0").await, json!("x"));

        let report = receive(&b, &made_by_a, None).await;
        assert_eq!(report.added.len(), 5, "{report:?}");
        let (ra, rb) = (root(&a, admin, context).await, root(&b, admin, context).await);
        assert_eq!((ra.root, &ra.heads, ra.applied), (rb.root, &rb.heads, rb.applied));

        // A node given everything at once applies it in order: the same root.
        let (fresh, _) = start(dir.path(), &cache, "fresh");
        deploy(&fresh, admin).await;
        catch_up(&a, &fresh, context, true, 64).await;
        let rf = root(&fresh, admin, context).await;
        assert_eq!((rf.root, rf.applied), (ra.root, ra.applied));
        assert_eq!(get(&fresh, admin, context, "b1").await, serde_json::Value::Null);
    });
}

#[test]
fn broadcast_transactions_skip_the_fsync_and_the_next_durable_commit_keeps_them() {
    let system = actix::System::new();
    system.block_on(async {
        let Pair {
            dir,
            cache,
            admin,
            a,
            b,
            context,
        } = pair().await;
        let mut made = Vec::new();
        for i in 0..3 {
            made.push(call(&a, admin, context, "set", json!([format!("a{i}"), i])).await);
        }

        let before = b.send(Stats).await.expect("stats");
        assert_eq!(receive(&b, &made, None).await.added.len(), 3);
        let received = b.send(Stats).await.expect("stats");
        assert_eq!(received.commits - before.commits, 1);
        assert_eq!(
            received.unsynced - before.unsynced,
            1,
            "a batch of broadcast transactions alone"
        );
        call(&b, admin, context, "set", json!(["b", 1])).await;
        let written = b.send(Stats).await.expect("stats");
        assert_eq!(written.commits - received.commits, 1);
        assert_eq!(written.unsynced, received.unsynced, "an answered write is durable");

        // More broadcast transactions, then what a stopping node asks for: a durable commit.
        let later = vec![call(&a, admin, context, "set", json!(["a3", 3])).await];
        receive(&b, &later, None).await;
        let received = b.send(Stats).await.expect("stats");
        assert_eq!(received.unsynced - written.unsynced, 1);
        b.send(Persist).await.expect("mailbox").expect("persist");
        let persisted = b.send(Stats).await.expect("stats");
        assert_eq!(
            (persisted.commits - received.commits, persisted.unsynced),
            (1, received.unsynced)
        );
        let held = root(&b, admin, context).await;

        // B stops and starts again: the durable commits kept what came before them.
        drop(stop(b, &dir.path().join("b").join("state.redb")).await);
        let (b, _) = start(dir.path(), &cache, "b");
        let again = root(&b, admin, context).await;
        assert_eq!(
            (again.root, &again.heads, again.applied),
            (held.root, &held.heads, held.applied)
        );
        assert_eq!(get(&b, admin, context, "a2").await, json!(2));
        assert_eq!(get(&b, admin, context, "a3").await, json!(3));
    });
}
