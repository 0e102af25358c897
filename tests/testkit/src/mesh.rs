//! A test mesh: a nats-server, the nodes on it (all genesis voters of one mesh) and a
//! client, started once the nodes know each other.
//!
//! The only polled condition is peer discovery (each node's `router.info` must list the
//! other nodes): announcements propagate asynchronously, so there is no event to wait on
//! from outside. The wait is bounded and says what it waited for.

use std::time::{Duration, Instant};

use cmesh_common::{Address, SigningKey};
use serde_json::{json, Value};

use crate::node::write_genesis;
use crate::{error_chain, new_key, Client, NatsServer, Node, NodeOptions, READY_TIMEOUT};

/// Longest wait for the nodes of a mesh to know each other.
pub const PEERS_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of a whole mesh: `nodes` nodes, all voters of its genesis, all sharing `node`.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub nodes: usize,
    pub node: NodeOptions,
}

impl MeshOptions {
    pub fn new(nodes: usize) -> Self {
        MeshOptions {
            nodes,
            node: NodeOptions::default(),
        }
    }

    pub fn mesh(mut self, name: &str) -> Self {
        self.node.mesh = Some(name.to_string());
        self
    }

    pub fn admin(mut self, address: Address) -> Self {
        self.node.admins.push(address);
        self
    }

    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.node.max_payload = Some(bytes);
        self
    }

    pub fn token_ttl(mut self, secs: u64) -> Self {
        self.node.token_ttl = Some(secs);
        self
    }

    pub fn challenge_ttl(mut self, secs: u64) -> Self {
        self.node.challenge_ttl = Some(secs);
        self
    }

    pub fn gas_limit(mut self, gas: u64) -> Self {
        self.node.gas_limit = Some(gas);
        self
    }

    pub fn memory_limit_mib(mut self, mib: u64) -> Self {
        self.node.memory_limit_mib = Some(mib);
        self
    }

    pub fn max_module_bytes(mut self, bytes: usize) -> Self {
        self.node.max_module_bytes = Some(bytes);
        self
    }
}

/// A nats-server and the nodes on it, with a client. Every node is a genesis voter; the
/// genesis admins are the options' admins and the harness's own probe key.
pub struct Mesh {
    pub nodes: Vec<Node>,
    pub client: Client,
    /// Identity the harness logs in with to read `router.info`; a mesh admin.
    probe_key: SigningKey,
    /// Holds the genesis file the nodes were started with.
    genesis: tempfile::TempDir,
    // Dropped last: nodes first, then the server.
    pub nats: NatsServer,
}

impl Mesh {
    pub async fn start(nodes: usize) -> Mesh {
        Mesh::with(MeshOptions::new(nodes)).await
    }

    pub async fn with(options: MeshOptions) -> Mesh {
        let nats = NatsServer::start();
        let url = nats.url();
        let probe_key = new_key();
        let genesis_dir = tempfile::tempdir().expect("a temp dir for the genesis");
        let genesis_path = genesis_dir.path().join("genesis.json");
        let mut node_options = options.node.clone();
        node_options.genesis = Some(genesis_path.clone());
        let mut nodes: Vec<Node> = (0..options.nodes)
            .map(|i| Node::prepare(i, &url, node_options.clone()))
            .collect();
        let mut admins = options.node.admins.clone();
        admins.push(probe_key.address());
        let name = options.node.mesh.as_deref().unwrap_or("cmesh");
        let voters: Vec<&std::path::Path> = nodes.iter().map(Node::data_dir).collect();
        write_genesis(&genesis_path, name, admins, &voters).unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        for node in &mut nodes {
            node.respawn();
        }
        for node in &mut nodes {
            node.wait_ready(READY_TIMEOUT).await;
        }
        let client = Client::connect(&url).await;
        let mesh = Mesh {
            nodes,
            client,
            probe_key,
            genesis: genesis_dir,
            nats,
        };
        mesh.wait_peers().await;
        mesh
    }

    /// Has the harness's probe key, a genesis admin, admit `node` to the mesh as `role`
    /// (`voter`, `learner` or `member`), through node 0: a node that joins the mesh after
    /// its start is no peer until then.
    pub async fn admit(&self, node: Address, role: &str) {
        let through = self.nodes[0].address();
        let token = self.client.login(&self.probe_key, through).await;
        let command = format!(r#"CW:admit:{{"node":"{node}","role":"{role}"}}"#);
        let reply = self.client.fqmn(through, &command, Some(&token)).await;
        assert_eq!(reply.status, 200, "admitting {node} as {role}: {}", reply.body);
    }

    /// The genesis file the nodes run with, for a node that joins this mesh later.
    pub fn genesis_path(&self) -> std::path::PathBuf {
        self.genesis.path().join("genesis.json")
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn addresses(&self) -> Vec<Address> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(Node::address)
            .collect()
    }

    /// The peers `node`'s `router.info` lists (logging in afresh each time, so short
    /// token lifetimes do not matter).
    async fn peers_of(&self, node: Address) -> Result<Vec<Address>, String> {
        let client = &self.client;
        let login = client
            .try_login(&self.probe_key, node)
            .await
            .map_err(|e| error_chain(&e))?;
        let info = client
            .try_call(node, "router.info", json!({}), Some(&login.token))
            .await
            .map_err(|e| error_chain(&e))?;
        let peers = info["peers"].as_array().ok_or(format!("router.info: {info}"))?;
        Ok(peers
            .iter()
            .filter_map(|p| p.get("address").and_then(Value::as_str).and_then(|a| a.parse().ok()))
            .collect())
    }

    /// Waits until every running node's `router.info` lists every other running node.
    pub async fn wait_peers(&self) {
        let addresses = self.addresses();
        if addresses.len() < 2 {
            return;
        }
        let deadline = Instant::now() + PEERS_TIMEOUT;
        for &node in &addresses {
            loop {
                let last = match self.peers_of(node).await {
                    Ok(peers) if addresses.iter().all(|a| *a == node || peers.contains(a)) => break,
                    Ok(peers) => format!("it lists {peers:?}"),
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    panic!(
                        "node {node} did not learn all of {addresses:?} within {PEERS_TIMEOUT:?} \
                         (announcements on cmesh.announce); last answer: {last}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Restarts node `i` on its data directory and waits until the mesh knows each
    /// other again.
    pub async fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart().await;
        self.wait_peers().await;
    }
}
