//! The bench's voters: `ConsensusNode`s in this process, on the bench's NATS server, each
//! with its own NATS connection and its own redb file, so that one can be killed and
//! started again from its file — as a node process will run them, without the processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cmesh_common::genesis::Genesis;
use cmesh_common::SigningKey;
use cmesh_consensus::{ConsensusNode, ConsensusSettings};

/// How often the bench looks at the nodes' Raft metrics while it waits.
const POLL: Duration = Duration::from_millis(10);

pub(super) struct Voters {
    genesis: Genesis,
    keys: Vec<SigningKey>,
    dir: PathBuf,
    url: String,
    /// The running node of each voter; `None` while it is stopped. Nothing else keeps a
    /// clone for longer than one call, so that a stopped node's redb file is released.
    nodes: Vec<Option<ConsensusNode>>,
}

impl Voters {
    /// `count` genesis voters of a new mesh, started, their files under `dir`.
    pub(super) async fn start(url: &str, dir: &Path, count: usize) -> anyhow::Result<Voters> {
        let admin = SigningKey::generate()?;
        let keys = (0..count)
            .map(|_| SigningKey::generate())
            .collect::<Result<Vec<_>, _>>()?;
        let genesis = Genesis::new(
            "cmesh-bench",
            vec![admin.address()],
            keys.iter().map(|k| k.address()).collect(),
        )?;
        let mut voters = Voters {
            genesis,
            keys,
            dir: dir.to_path_buf(),
            url: url.to_string(),
            nodes: vec![None; count],
        };
        for i in 0..count {
            let node = voters.open(i).await?;
            voters.nodes[i] = Some(node);
        }
        Ok(voters)
    }

    async fn open(&self, i: usize) -> anyhow::Result<ConsensusNode> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("cmesh-bench-voter-{i}"))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting voter {i} to NATS at {}", self.url))?;
        let path = self.dir.join(format!("voter{i}.redb"));
        ConsensusNode::start(
            &self.genesis,
            self.keys[i].clone(),
            &path,
            client,
            ConsensusSettings::default(),
        )
        .await
        .with_context(|| format!("starting voter {i} from {}", path.display()))
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The running nodes, in voter order.
    pub(super) fn running(&self) -> Vec<ConsensusNode> {
        self.nodes.iter().flatten().cloned().collect()
    }

    /// The running nodes but voter `i`.
    pub(super) fn others(&self, i: usize) -> Vec<ConsensusNode> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, n)| n.clone())
            .collect()
    }

    /// The voter that every running node takes for the leader, once they agree on a
    /// running one.
    pub(super) async fn leader(&self, limit: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let mut leaders = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.raft().metrics().borrow().current_leader);
            if let Some(Some(first)) = leaders.next() {
                let index = self
                    .nodes
                    .iter()
                    .position(|n| n.as_ref().is_some_and(|n| n.address() == first));
                if let Some(index) = index.filter(|_| leaders.all(|l| l == Some(first))) {
                    return Ok(index);
                }
            }
            if Instant::now() > deadline {
                bail!("the running voters agreed on no leader within {limit:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops voter `i` where it is (Raft shut down, its tasks aborted), without goodbye.
    pub(super) async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
    }

    /// Starts voter `i` again from its file; a stopped node's tasks may still hold the
    /// file for a moment, so this retries until `limit`. Gives the attempts it took.
    pub(super) async fn restart(&mut self, i: usize, limit: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + limit;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.open(i).await {
                Ok(node) => {
                    self.nodes[i] = Some(node);
                    return Ok(attempts);
                }
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context(format!("voter {i} did not start again within {limit:?}")))
                }
                Err(error) => {
                    tracing::debug!(voter = i, attempts, error = format!("{error:#}"), "not started yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Waits until voter `i` has applied as far as the leader has.
    pub(super) async fn caught_up(&self, i: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let leader = self.leader(deadline.saturating_duration_since(Instant::now())).await?;
            let applied = |n: usize| {
                self.nodes[n]
                    .as_ref()
                    .and_then(|n| n.raft().metrics().borrow().last_applied.map(|l| l.index))
            };
            if applied(i).is_some() && applied(i) == applied(leader) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("voter {i} did not catch up with the leader within {limit:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops every running voter.
    pub(super) async fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}
