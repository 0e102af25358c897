//! Leaving a context, end to end (real redb, real wasmer, the committed kv app, one state
//! actor per node): a member authors its `Leave`, the others take it and stop counting the
//! node as a member, and the node then forgets the context: nothing of it is left in its
//! `state.redb`, while its other contexts and the app's code stay. The node can join the
//! context again afterwards, in the same run (its caches must not remember the context)
//! and after a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::Addr;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, SigningKey, Status};
use cmesh_runtime::RuntimeConfig;
use cmesh_state::tx::{Op, TxBody, VerifiedTx, TX_FORMAT};
use cmesh_state::{
    CallContext, ContextMembers, ContextRoot, FetchTransactions, Forget, GetSyncState, Id, Leave, ListContexts,
    MissingTransactions, Receive, ReceiveReport, Requester, RootReply, StateActor, StateConfig, StateError,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde_json::json;

mod common;
use common::*;

/// A node: its directory and key, so that it can be stopped and started again.
struct Node {
    dir: PathBuf,
    cache: PathBuf,
    key: Arc<SigningKey>,
}

impl Node {
    fn new(base: &Path, name: &str) -> Node {
        Node {
            dir: base.join(name),
            cache: base.join("modules"),
            key: Arc::new(SigningKey::generate().expect("node key")),
        }
    }

    fn address(&self) -> Address {
        self.key.address()
    }

    fn start(&self) -> Addr<StateActor> {
        let config = StateConfig {
            dir: self.dir.clone(),
            runtime: RuntimeConfig {
                cache_dir: Some(self.cache.clone()),
                ..RuntimeConfig::default()
            },
            view_threads: 1,
        };
        StateActor::start(config, self.key.clone(), None, None).expect("state actor")
    }

    fn store(&self) -> PathBuf {
        self.dir.join("state.redb")
    }
}

fn set(by: Address, context: Id, key: &str, value: u32) -> CallContext {
    CallContext {
        by: Requester::new(by),
        context: context.to_string(),
        method: "set".into(),
        args: serde_json::to_vec(&json!([key, value])).expect("args"),
        version_req: None,
        write: true,
    }
}

async fn write(state: &Addr<StateActor>, by: Address, context: Id, key: &str, value: u32) -> Result<Id, StateError> {
    let reply = state.send(set(by, context, key, value)).await.expect("mailbox")?;
    Ok(reply.tx.expect("a write is a transaction"))
}

async fn receive(state: &Addr<StateActor>, txs: Vec<VerifiedTx>, joining: Option<Id>) -> ReceiveReport {
    state
        .send(Receive { txs, joining })
        .await
        .expect("mailbox")
        .expect("receive")
}

/// `to` takes `from`'s transaction `id` (of `from`'s making).
async fn relay(from: &Addr<StateActor>, to: &Addr<StateActor>, context: Id, id: Id) {
    let tx = decode(&fetch(from, context, id).await);
    let report = receive(to, vec![tx], None).await;
    assert_eq!(report.added, vec![id], "{report:?}");
}

async fn root(state: &Addr<StateActor>, by: Address, context: Id) -> Result<(Id, Vec<Id>, u64), StateError> {
    let reply: RootReply = state
        .send(ContextRoot {
            by,
            context: context.to_string(),
        })
        .await
        .expect("mailbox")?;
    Ok((reply.root, reply.heads, reply.applied))
}

/// Every transaction `from` holds of `context`, in apply order.
async fn all_transactions(from: &Addr<StateActor>, context: Id) -> Vec<Vec<u8>> {
    let page = from
        .send(MissingTransactions {
            context,
            have: Vec::new(),
            after: None,
            limit: usize::MAX,
            max_bytes: usize::MAX,
        })
        .await
        .expect("mailbox")
        .expect("page");
    assert!(page.next.is_none(), "one page holds them all");
    page.txs
}

/// `to` joins `context` from `from`'s pages (three transactions a page), parents first,
/// or takes what it lacks if it holds some already. Answers how many it took.
async fn join(from: &Addr<StateActor>, to: &Addr<StateActor>, context: Id) -> usize {
    let held = to.send(GetSyncState { context }).await.expect("mailbox").is_ok();
    catch_up(from, to, context, !held, 3).await
}

async fn members(state: &Addr<StateActor>, by: Address, context: Id) -> Vec<Address> {
    state
        .send(ContextMembers {
            by,
            context: context.to_string(),
        })
        .await
        .expect("mailbox")
        .expect("members")
        .members
        .into_iter()
        .map(|m| m.member)
        .collect()
}

async fn leave(state: &Addr<StateActor>, context: Id) -> Result<Option<Id>, StateError> {
    Ok(state.send(Leave { context }).await.expect("mailbox")?.tx)
}

async fn forget(state: &Addr<StateActor>, context: Id) -> Result<u64, StateError> {
    let reply = state.send(Forget { context }).await.expect("mailbox")?;
    assert_eq!(reply.context, context);
    Ok(reply.transactions)
}

/// Asserts that `state` holds nothing of `context` any more.
async fn assert_forgotten(state: &Addr<StateActor>, admin: Address, context: Id, ids: &[Id]) {
    let not_found = |what: &str, result: Result<(), StateError>| match result {
        Err(err @ StateError::NotFound(_)) => assert_eq!(err.status(), Status::NOT_FOUND),
        other => panic!("{what} after forget: {other:?}"),
    };
    let sync = state.send(GetSyncState { context }).await.expect("mailbox");
    not_found("sync state", sync.map(drop));
    not_found("root", root(state, admin, context).await.map(drop));
    not_found("write", write(state, admin, context, "k", 1).await.map(drop));
    let mut view = set(admin, context, "k", 1);
    (view.method, view.args, view.write) = ("get".into(), b"[\"k\"]".to_vec(), false);
    not_found("view", state.send(view).await.expect("mailbox").map(drop));
    not_found("leave", leave(state, context).await.map(drop));
    not_found("forget", forget(state, context).await.map(drop));
    let fetched = state
        .send(FetchTransactions {
            context,
            ids: ids.to_vec(),
        })
        .await
        .expect("mailbox")
        .expect("fetch");
    assert!(fetched.is_empty(), "{} transactions still held", fetched.len());
    let listed = state
        .send(ListContexts { by: admin })
        .await
        .expect("mailbox")
        .expect("list");
    assert!(listed.is_empty(), "{listed:?}");
}

/// What a store holds: every table's keys, by table name.
fn tables(db: &redb::Database) -> Vec<(String, Vec<Vec<u8>>)> {
    fn keys<V: redb::Value + 'static>(txn: &redb::ReadTransaction, name: &str) -> Vec<Vec<u8>> {
        let table = txn
            .open_table(TableDefinition::<&[u8], V>::new(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        table
            .iter()
            .expect("iter")
            .map(|entry| entry.expect("entry").0.value().to_vec())
            .collect()
    }
    let txn = db.begin_read().expect("read");
    let mut out = Vec::new();
    for table in txn.list_tables().expect("tables") {
        let name = table.name().to_string();
        let keys = match name.as_str() {
            "app_code"
            | "contexts"
            | "transactions_in_order"
            | "kv"
            | "merkle_paths"
            | "membership_changes"
            | "apply_order" => keys::<&[u8]>(&txn, &name),
            // Keyed by transaction id; a genesis's id is its context's.
            "transaction_heights" => keys::<u64>(&txn, &name),
            "author_seqs" => keys::<()>(&txn, &name),
            "roles" | "memberships" => keys::<u8>(&txn, &name),
            // Keyed by app name and version: nothing of a context.
            "app_versions" => continue,
            other => panic!("table `{other}` is new: say here how its keys name a context"),
        };
        out.push((name, keys));
    }
    out
}

/// The keys of `table` that name `id` (as a prefix, or anywhere, as user ‖ context keys do).
fn naming<'a>(tables: &'a [(String, Vec<Vec<u8>>)], table: &str, id: &Id) -> Vec<&'a Vec<u8>> {
    let (_, keys) = tables
        .iter()
        .find(|(name, _)| name == table)
        .unwrap_or_else(|| panic!("no table {table}"));
    keys.iter().filter(|key| key.windows(32).any(|w| w == id.0)).collect()
}

