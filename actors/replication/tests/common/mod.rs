//! The mesh the replication tests run on: real state actors (redb in a temp dir, wasmer
//! running the committed kv app) and real replicators, one per node, talking over a
//! [`MemoryNetwork`] that a test makes misbehave. Waiting is on heads notices, which
//! every node gossips every few milliseconds here: a test re-checks what it waits for on
//! each one, and gives up after [`WAIT_LIMIT`].
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, AsyncContext};
use cmesh_common::{Address, SigningKey};
use cmesh_replication::memory_bus::MemoryNetwork;
use cmesh_replication::{
    wire, Bus, CheckReady, ContextStatus, JoinContext, Link, Phase, ReplicationError, Replicator, Settings,
    StatusReply, Subscriptions, TxVerifier,
};
use cmesh_runtime::RuntimeConfig;
use cmesh_state::{
    CallContext, CreateContext, Deploy, FetchTransactions, GetSyncState, Id, Invite, Requester, StateActor,
    StateConfig, Stats, SyncState,
};
use futures::StreamExt;
use serde_json::json;

/// The longest a test waits for what should take milliseconds.
pub const WAIT_LIMIT: Duration = Duration::from_secs(5);

/// The largest message of the network (NATS's default).
const MAX_PAYLOAD: usize = 1 << 20;

/// Timings for tests: members answer in well under a second here, and heads go out
/// every 20 ms (so that waiting on them is quick).
pub fn quick() -> Settings {
    Settings {
        request_timeout: Duration::from_secs(1),
        discover_wait: Duration::from_millis(300),
        page_limit: 2_048,
        confirm_limit: Duration::from_secs(1),
        heads_grace: Duration::from_millis(20),
        gossip_every: Duration::from_millis(20),
    }
}

/// Several nodes of one test, and their admin (the user who creates and invites).
/// The mesh every test node is of.
pub const TEST_MESH: cmesh_common::genesis::MeshId = cmesh_common::genesis::MeshId([7; 32]);

pub struct Mesh {
    dir: tempfile::TempDir,
    pub network: MemoryNetwork,
    pub admin: Address,
}

pub struct Node {
    pub address: Address,
    pub state: Addr<StateActor>,
    pub replicator: Addr<Replicator>,
}

pub fn new_address() -> Address {
    SigningKey::generate().expect("key").address()
}

pub fn kv_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../apps/kv/kv.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

impl Mesh {
    pub fn new() -> Mesh {
        Mesh {
            dir: tempfile::tempdir().expect("tempdir"),
            network: MemoryNetwork::new(),
            admin: new_address(),
        }
    }

    /// Starts a node on the network: its state actor (without apps: a joiner fetches the
    /// module from a member), verifier pool and replicator.
    pub async fn node(&self, name: &str, settings: Settings) -> Node {
        let key = Arc::new(SigningKey::generate().expect("node key"));
        let address = key.address();
        let config = StateConfig {
            dir: self.dir.path().join(name),
            runtime: RuntimeConfig {
                cache_dir: Some(self.dir.path().join("modules")),
                ..RuntimeConfig::default()
            },
            view_threads: 1,
        };
        let replication = actix::Context::<Replicator>::new();
        let state =
            StateActor::start(config, key.clone(), None, Some(replication.address().recipient())).expect("state actor");
        let bus: Arc<dyn Bus> = Arc::new(self.network.connect(address));
        let subscriptions = Subscriptions::open(bus.as_ref(), &address)
            .await
            .expect("subscriptions");
        let link = Link {
            mesh: TEST_MESH,
            bus,
            key,
            state: state.clone(),
            // Each batch is one job (`threads: 1`) for a pool of two threads: a small
            // batch that arrives after a large one is checked while the large one still is.
            verifier: TxVerifier::start(2),
            threads: 1,
            events: None,
            max_payload: MAX_PAYLOAD,
            settings,
        };
        let replicator = replication.run(Replicator::new(link, subscriptions));
        Node {
            address,
            state,
            replicator,
        }
    }

    /// Deploys the kv app on `node` and creates a context of it there.
    pub async fn create_context(&self, node: &Node) -> Id {
        let deploy = Deploy {
            by: self.admin,
            name: "kv".into(),
            version: "1.0.0".into(),
            wasm: kv_wasm(),
        };
        node.state.send(deploy).await.expect("mailbox").expect("deploy");
        let create = CreateContext {
            by: Requester::new(self.admin),
            app: "kv".into(),
            version: None,
        };
        node.state.send(create).await.expect("mailbox").expect("create").context
    }

