//! The state actor end to end in one process: real redb, real wasmer, the committed kv
//! app. Concurrent writes are group-committed (fewer durable commits than transactions)
//! and each caller still sees its own writes in the order it made them.

use std::path::Path;
use std::sync::Arc;

use cmesh_common::SigningKey;
use cmesh_runtime::RuntimeConfig;
use cmesh_state::{CallContext, ContextRoot, CreateContext, Deploy, Requester, StateActor, StateConfig, Stats};
use serde_json::json;

const CALLERS: usize = 16;
const WRITES_EACH: u64 = 25;

fn kv_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../apps/kv/kv.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn concurrent_calls_are_group_committed_without_reordering_a_callers_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = actix::System::new();
    system.block_on(async {
        let node = Arc::new(SigningKey::generate().expect("node key"));
        let alice = SigningKey::generate().expect("user key").address();
        let config = StateConfig {
            dir: dir.path().to_path_buf(),
            runtime: RuntimeConfig::default(),
            view_threads: 2,
        };
        let state = StateActor::start(config, node, None, None).expect("state actor");
        let deploy = Deploy {
            by: alice,
            name: "kv".into(),
            version: "1.0.0".into(),
            wasm: kv_wasm(),
        };
        state.send(deploy).await.expect("mailbox").expect("deploy");
        let create = CreateContext {
            by: Requester::new(alice),
            app: "kv".into(),
            version: None,
        };
        let context = state
            .send(create)
            .await
            .expect("mailbox")
            .expect("create")
            .context
            .to_string();
        let before = state.send(Stats).await.expect("stats");

        let callers = (0..CALLERS).map(|c| {
            let state = state.clone();
            let context = context.clone();
            async move {
                for i in 0..WRITES_EACH {
                    let call = CallContext {
                        by: Requester::new(alice),
                        context: context.clone(),
                        method: "set".into(),
                        args: serde_json::to_vec(&json!([format!("caller{c}"), i])).expect("args"),
                        version_req: None,
                        write: true,
                    };
                    let reply = state.send(call).await.expect("mailbox").expect("set");
                    assert!(reply.tx.is_some(), "a write is a transaction");
                    let get = CallContext {
                        by: Requester::new(alice),
                        context: context.clone(),
                        method: "get".into(),
                        args: serde_json::to_vec(&json!([format!("caller{c}")])).expect("args"),
                        version_req: None,
                        write: false,
                    };
                    let seen = state.send(get).await.expect("mailbox").expect("get");
                    assert_eq!(seen.result, json!(i), "caller {c} reads its own acknowledged write");
                }
            }
        });
        futures::future::join_all(callers).await;

        let after = state.send(Stats).await.expect("stats");
        let transactions = after.transactions - before.transactions;
        let commits = after.commits - before.commits;
        assert_eq!(transactions, CALLERS as u64 * WRITES_EACH);
        assert!(
            commits < transactions,
            "{transactions} transactions in {commits} commits: concurrent writes share commits"
        );
        let root = state
            .send(ContextRoot { by: alice, context })
            .await
            .expect("mailbox")
            .expect("root");
        assert_eq!(root.applied, 1 + transactions, "the genesis and every write");
        assert_eq!(root.heads.len(), 1);
    });
}