#[test]
fn a_node_leaves_forgets_everything_and_can_join_again() {
    let system = actix::System::new();
    system.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = SigningKey::generate().expect("admin").address();
        let other_user = SigningKey::generate().expect("user").address();
        let node_a = Node::new(dir.path(), "a");
        let node_b = Node::new(dir.path(), "b");
        let a = node_a.start();
        let mut b = node_b.start();
        deploy(&a, admin).await;
        deploy(&b, admin).await;

        // B also holds a context of its own, which forgetting the other must not touch.
        let bystander = create_kv_context(&b, other_user).await;
        for i in 0..20 {
            write(&b, other_user, bystander, &format!("b{i}"), i)
                .await
                .expect("write");
        }
        let bystander_root = root(&b, other_user, bystander).await.expect("root");

        // A creates the context, writes and invites B, which joins and writes.
        let context = create_kv_context(&a, admin).await;
        for i in 0..10 {
            write(&a, admin, context, &format!("a{i}"), i).await.expect("write");
        }
        invite(&a, admin, context, node_b.address()).await;
        assert_eq!(join(&a, &b, context).await, 12, "genesis, ten writes, the invitation");
        let b_write = write(&b, admin, context, "from-b", 7).await.expect("B is a member");
        relay(&b, &a, context, b_write).await;
        let mut both = vec![node_a.address(), node_b.address()];
        both.sort();
        assert_eq!(members(&a, admin, context).await, both);

        // B leaves: A takes the Leave and no longer counts B.
        let left = leave(&b, context).await.expect("leave").expect("B was a member");
        assert_eq!(
            leave(&b, context).await.expect("leave again"),
            None,
            "no longer a member"
        );
        relay(&b, &a, context, left).await;
        assert_eq!(members(&a, admin, context).await, vec![node_a.address()]);
        let refused = write(&b, admin, context, "from-b", 8).await;
        assert!(matches!(refused, Err(StateError::Conflict(_))), "{refused:?}");

        // A transaction B makes after its Leave is invalid everywhere.
        let after_leave = TxBody {
            format: TX_FORMAT,
            context,
            author: node_b.address(),
            seq: 3,
            parents: vec![left],
            time_ms: unix_millis(),
            caller: admin,
            caller_proof: None,
            op: Op::Call {
                method: "set".into(),
                args: br#"["from-b",9]"#.to_vec(),
            },
        };
        let (forged, forged_id) = after_leave.sign(&node_b.key).expect("sign");
        let report = receive(&a, vec![forged.checked().expect("well formed")], None).await;
        assert!(report.added.is_empty(), "{report:?}");
        assert_eq!(report.invalid.len(), 1, "{report:?}");
        assert_eq!(report.invalid[0].0, forged_id);
        assert!(report.invalid[0].1.contains("not a member"), "{report:?}");

        // B forgets the context.
        let (_, _, held) = root(&b, admin, context).await.expect("root");
        assert_eq!(held, 14, "genesis, ten writes, invitation, B's write, B's leave");
        let ids: Vec<Id> = all_transactions(&b, context)
            .await
            .iter()
            .map(|tx| decode(tx).id())
            .collect();
        assert_eq!(forget(&b, context).await.expect("forget"), held);
        assert_forgotten(&b, admin, context, &ids).await;
        assert_eq!(root(&b, other_user, bystander).await.expect("root"), bystander_root);

        // Invited again, B joins again in the same run, and its caches know nothing stale:
        // with the genesis and the first write only, it has the root a fresh node has.
        invite(&a, admin, context, node_b.address()).await;
        let start: Vec<VerifiedTx> = all_transactions(&a, context).await[..2]
            .iter()
            .map(|tx| decode(tx))
            .collect();
        let fresh = Node::new(dir.path(), "fresh").start();
        deploy(&fresh, admin).await;
        assert_eq!(receive(&fresh, start.clone(), Some(context)).await.added.len(), 2);
        assert_eq!(receive(&b, start, Some(context)).await.added.len(), 2);
        assert_eq!(
            root(&b, admin, context).await.expect("b"),
            root(&fresh, admin, context).await.expect("fresh")
        );
        assert_eq!(join(&a, &b, context).await, 13, "the rest of what A holds");
        assert_eq!(
            root(&b, admin, context).await.expect("b"),
            root(&a, admin, context).await.expect("a")
        );
        let again = write(&b, admin, context, "from-b", 10).await.expect("a member again");
        relay(&b, &a, context, again).await;
        let left = leave(&b, context).await.expect("leave").expect("a member");
        relay(&b, &a, context, left).await;
        let ids: Vec<Id> = all_transactions(&b, context)
            .await
            .iter()
            .map(|tx| decode(tx).id())
            .collect();
        assert_eq!(forget(&b, context).await.expect("forget"), 17);
        assert_forgotten(&b, admin, context, &ids).await;

        // Nothing of the context is left in B's store; its other context and the app are.
        let db = stop(b, &node_b.store()).await;
        let held = tables(&db);
        for (table, _) in &held {
            assert_eq!(naming(&held, table, &context), Vec::<&Vec<u8>>::new(), "{table}");
        }
        let (_, keys) = held
            .iter()
            .find(|(name, _)| name == "transaction_heights")
            .expect("table");
        let left: Vec<&Id> = ids.iter().filter(|id| keys.contains(&id.0.to_vec())).collect();
        assert!(left.is_empty(), "transaction_heights still holds {left:?}");
        for table in [
            "contexts",
            "transactions_in_order",
            "transaction_heights",
            "kv",
            "merkle_paths",
            "apply_order",
            "author_seqs",
            "roles",
            "memberships",
            "membership_changes",
        ] {
            assert!(
                !naming(&held, table, &bystander).is_empty(),
                "{table} lost the other context"
            );
        }
        let (_, code) = held.iter().find(|(name, _)| name == "app_code").expect("app_code");
        assert_eq!(code.len(), 1, "the app's code stays");
        drop(db);

        // Started again, B joins once more from A's pages and reaches A's root.
        b = node_b.start();
        assert_eq!(join(&a, &b, context).await, 17);
        assert_eq!(
            root(&b, admin, context).await.expect("b"),
            root(&a, admin, context).await.expect("a")
        );
        assert_eq!(members(&b, admin, context).await, vec![node_a.address()]);
        assert_eq!(root(&b, other_user, bystander).await.expect("root"), bystander_root);
        write(&b, other_user, bystander, "b0", 99)
            .await
            .expect("the other context still works");
    });
}