    /// Makes `member` a member of `context`, through `node`.
    /// Node `a` (quick settings) with a kv context that node `b` (the `joiner`'s settings)
    /// is invited to, not yet joined.
    pub async fn invited_pair(&self, joiner: Settings) -> (Node, Node, Id) {
        let a = self.node("a", quick()).await;
        let b = self.node("b", joiner).await;
        let context = self.create_context(&a).await;
        self.invite(&a, context, &b).await;
        (a, b, context)
    }

    /// The same, with `b` joined and in sync.
    pub async fn joined_pair(&self, joiner: Settings) -> (Node, Node, Id) {
        let (a, b, context) = self.invited_pair(joiner).await;
        let joined = b.join(context, true).await.expect("B joins");
        assert_eq!(joined.phase, Phase::InSync, "{joined:?}");
        (a, b, context)
    }

    pub async fn invite(&self, node: &Node, context: Id, member: &Node) {
        let invite = Invite {
            by: Requester::new(self.admin),
            context: context.to_string(),
            member: member.address,
            seats: 1,
        };
        node.state.send(invite).await.expect("mailbox").expect("invite");
    }

    /// Sets `key` to `value` through `node`; answers the transaction.
    pub async fn write(&self, node: &Node, context: Id, key: &str, value: u64) -> Id {
        let call = CallContext {
            by: Requester::new(self.admin),
            context: context.to_string(),
            method: "set".into(),
            args: serde_json::to_vec(&json!([key, value])).expect("args"),
            version_req: None,
            write: true,
        };
        let reply = node.state.send(call).await.expect("mailbox").expect("the admin writes");
        reply.tx.expect("a write is a transaction")
    }

    /// `count` writes through `node` at once (the executor commits them in few batches).
    pub async fn writes(&self, node: &Node, context: Id, count: u64) -> Vec<Id> {
        let writes = (0..count).map(|i| async move { self.write(node, context, &format!("k{i}"), i).await });
        futures::future::join_all(writes).await
    }

    /// Waits until `done` holds: checked now and again on every heads notice of
    /// `context`; panics after [`WAIT_LIMIT`], saying `what` it waited for.
    pub async fn until(&self, context: Id, what: &str, mut done: impl AsyncFnMut() -> bool) {
        let observer = self.network.connect(new_address());
        let mut notices = observer
            .subscribe(wire::heads_subject(&context))
            .await
            .expect("subscribe");
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        while !done().await {
            match tokio::time::timeout_at(deadline, notices.next()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("waited {WAIT_LIMIT:?} for {what}"),
            }
        }
    }

    /// Waits until every node of `nodes` holds the same heads and root of `context`, is
    /// `in-sync` and keeps nothing waiting for parents; answers their common state.
    pub async fn converged(&self, context: Id, nodes: &[&Node]) -> SyncState {
        self.until(context, "the members to converge", async || {
            let first = nodes[0].sync_state(context).await;
            for node in nodes {
                let status = node.status(context).await;
                if status.phase != Phase::InSync || status.waiting != 0 {
                    return false;
                }
                let state = node.sync_state(context).await;
                if (state.root, &state.heads) != (first.root, &first.heads) {
                    return false;
                }
            }
            true
        })
        .await;
        nodes[0].sync_state(context).await
    }
}

impl Node {
    pub async fn sync_state(&self, context: Id) -> SyncState {
        self.state
            .send(GetSyncState { context })
            .await
            .expect("mailbox")
            .expect("the context is held")
    }

    pub async fn status(&self, context: Id) -> StatusReply {
        self.replicator
            .send(ContextStatus { context })
            .await
            .expect("mailbox")
            .expect("the context is known")
    }

    pub async fn join(&self, context: Id, wait: bool) -> Result<StatusReply, ReplicationError> {
        self.replicator
            .send(JoinContext { context, wait })
            .await
            .expect("mailbox")
    }

    pub async fn check_ready(&self, context: &str) -> Result<(), ReplicationError> {
        self.replicator
            .send(CheckReady {
                context: context.to_string(),
            })
            .await
            .expect("mailbox")
    }

    /// Transactions this node's store committed: each received one once, however often
    /// it arrived.
    pub async fn committed(&self) -> u64 {
        self.state.send(Stats).await.expect("mailbox").transactions
    }

    /// The encodings of `ids`, as this node serves them.
    pub async fn encoded(&self, context: Id, ids: Vec<Id>) -> Vec<Vec<u8>> {
        let count = ids.len();
        let txs = self
            .state
            .send(FetchTransactions { context, ids })
            .await
            .expect("mailbox")
            .expect("fetch");
        assert_eq!(txs.len(), count, "the node holds them all");
        txs
    }
}
