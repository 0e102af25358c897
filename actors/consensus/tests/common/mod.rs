//! A mesh of consensus nodes for the tests: in this process, on a real nats-server, each
//! node with its own NATS connection (optionally through its own proxy, to cut it off)
//! and its own redb file, so that a node can be stopped and started again from disk.

#![allow(dead_code)] // each test file uses its own part of the harness

pub mod linearizability;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use cmesh_common::genesis::Genesis;
use cmesh_common::{Address, SigningKey};
use cmesh_consensus::{Applied, Command, ConsensusNode, ConsensusSettings, Role};
use cmesh_testkit::{eventually, NatsServer, Proxy, EVENTUALLY};

pub struct Cluster {
    pub nats: NatsServer,
    pub genesis: Genesis,
    pub admin: SigningKey,
    dir: tempfile::TempDir,
    pub settings: ConsensusSettings,
    /// Every node started so far.
    pub slots: Vec<Slot>,
    /// The running node of each slot (`None` while stopped). Load runs through this view
    /// and takes a node for one call at a time, so that no old handle keeps a stopped
    /// node's database open.
    pub view: View,
}

pub struct Slot {
    pub key: SigningKey,
    pub proxy: Proxy,
}

#[derive(Clone, Default)]
pub struct View(Arc<RwLock<Vec<Option<ConsensusNode>>>>);

impl View {
    /// The running node of `slot`.
    pub fn get(&self, slot: usize) -> Option<ConsensusNode> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(slot)
            .cloned()
            .flatten()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn set(&self, slot: usize, node: Option<ConsensusNode>) -> Option<ConsensusNode> {
        let mut nodes = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if nodes.len() <= slot {
            nodes.resize(slot + 1, None);
        }
        std::mem::replace(&mut nodes[slot], node)
    }
}

/// Short timeouts, so that elections in the tests take a second, not three.
pub fn fast_settings() -> ConsensusSettings {
    ConsensusSettings {
        heartbeat: Duration::from_millis(100),
        election_min: Duration::from_millis(500),
        election_max: Duration::from_millis(1000),
        // Generous: a loaded CI machine answers late, and a late answer is not a fault.
        request_timeout: Duration::from_secs(10),
        ..ConsensusSettings::default()
    }
}

pub fn key() -> SigningKey {
    SigningKey::generate().expect("a key")
}

impl Cluster {
    /// `voters` genesis voters, started.
    pub async fn start(voters: usize, settings: ConsensusSettings) -> Cluster {
        let nats = NatsServer::start();
        let admin = key();
        let keys: Vec<SigningKey> = (0..voters).map(|_| key()).collect();
        let genesis = Genesis::new(
            "test",
            vec![admin.address()],
            keys.iter().map(|k| k.address()).collect(),
        )
        .expect("a genesis");
        let mut cluster = Cluster {
            nats,
            genesis,
            admin,
            dir: tempfile::tempdir().expect("a temp dir"),
            settings,
            slots: Vec::new(),
            view: View::default(),
        };
        for key in keys {
            cluster.add(key).await;
        }
        cluster
    }

    /// Starts a node with `key` (admitted or not) and gives its slot index.
    pub async fn add(&mut self, key: SigningKey) -> usize {
        let proxy = Proxy::start(self.nats.port()).await;
        self.slots.push(Slot { key, proxy });
        let index = self.slots.len() - 1;
        self.restart(index).await;
        index
    }

    /// Starts a node and has the genesis admin admit it as a member through `leader`;
    /// gives its slot index.
    pub async fn add_member(&mut self, leader: &ConsensusNode) -> usize {
        let index = self.add(key()).await;
        let admit = Command::Admit {
            node: self.slots[index].key.address(),
            role: Role::Member,
        };
        let admitted = leader.propose(admit, self.admin.address()).await.expect("committed");
        assert!(matches!(admitted, Applied::Done(_)), "{admitted:?}");
        index
    }

    /// Starts the node of `index` again from its file.
    pub async fn restart(&mut self, index: usize) {
        let slot = &self.slots[index];
        let url = slot.proxy.url();
        let path = self.dir.path().join(format!("{}.redb", slot.key.address()));
        let key = slot.key.clone();
        let genesis = self.genesis.clone();
        let settings = self.settings.clone();
        let node = eventually("the node to start (its file released)", EVENTUALLY, || {
            let (url, path, key, genesis, settings) = (
                url.clone(),
                path.clone(),
                key.clone(),
                genesis.clone(),
                settings.clone(),
            );
            async move {
                let client = async_nats::ConnectOptions::new()
                    .max_reconnects(None)
                    .connect(url)
                    .await
                    .ok()?;
                ConsensusNode::start(&genesis, key, &path, client, settings).await.ok()
            }
        })
        .await;
        self.view.set(index, Some(node));
    }

    /// Stops the node of `index` without any goodbye: Raft stops where it is.
    pub async fn kill(&mut self, index: usize) {
        if let Some(node) = self.view.set(index, None) {
            node.shutdown().await;
        }
    }

    pub fn node(&self, index: usize) -> ConsensusNode {
        self.view.get(index).expect("a running node")
    }

    pub fn running(&self) -> Vec<ConsensusNode> {
        (0..self.view.len()).filter_map(|i| self.view.get(i)).collect()
    }

    pub fn index_of(&self, address: Address) -> Option<usize> {
        self.slots.iter().position(|slot| slot.key.address() == address)
    }

    /// The leader that the running nodes agree on, once there is one.
    pub async fn leader(&self) -> usize {
        eventually("a leader", EVENTUALLY, || async {
            let running = self.running();
            let mut leaders = running.iter().map(|n| n.raft().metrics().borrow().current_leader);
            let first = leaders.next()??;
            let index = self.index_of(first)?;
            let agreed = leaders.all(|l| l == Some(first)) && self.view.get(index).is_some();
            agreed.then_some(index)
        })
        .await
    }

    /// Waits until every running node has applied the same last log index.
    pub async fn converged(&self) {
        eventually("the running nodes to apply the same log", EVENTUALLY, || async {
            let applied: Vec<_> = self
                .running()
                .iter()
                .map(|n| n.raft().metrics().borrow().last_applied.map(|l| l.index))
                .collect();
            applied.windows(2).all(|w| w[0] == w[1]).then_some(())
        })
        .await
    }
}

pub fn register(name: &str) -> Command {
    Command::Register {
        name: name.to_string(),
        target: "I:whoami".to_string(),
    }
}

pub fn names(node: &ConsensusNode) -> Vec<String> {
    node.replica().registry.names().map(|r| r.name.clone()).collect()
}