#[test]
fn leave_of_a_non_member_makes_nothing_and_forget_needs_a_held_context() {
    let system = actix::System::new();
    system.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = SigningKey::generate().expect("admin").address();
        let node_a = Node::new(dir.path(), "a");
        let node_b = Node::new(dir.path(), "b");
        let (a, b) = (node_a.start(), node_b.start());
        deploy(&a, admin).await;
        deploy(&b, admin).await;
        let context = create_kv_context(&a, admin).await;
        write(&a, admin, context, "k", 1).await.expect("write");

        let unknown = forget(&b, context).await;
        assert!(matches!(unknown, Err(StateError::NotFound(_))), "{unknown:?}");
        let unknown = leave(&b, context).await;
        assert!(matches!(unknown, Err(StateError::NotFound(_))), "{unknown:?}");

        // B holds the context's transactions without having been invited.
        assert_eq!(join(&a, &b, context).await, 2);
        assert_eq!(leave(&b, context).await.expect("leave"), None, "B is no member");
        let (_, _, held) = root(&b, admin, context).await.expect("root");
        assert_eq!(held, 2, "no transaction was made");
        assert_eq!(forget(&b, context).await.expect("forget"), 2);
        let unknown = forget(&b, context).await;
        assert!(matches!(unknown, Err(StateError::NotFound(_))), "{unknown:?}");
        assert_eq!(root(&a, admin, context).await.expect("A carries on").2, 2);
    });
}
