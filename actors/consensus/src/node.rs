//! One node's part in the mesh registry: its Raft (openraft, over [`crate::network`],
//! stored by [`crate::store`]), the server for its peers' requests, the leader's batcher
//! and the leader's membership upkeep.
//!
//! Why the registry drives Raft's membership: who is a voter or a learner is decided by
//! signed, admin-checked `admit` and `remove` entries, applied like every other command.
//! The leader then changes Raft's membership to match (joint consensus, through
//! openraft), so the registry is the one place where admission is decided.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cmesh_common::genesis::{Genesis, MeshId};
use cmesh_common::rpc::RequestProof;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, SigningKey};
use futures::StreamExt;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, EmptyNode, ServerState};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::command::{Command, Role};
use crate::entry::{EntryBody, EntryId, SignedEntry};
use crate::error::ConsensusError;
use crate::member::MemberView;
use crate::network::NatsNetwork;
use crate::query::{Answer, Answered, Consistency, Query, ReadInfo, Trust};
use crate::raft_types::{Batch, Raft};
use crate::registry::{Applied, Registry};
use crate::requester::{CallError, Requester};
use crate::settings::ConsensusSettings;
use crate::store::{self, MachineState, RegistryMachine};
use crate::wire::{
    node_subject, Committed, LeaderError, Proven, ReplyBody, RequestBody, Rpc, RpcReply, WireError, REQUEST_WINDOW_MS,
};

/// Largest signed registry entry taken, encoded. A command is small (a name of at most
/// 127 characters and a target of at most 1 KiB); the cap keeps a batch within a message.
pub const MAX_ENTRY_BYTES: usize = 8 * 1024;

/// What `C:status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsensusStatus {
    pub node: Address,
    /// This node's role in the registry (none: not admitted).
    pub role: Option<Role>,
    /// Its Raft state: leader, follower, candidate or learner.
    pub raft: String,
    pub leader: Option<Address>,
    pub term: u64,
    pub last_log: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub voters: Vec<Address>,
    pub learners: Vec<Address>,
}

/// A signed entry waiting at the leader, for its results and the log index of the Raft
/// entry that carried it.
struct Proposal {
    entry: SignedEntry,
    /// Its encoded size, measured once.
    bytes: usize,
    done: oneshot::Sender<Result<Committed, LeaderError>>,
}

/// A command waiting at its proposer to be signed with the others that wait with it.
struct Outgoing {
    body: EntryBody,
    /// Its encoded size, measured once.
    bytes: usize,
    done: oneshot::Sender<Result<Applied, ConsensusError>>,
}

/// A node of the mesh registry. Clones share the node.
#[derive(Clone)]
pub struct ConsensusNode {
    inner: Arc<Inner>,
}

struct Inner {
    address: Address,
    mesh: MeshId,
    key: SigningKey,
    raft: Raft,
    machine: RegistryMachine,
    requester: Arc<Requester>,
    /// To the leader's batcher (used when this node leads).
    proposals: mpsc::Sender<Proposal>,
    /// To this node's signer of its own proposals.
    outbox: mpsc::Sender<Outgoing>,
    settings: ConsensusSettings,
    /// When a leader's append was last taken here.
    leader_contact: Mutex<Option<Instant>>,
    /// Whom to trust and where the leader is, as replicas told this node while it holds
    /// no replica itself.
    member: MemberView,
    /// Raft peers its registry does not know, that the voters it knows vouched for.
    vouched: Mutex<Vouched>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A replica that lags behind an admission does not know the new voter (or learner),
/// and would refuse the very appends that would teach it: it asks the voters it knows
/// instead, and takes a peer that more than half of them name (see `ConsensusNode::vouch`).
#[derive(Default)]
struct Vouched {
    /// The peers the voters vouched for, and when: a vouch holds for `VOUCH_HOLDS`, and
    /// for a peer only until this replica's registry knows it.
    peers: std::collections::BTreeSet<Address>,
    at: Option<Instant>,
    /// When the voters were last asked (at most once per `VOUCH_EVERY`, whoever asks).
    last_ask: Option<Instant>,
}

/// How often a replica asks the voters about Raft peers it does not know.
const VOUCH_EVERY: Duration = Duration::from_secs(1);
/// How long the voters' word about them holds before they are asked again.
const VOUCH_HOLDS: Duration = Duration::from_secs(10);

impl ConsensusNode {
    /// Opens the store at `path`, starts Raft and serves peers on `client`. A genesis
    /// voter whose log is empty proposes the genesis membership (all genesis voters do
    /// the same, so it is one membership).
    pub async fn start(
        genesis: &Genesis,
        key: SigningKey,
        path: &Path,
        client: async_nats::Client,
        settings: ConsensusSettings,
    ) -> Result<ConsensusNode, ConsensusError> {
        let address = key.address();
        let mesh = genesis.mesh_id();
        let registry = Registry::from_genesis(genesis).map_err(|e| ConsensusError::Internal(e.to_string()))?;
        let (log, machine) = store::open(path, registry).map_err(|e| ConsensusError::Internal(e.to_string()))?;
        let config = settings
            .raft_config(mesh.to_string())
            .map_err(|e| ConsensusError::Internal(format!("consensus settings: {e}")))?;
        let requester = Arc::new(
            Requester::start(client.clone(), key.clone(), mesh)
                .await
                .map_err(|e| ConsensusError::Internal(e.to_string()))?,
        );
        let raft = Raft::new(
            address,
            Arc::new(config),
            NatsNetwork::new(requester.clone()),
            log,
            machine.clone(),
        )
        .await
        .map_err(|e| ConsensusError::Internal(format!("starting Raft: {e}")))?;
        let subscription = client
            .subscribe(node_subject(&mesh, &address))
            .await
            .map_err(|e| ConsensusError::Internal(format!("subscribing the consensus subject: {e}")))?;
        let (proposals, queue) = mpsc::channel(settings.batch_entries * 4);
        let (outbox, outgoing) = mpsc::channel(settings.batch_entries * 4);
        let node = ConsensusNode {
            inner: Arc::new(Inner {
                address,
                mesh,
                key,
                raft: raft.clone(),
                machine,
                requester,
                proposals,
                outbox,
                settings,
                leader_contact: Mutex::new(None),
                member: MemberView::default(),
                vouched: Mutex::default(),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let tasks = vec![
            tokio::spawn(serve(node.clone(), client, subscription)),
            tokio::spawn(run_batcher(node.clone(), queue)),
            tokio::spawn(run_outbox(node.clone(), outgoing)),
            tokio::spawn(keep_membership(node.clone())),
            tokio::spawn(refresh_member_view(node.clone())),
        ];
        node.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(tasks);
        if genesis.voters.contains(&address)
            && !raft
                .is_initialized()
                .await
                .map_err(|e| ConsensusError::Internal(e.to_string()))?
        {
            let voters: BTreeSet<Address> = genesis.voters.iter().copied().collect();
            match raft.initialize(voters).await {
                Ok(()) => info!(node = %address, "registry log started from the genesis voters"),
                Err(error) => debug!(node = %address, %error, "registry log already started"),
            }
        }
        info!(node = %address, %mesh, "consensus node started");
        Ok(node)
    }

    pub fn address(&self) -> Address {
        self.inner.address
    }

    pub fn mesh(&self) -> MeshId {
        self.inner.mesh
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The admitted nodes of this node's replica, updated as entries apply.
    pub fn watch_nodes(&self) -> tokio::sync::watch::Receiver<std::collections::BTreeMap<Address, Role>> {
        self.inner.machine.watch_nodes()
    }

    /// This node's replica, as applied so far (no consistency guarantee).
    pub fn replica(&self) -> std::sync::RwLockReadGuard<'_, MachineState> {
        self.inner.machine.read()
    }

    /// Has `command` committed as run by `caller`, signed by this node together with the
    /// other commands proposed meanwhile, and gives what it did.
    pub async fn propose(&self, command: Command, caller: Address) -> Result<Applied, ConsensusError> {
        self.propose_with_proof(command, caller, None).await
    }

    /// [`ConsensusNode::propose`], carrying the caller's signed request for the command
    /// when there is one: every replica then checks that the caller asked for it.
    pub async fn propose_with_proof(
        &self,
        command: Command,
        caller: Address,
        proof: Option<RequestProof>,
    ) -> Result<Applied, ConsensusError> {
        let id = match &proof {
            Some(proof) => EntryId::of_proof(proof),
            None => EntryId::random()
                .map_err(|e| ConsensusError::Internal(format!("no randomness for an entry id: {e}")))?,
        };
        let body = EntryBody {
            mesh: self.inner.mesh,
            command,
            caller,
            time_ms: unix_millis(),
            id,
            proof,
        };
        let size = encoded_len(&body);
        if size > MAX_ENTRY_BYTES {
            return Err(ConsensusError::TooLarge {
                size,
                max: MAX_ENTRY_BYTES,
            });
        }
        let (done, result) = oneshot::channel();
        let outgoing = Outgoing {
            body,
            bytes: size,
            done,
        };
        if self.inner.outbox.send(outgoing).await.is_err() {
            return Err(ConsensusError::Unavailable("the node is stopping".to_string()));
        }
        result
            .await
            .unwrap_or_else(|_| Err(ConsensusError::Unavailable("the node is stopping".to_string())))
    }

    /// Has a signed entry committed: by this node's batcher when it leads, else by the
    /// leader. Retries only where nothing can have been appended. One result per command.
    pub async fn submit(&self, entry: SignedEntry) -> Result<Vec<Applied>, ConsensusError> {
        let deadline = Instant::now() + self.inner.settings.request_timeout;
        let bytes = encoded_len(&entry);
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Out of time before sending: nothing was written, say so (not "fate unknown").
            if remaining.is_zero() {
                return Err(ConsensusError::NoLeader {
                    reason: "no leader took the write in time".to_string(),
                });
            }
            let outcome = if leader == self.inner.address {
                self.submit_here(entry.clone(), bytes).await
            } else {
                // A leader that dies with the write never answers: once Raft has another
                // leader the write's fate is unknown, and waiting out the timeout tells
                // the client nothing more.
                let mut metrics = self.inner.raft.metrics();
                let replaced = metrics.wait_for(|m| m.current_leader.is_some_and(|now| now != leader));
                let call = self
                    .inner
                    .requester
                    .call(leader, Rpc::Propose(entry.clone()), remaining);
                let answer = tokio::select! {
                    answer = call => answer,
                    _ = replaced => {
                        return Err(ConsensusError::FateUnknown {
                            reason: format!("the leader {leader} was replaced while it held the write"),
                        })
                    }
                };
                match answer {
                    Ok(RpcReply::Propose(result)) => result,
                    Ok(RpcReply::Refused(reason)) => {
                        return Err(ConsensusError::Unavailable(format!(
                            "{leader} refuses this node: {reason}"
                        )))
                    }
                    Ok(other) => {
                        return Err(ConsensusError::Internal(format!(
                            "{leader} answered a proposal with {other:?}"
                        )))
                    }
                    // Not delivered: safe to try again.
                    Err(CallError::NoResponders { .. } | CallError::Send { .. }) => {
                        Err(LeaderError::NotLeader { leader: None })
                    }
                    Err(error) => {
                        return Err(ConsensusError::FateUnknown {
                            reason: error.to_string(),
                        })
                    }
                }
            };
            match outcome {
                Ok(Committed { results, index }) if results.len() == entry.bodies.len() => {
                    self.wait_for_own_replica(index, deadline).await;
                    return Ok(results);
                }
                Ok(Committed { results, .. }) => {
                    return Err(ConsensusError::Internal(format!(
                        "{leader} gave {} results for {} commands",
                        results.len(),
                        entry.bodies.len()
                    )))
                }
                Err(LeaderError::NotLeader { leader: hint }) => {
                    debug!(?hint, "proposal: not the leader, trying again");
                    if Instant::now() >= deadline {
                        return Err(ConsensusError::NoLeader {
                            reason: "the leader changed and no new one took the write in time".to_string(),
                        });
                    }
                    self.changed_leader(leader, deadline).await;
                }
                Err(LeaderError::Unavailable(reason)) => return Err(ConsensusError::FateUnknown { reason }),
            }
        }
    }

    /// Read-your-writes on this node: a replica waits (until `deadline`) to have applied
    /// the entry that carried its own committed write, so that a local read sees it.
    async fn wait_for_own_replica(&self, index: u64, deadline: Instant) {
        let membership = self.inner.raft.metrics().borrow().membership_config.clone();
        let is_replica = membership
            .membership()
            .nodes()
            .any(|(node, _)| *node == self.inner.address);
        if !is_replica {
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Err(error) = self
            .inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "own write")
            .await
        {
            debug!(%error, index, "the write committed; this replica has not applied it yet");
        }
    }

    async fn submit_here(&self, entry: SignedEntry, bytes: usize) -> Result<Committed, LeaderError> {
        let (done, result) = oneshot::channel();
        if self
            .inner
            .proposals
            .send(Proposal { entry, bytes, done })
            .await
            .is_err()
        {
            return Err(LeaderError::Unavailable("the batcher stopped".to_string()));
        }
        // A leader cut off from its quorum does not know it yet, and its entries wait for
        // a commit that may never come (or may, if the quorum comes back): fate unknown.
        let limit = self.inner.settings.request_timeout;
        match tokio::time::timeout(limit, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(LeaderError::Unavailable("the batcher dropped the write".to_string())),
            Err(_) => Err(LeaderError::Unavailable(format!(
                "the leader could not commit within {limit:?}"
            ))),
        }
    }

    /// The current leader, waiting for one until `deadline`.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<Address, ConsensusError> {
        if !self.is_replica() {
            return self.member_leader(deadline).await;
        }
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow_and_update().current_leader {
                return Ok(leader);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ConsensusError::Unavailable("Raft stopped".to_string())),
                Err(_) => {
                    return Err(ConsensusError::NoLeader {
                        reason: "no leader elected".to_string(),
                    })
                }
            }
        }
    }

    /// Waits until the leader is no longer `former` (or a short while), before a retry.
    async fn changed_leader(&self, former: Address, deadline: Instant) {
        let mut metrics = self.inner.raft.metrics();
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(self.inner.settings.heartbeat * 2);
        let _ = tokio::time::timeout(wait, metrics.wait_for(|m| m.current_leader != Some(former))).await;
    }

    /// Whether this node holds a replica of the registry: Raft counts it as a voter or a
    /// learner, or its own registry says it is one (Raft's metrics name no members for a
    /// moment after a start). Otherwise (a member, or a node not yet added) it asks a
    /// replica.
    pub fn is_replica(&self) -> bool {
        let own = self.inner.machine.read().registry.role(&self.inner.address);
        if matches!(own, Some(Role::Voter | Role::Learner)) {
            return true;
        }
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let mut nodes = metrics.membership_config.membership().nodes();
        nodes.any(|(node, _)| *node == self.inner.address)
    }

    /// Runs `query` with the given consistency: on this node's replica, or (without one)
    /// on a replica that it asks.
    pub async fn query(&self, consistency: Consistency, query: Query) -> Result<(Answer, ReadInfo), ConsensusError> {
        if self.is_replica() {
            return self.read(consistency, |registry| query.run(registry)).await;
        }
        let deadline = Instant::now() + self.inner.settings.request_timeout;
        let answered = self.ask_replica(consistency, query, deadline).await?;
        Ok((answered.answer, answered.info))
    }

    /// An identity's mesh-wide attributes, as this node knows them.
    pub fn attributes(&self, address: &Address) -> Vec<String> {
        if self.is_replica() {
            self.inner.machine.read().registry.attributes(address)
        } else {
            self.inner.member.attributes(address)
        }
    }

    /// This node's role in the registry, as it knows it.
    fn own_role(&self) -> Option<Role> {
        let own = self.inner.machine.read().registry.role(&self.inner.address);
        own.or_else(|| self.inner.member.role(&self.inner.address))
    }

    /// Has the replicas this node knows run `query`, the leader first, until one answers.
    async fn ask_replica(
        &self,
        consistency: Consistency,
        query: Query,
        deadline: Instant,
    ) -> Result<Answered, ConsensusError> {
        let known = self.inner.machine.read().registry.nodes().clone();
        let mut why = Vec::new();
        for replica in self.inner.member.replicas(&known) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let rpc = Rpc::Query {
                consistency,
                query: query.clone(),
            };
            match self.inner.requester.call(replica, rpc, remaining).await {
                Ok(RpcReply::Query(Ok(answered))) => {
                    self.inner.member.learn_leader(answered.leader);
                    return Ok(answered);
                }
                Ok(RpcReply::Query(Err(reason)) | RpcReply::Refused(reason)) => {
                    why.push(format!("{replica}: {reason}"))
                }
                Ok(other) => why.push(format!("{replica} answered a query with {other:?}")),
                Err(error) => why.push(format!("{replica}: {error}")),
            }
        }
        Err(ConsensusError::Unavailable(format!(
            "this node holds no replica of the registry, and no replica answered it ({})",
            reasons(&why, "none known")
        )))
    }

    /// The leader for a node without a replica: the one a replica last named, else asks.
    async fn member_leader(&self, deadline: Instant) -> Result<Address, ConsensusError> {
        if let Some(leader) = self.inner.member.leader() {
            return Ok(leader);
        }
        if Instant::now() < deadline {
            self.refresh_member_view(deadline).await?;
        }
        self.inner.member.leader().ok_or_else(|| ConsensusError::NoLeader {
            reason: "no replica knows a leader".to_string(),
        })
    }

    /// Asks each of `nodes` at once whom it trusts (a `Local` `Query::Trust`); one reply
    /// each, in their order.
    async fn ask_trust(&self, nodes: &[Address], timeout: Duration) -> Vec<Result<RpcReply, CallError>> {
        let asks = nodes.iter().map(|node| {
            let rpc = Rpc::Query {
                consistency: Consistency::Local,
                query: Query::Trust,
            };
            self.inner.requester.call(*node, rpc, timeout)
        });
        futures::future::join_all(asks).await
    }

    /// Asks the voters whom to trust; tells the watchers of the admitted nodes if they
    /// changed.
    ///
    /// Every voter it knows is asked, and only a view that more than half of them give
    /// counts: one lying voter cannot feed a member a false one. (Right after a change the
    /// voters may differ for a moment; the view then stays as it was until the next ask.)
    async fn refresh_member_view(&self, deadline: Instant) -> Result<(), ConsensusError> {
        let known = self.inner.machine.read().registry.nodes().clone();
        let voters = self.inner.member.voters(&known);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let replies = self.ask_trust(&voters, remaining).await;
        let mut views: Vec<(Trust, usize, Option<Address>)> = Vec::new();
        let (mut not_admitted, mut why) = (0, Vec::new());
        for (voter, reply) in voters.iter().zip(replies) {
            match reply {
                Ok(RpcReply::Query(Ok(Answered {
                    answer: Answer::Trust(trust),
                    leader,
                    ..
                }))) => match views.iter_mut().find(|(view, _, _)| *view == trust) {
                    Some((_, count, named)) => {
                        *count += 1;
                        *named = named.or(leader);
                    }
                    None => views.push((trust, 1, leader)),
                },
                Ok(RpcReply::Refused(reason)) => {
                    not_admitted += usize::from(reason.contains(NOT_ADMITTED));
                    why.push(format!("{voter}: {reason}"));
                }
                Ok(other) => why.push(format!("{voter} answered a trust query with {other:?}")),
                Err(error) => why.push(format!("{voter}: {error}")),
            }
        }
        let majority = |count: usize| count * 2 > voters.len();
        if majority(not_admitted) && self.inner.member.forget(&self.inner.address) {
            // The voters' signed word that this node is not (or no longer) admitted.
            if let Some(nodes) = self.inner.member.nodes() {
                self.inner.machine.publish_nodes(nodes);
            }
        }
        let Some((trust, _, leader)) = views.into_iter().find(|(_, count, _)| majority(*count)) else {
            return Err(ConsensusError::Unavailable(format!(
                "no majority of the {} voters this node knows gave it the same view of the mesh ({})",
                voters.len(),
                reasons(&why, "they differ for now")
            )));
        };
        self.inner.member.learn_leader(leader);
        let nodes = trust.nodes.clone();
        if self.inner.member.learn(trust) {
            self.inner.machine.publish_nodes(nodes);
        }
        Ok(())
    }

    /// Runs `read` on the registry with the given consistency.
    pub async fn read<T>(
        &self,
        consistency: Consistency,
        read: impl FnOnce(&Registry) -> T,
    ) -> Result<(T, ReadInfo), ConsensusError> {
        if consistency == Consistency::Linearizable {
            self.catch_up_to_read_index().await?;
        }
        let state = self.inner.machine.read();
        let info = ReadInfo {
            applied: state.last_applied.map(|log_id| log_id.index),
            stale: self.is_stale(),
        };
        Ok((read(&state.registry), info))
    }

    /// Waits until this replica has applied everything committed when the read began.
    async fn catch_up_to_read_index(&self) -> Result<(), ConsensusError> {
        let deadline = Instant::now() + self.inner.settings.request_timeout;
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ConsensusError::NoLeader {
                    reason: "no leader gave a read index in time".to_string(),
                });
            }
            let index = if leader == self.inner.address {
                self.read_index_here().await
            } else {
                match self.inner.requester.call(leader, Rpc::ReadIndex, remaining).await {
                    Ok(RpcReply::ReadIndex(result)) => result,
                    Ok(RpcReply::Refused(reason)) => {
                        return Err(ConsensusError::Unavailable(format!(
                            "{leader} refuses this node: {reason}"
                        )))
                    }
                    Ok(other) => {
                        return Err(ConsensusError::Internal(format!(
                            "{leader} answered a read index with {other:?}"
                        )))
                    }
                    Err(error) => Err(LeaderError::NotLeader { leader: None })
                        .inspect_err(|_| debug!(%error, "read index: no answer from the leader")),
                }
            };
            match index {
                Ok(index) => {
                    let Some(index) = index.map(|log_id| log_id.index) else {
                        return Ok(());
                    };
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    return self
                        .inner
                        .raft
                        .wait(Some(remaining))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                        .map(|_| ())
                        .map_err(|e| ConsensusError::NoLeader {
                            reason: format!("this replica did not catch up with the leader: {e}"),
                        });
                }
                Err(LeaderError::NotLeader { .. }) if Instant::now() < deadline => {
                    self.changed_leader(leader, deadline).await;
                }
                Err(error) => {
                    return Err(ConsensusError::NoLeader {
                        reason: error.to_string(),
                    })
                }
            }
        }
    }

    async fn read_index_here(&self) -> Result<Option<crate::raft_types::LogId>, LeaderError> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => Err(LeaderError::NotLeader {
                leader: forward.leader_id,
            }),
            Err(error) => Err(LeaderError::Unavailable(error.to_string())),
        }
    }

    fn is_stale(&self) -> bool {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let limit = self.inner.settings.election_max;
        if metrics.state == ServerState::Leader {
            return metrics
                .millis_since_quorum_ack
                .is_none_or(|ms| Duration::from_millis(ms) > limit);
        }
        let contact = *self.inner.leader_contact.lock().unwrap_or_else(PoisonError::into_inner);
        contact.is_none_or(|at| at.elapsed() > limit)
    }

    pub async fn status(&self) -> ConsensusStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let committed = self
            .inner
            .raft
            .with_raft_state(|state| state.committed.map(|log_id| log_id.index))
            .await
            .unwrap_or(None);
        let membership = metrics.membership_config.membership();
        let raft = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "stopped",
        };
        ConsensusStatus {
            node: self.inner.address,
            role: self.own_role(),
            raft: raft.to_string(),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log: metrics.last_log_index,
            committed,
            applied: metrics.last_applied.map(|log_id| log_id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Stops Raft and the tasks of this node.
    pub async fn shutdown(&self) {
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        if let Err(error) = self.inner.raft.shutdown().await {
            warn!(%error, "Raft did not stop cleanly");
        }
    }
}

/// Answers the requests of peers on this node's subject.
async fn serve(node: ConsensusNode, client: async_nats::Client, mut requests: async_nats::Subscriber) {
    while let Some(message) = requests.next().await {
        let node = node.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let Some(reply_to) = message.reply.clone() else {
                return;
            };
            let Some(answer) = node.answer(&message.payload).await else {
                return;
            };
            let body = ReplyBody {
                request: answer.digest,
                from: node.inner.address,
                reply: answer.reply,
            };
            let keys = node.inner.requester.keys();
            match body.seal_for(keys, &answer.to, answer.with_mac) {
                Ok(bytes) => {
                    if let Err(error) = client.publish(reply_to, bytes.into()).await {
                        debug!(%error, "cannot send a consensus reply");
                    }
                }
                Err(error) => warn!(%error, "cannot sign a consensus reply"),
            }
        });
    }
}

/// A reply to send: to whom, for which request, and whether with a MAC (the request came
/// with one).
struct Answering {
    to: Address,
    digest: [u8; 32],
    with_mac: bool,
    reply: RpcReply,
}

impl ConsensusNode {
    /// The reply to one request; `None` when it is not for this node at all (unsigned,
    /// another mesh, another node), which gets no answer.
    async fn answer(&self, bytes: &[u8]) -> Option<Answering> {
        let keys = self.inner.requester.keys();
        let (request, digest, proven) = match RequestBody::open_with(bytes, keys) {
            Ok(opened) => opened,
            Err(WireError::UnknownPeer { from, digest }) => {
                debug!(%from, "a MAC under a key this node does not hold: asking for a signature");
                let reply = RpcReply::SignAgain;
                return Some(Answering {
                    to: from,
                    digest,
                    with_mac: false,
                    reply,
                });
            }
            Err(error) => {
                debug!(%error, "ignored a consensus request");
                return None;
            }
        };
        if request.mesh != self.inner.mesh || request.to != self.inner.address {
            debug!(from = %request.from, "ignored a consensus request for another mesh or node");
            return None;
        }
        let answering = |reply| {
            Some(Answering {
                to: request.from,
                digest,
                with_mac: proven.is_mac(),
                reply,
            })
        };
        if let Err(reason) = self.admits(&request) {
            warn!(from = %request.from, kind = request.rpc.kind(), %reason, "refused a consensus request");
            return answering(RpcReply::Refused(reason));
        }
        // Only the keys of admitted senders are kept: a stranger's signatures cannot
        // crowd the peers out of the table.
        if let Proven::Signed(public) = proven {
            keys.learn(request.from, &public);
        }
        let from = request.from;
        let reply = match request.rpc {
            Rpc::Append(append) => {
                let result = self.inner.raft.append_entries(append).await;
                if result.as_ref().is_ok_and(|response| response.is_success()) {
                    *self.inner.leader_contact.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                }
                RpcReply::Append(result)
            }
            Rpc::Vote(vote) => RpcReply::Vote(self.inner.raft.vote(vote).await),
            Rpc::Snapshot(chunk) => RpcReply::Snapshot(self.inner.raft.install_snapshot(chunk).await),
            Rpc::ReadIndex => RpcReply::ReadIndex(self.read_index_here().await),
            Rpc::Query { consistency, query } => RpcReply::Query(self.answer_query(consistency, query).await),
            Rpc::Propose(entry) => {
                if entry.proposer != from {
                    return answering(RpcReply::Refused(format!(
                        "an entry proposed by {} was sent by {from}",
                        entry.proposer
                    )));
                }
                let now = unix_millis();
                if let Some(ahead) = entry
                    .bodies
                    .iter()
                    .map(|body| body.time_ms.saturating_sub(now))
                    .find(|ahead| *ahead > MAX_CLOCK_AHEAD_MS)
                {
                    return answering(RpcReply::Refused(format!(
                        "an entry is dated {ahead} ms ahead of the leader's clock; at most {MAX_CLOCK_AHEAD_MS} ms \
                             are taken (check the proposer's clock)"
                    )));
                }
                let bytes = encoded_len(&entry);
                RpcReply::Propose(self.submit_here(entry, bytes).await)
            }
        };
        answering(reply)
    }

    /// A member's query, run on this node's replica.
    async fn answer_query(&self, consistency: Consistency, query: Query) -> Result<Answered, String> {
        // A node removed from Raft keeps the replica it applied up to its removal, and may
        // say what that holds, locally: a voter that comes back asks it whom to trust.
        let kept_replica =
            matches!(consistency, Consistency::Local) && self.inner.machine.read().last_applied.is_some();
        if !self.is_replica() && !kept_replica {
            return Err(format!("{} holds no replica of the registry", self.inner.address));
        }
        let (answer, info) = self
            .read(consistency, |registry| query.run(registry))
            .await
            .map_err(|e| e.to_string())?;
        let leader = self.inner.raft.metrics().borrow().current_leader;
        Ok(Answered { answer, info, leader })
    }

    /// Whether `request` counts: recent, and from a node the registry admits (Raft's own
    /// messages only from voters and learners, from a removed leader finishing its term,
    /// or from a peer the voters vouched for).
    fn admits(&self, request: &RequestBody) -> Result<(), String> {
        let now = unix_millis();
        if request.time_ms.abs_diff(now) > REQUEST_WINDOW_MS {
            return Err(format!(
                "the request is dated {} ms from this node's clock; at most {REQUEST_WINDOW_MS} ms are taken",
                request.time_ms.abs_diff(now)
            ));
        }
        let role = self.inner.machine.read().registry.role(&request.from);
        let raft = request.rpc.is_raft();
        match role {
            Some(Role::Voter | Role::Learner) => Ok(()),
            Some(Role::Member) if !raft => Ok(()),
            _ if raft && (self.finishing_its_term(request) || self.vouched(&request.from)) => Ok(()),
            _ => {
                if raft && self.is_replica() {
                    self.ask_for_vouch();
                }
                Err(match role {
                    None => format!("{} {NOT_ADMITTED} {}", request.from, self.inner.mesh),
                    Some(_) => format!(
                        "{} is a member of mesh {}, not a Raft voter or learner",
                        request.from, self.inner.mesh
                    ),
                })
            }
        }
    }

    /// Whether `request` is an append from the leader this node follows, for the term it
    /// follows it in, and that leader is still in Raft's membership. The registry removes
    /// a node before the membership change that takes it out of Raft commits, and a
    /// removed leader must finish that change (without this, a leader that removed its
    /// peers stalled). Nothing else counts from it: no vote, no append of a later term,
    /// so it cannot take the lead again.
    fn finishing_its_term(&self, request: &RequestBody) -> bool {
        let Rpc::Append(append) = &request.rpc else {
            return false;
        };
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = append.vote.leader_id();
        metrics.current_leader == Some(request.from)
            && leader.voted_for() == Some(request.from)
            && leader.get_term() == metrics.current_term
            && metrics
                .membership_config
                .membership()
                .nodes()
                .any(|(node, _)| *node == request.from)
    }

    /// Whether the voters vouched for `peer` lately and this registry has not known it
    /// since: once it does, the registry is in charge of it for good (a removal it
    /// applies later is not undone by the earlier vouch).
    fn vouched(&self, peer: &Address) -> bool {
        let mut vouched = self.inner.vouched.lock().unwrap_or_else(PoisonError::into_inner);
        if !vouched.peers.contains(peer) {
            return false;
        }
        if self.inner.machine.read().registry.role(peer).is_some() {
            vouched.peers.remove(peer);
            return false;
        }
        vouched.at.is_some_and(|at| at.elapsed() < VOUCH_HOLDS)
    }

    /// Has the voters asked whom they admit, if this replica has lost its leader (one that
    /// follows a leader has no need: a newcomer's appends come once it leads) and they were
    /// not asked in the last `VOUCH_EVERY`, whoever sent: a stranger's messages can make
    /// it ask no more often than that, and the answer serves every peer at once.
    fn ask_for_vouch(&self) {
        if !self.is_stale() {
            return;
        }
        {
            let mut vouched = self.inner.vouched.lock().unwrap_or_else(PoisonError::into_inner);
            if vouched.last_ask.is_some_and(|at| at.elapsed() < VOUCH_EVERY) {
                return;
            }
            vouched.last_ask = Some(Instant::now());
        }
        let node = self.clone();
        tokio::spawn(async move { node.vouch().await });
    }

    /// Asks the other voters of this node's registry whom they admit, and takes as Raft
    /// peers the voters and learners that more than half of all its voters name: the same
    /// majority that Raft itself trusts. One lying voter cannot make a stranger a peer.
    async fn vouch(&self) {
        let nodes = self.inner.machine.read().registry.nodes().clone();
        let voters: Vec<Address> = nodes
            .iter()
            .filter(|(_, role)| **role == Role::Voter)
            .map(|(voter, _)| *voter)
            .collect();
        let others: Vec<Address> = voters
            .iter()
            .copied()
            .filter(|voter| *voter != self.inner.address)
            .collect();
        let replies = self.ask_trust(&others, self.inner.settings.request_timeout).await;
        let mut named: std::collections::BTreeMap<Address, usize> = std::collections::BTreeMap::new();
        for reply in &replies {
            if let Ok(RpcReply::Query(Ok(Answered {
                answer: Answer::Trust(trust),
                ..
            }))) = reply
            {
                for (peer, role) in &trust.nodes {
                    if matches!(role, Role::Voter | Role::Learner) && !nodes.contains_key(peer) {
                        *named.entry(*peer).or_default() += 1;
                    }
                }
            }
        }
        let peers: std::collections::BTreeSet<Address> = named
            .into_iter()
            .filter(|(_, count)| count * 2 > voters.len())
            .map(|(peer, _)| peer)
            .collect();
        if !peers.is_empty() {
            info!(
                ?peers,
                voters = voters.len(),
                "the voters vouch for Raft peers this replica does not know yet"
            );
        }
        let mut vouched = self.inner.vouched.lock().unwrap_or_else(PoisonError::into_inner);
        *vouched = Vouched {
            peers,
            at: Some(Instant::now()),
            last_ask: vouched.last_ask,
        };
    }
}

/// How far ahead of the leader's clock a proposed entry may be dated. The registry's
/// clock is the latest entry time it applied, and an entry older than the replay window
/// behind it is stale: without this bound one admitted node with a fast clock (or a
/// liar) could make every other node's entries stale.
pub const MAX_CLOCK_AHEAD_MS: u64 = 30_000;

/// What the nodes asked said, or `otherwise` when none said anything.
fn reasons(why: &[String], otherwise: &str) -> String {
    if why.is_empty() {
        otherwise.to_string()
    } else {
        why.join("; ")
    }
}

/// How a refusal says that the sender is not admitted (a member learns so from it).
const NOT_ADMITTED: &str = "is not admitted to mesh";

/// Signs the commands waiting at this node together and has them committed, a few
/// signed entries in flight at once.
async fn run_outbox(node: ConsensusNode, mut outbox: mpsc::Receiver<Outgoing>) {
    let settings = node.inner.settings.clone();
    let in_flight = Arc::new(Semaphore::new(settings.batches_in_flight.max(1)));
    let limits = (settings.batch_entries, settings.batch_bytes);
    while let Some((permit, waiting)) = next_batch(&mut outbox, &in_flight, limits, |o| o.bytes).await {
        let node = node.clone();
        tokio::spawn(async move {
            let (bodies, done): (Vec<_>, Vec<_>) = waiting.into_iter().map(|o| (o.body, o.done)).unzip();
            let entry = SignedEntry::sign(bodies, &node.inner.key);
            match node.submit(entry).await {
                Ok(results) => {
                    for (done, applied) in done.into_iter().zip(results) {
                        let _ = done.send(Ok(applied));
                    }
                }
                Err(error) => {
                    for done in done {
                        let _ = done.send(Err(error.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Packs the signed entries waiting at the leader into Raft entries, a few in flight.
async fn run_batcher(node: ConsensusNode, mut queue: mpsc::Receiver<Proposal>) {
    let settings = node.inner.settings.clone();
    let in_flight = Arc::new(Semaphore::new(settings.batches_in_flight.max(1)));
    let limits = (usize::MAX, settings.batch_bytes);
    while let Some((permit, batch)) = next_batch(&mut queue, &in_flight, limits, |p| p.bytes).await {
        let raft = node.inner.raft.clone();
        tokio::spawn(async move {
            let counts: Vec<usize> = batch.iter().map(|p| p.entry.bodies.len()).collect();
            let (entries, waiting): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.entry, p.done)).unzip();
            match raft.client_write(Batch(entries)).await {
                Ok(response) => {
                    let index = response.log_id.index;
                    let mut results = response.data.0.into_iter();
                    for (done, count) in waiting.into_iter().zip(counts) {
                        let results: Vec<Applied> = results.by_ref().take(count).collect();
                        let _ = done.send(Ok(Committed { results, index }));
                    }
                }
                Err(error) => {
                    let error = match error {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => LeaderError::NotLeader {
                            leader: forward.leader_id,
                        },
                        other => LeaderError::Unavailable(other.to_string()),
                    };
                    for done in waiting {
                        let _ = done.send(Err(error.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Waits for a permit, then for the first item, then takes whatever else already waits,
/// up to `max_items` items and until `max_bytes` are reached. The permit first: while
/// earlier batches are in flight, items gather into a larger one. `None` once the queue
/// or the permits are gone.
async fn next_batch<T>(
    queue: &mut mpsc::Receiver<T>,
    in_flight: &Arc<Semaphore>,
    (max_items, max_bytes): (usize, usize),
    bytes_of: impl Fn(&T) -> usize,
) -> Option<(OwnedSemaphorePermit, Vec<T>)> {
    let permit = in_flight.clone().acquire_owned().await.ok()?;
    let first = queue.recv().await?;
    let mut bytes = bytes_of(&first);
    let mut batch = vec![first];
    while batch.len() < max_items && bytes < max_bytes {
        match queue.try_recv() {
            Ok(next) => {
                bytes += bytes_of(&next);
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    Some((permit, batch))
}

fn encoded_len<T: Serialize>(value: &T) -> usize {
    rmp_serde::to_vec_named(value)
        .map(|b| b.len())
        .unwrap_or(MAX_ENTRY_BYTES)
}

/// On the leader: keeps Raft's voters and learners equal to the registry's.
async fn keep_membership(node: ConsensusNode) {
    let mut nodes = node.inner.machine.watch_nodes();
    let mut metrics = node.inner.raft.metrics();
    loop {
        let is_leader = metrics.borrow_and_update().state == ServerState::Leader;
        if is_leader {
            if let Err(error) = reconcile(&node).await {
                warn!(%error, "cannot bring Raft's membership in line with the registry yet");
            }
        }
        tokio::select! {
            changed = nodes.changed() => if changed.is_err() { return },
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn reconcile(node: &ConsensusNode) -> Result<(), String> {
    let raft = &node.inner.raft;
    let (voters, learners): (BTreeSet<Address>, BTreeSet<Address>) = {
        let state = node.inner.machine.read();
        let nodes = state.registry.nodes();
        (
            nodes
                .iter()
                .filter(|(_, r)| **r == Role::Voter)
                .map(|(a, _)| *a)
                .collect(),
            nodes
                .iter()
                .filter(|(_, r)| **r == Role::Learner)
                .map(|(a, _)| *a)
                .collect(),
        )
    };
    let membership = raft.metrics().borrow().membership_config.clone();
    let current_voters: BTreeSet<Address> = membership.membership().voter_ids().collect();
    let current_nodes: BTreeSet<Address> = membership.membership().nodes().map(|(a, _)| *a).collect();
    let timeout = node.inner.settings.request_timeout;
    for new in voters
        .iter()
        .chain(learners.iter())
        .filter(|a| !current_nodes.contains(a))
    {
        info!(node = %new, "adding to Raft as a learner");
        // Blocking: a voter-to-be catches up before it counts towards a quorum.
        let blocking = voters.contains(new);
        tokio::time::timeout(timeout, raft.add_learner(*new, EmptyNode {}, blocking))
            .await
            .map_err(|_| format!("{new} did not catch up within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
    }
    if voters != current_voters {
        info!(?voters, "changing Raft's voters");
        raft.change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false)
            .await
            .map_err(|e| e.to_string())?;
    }
    let membership = raft.metrics().borrow().membership_config.clone();
    let gone: BTreeSet<Address> = membership
        .membership()
        .learner_ids()
        .filter(|a| !learners.contains(a) && !voters.contains(a))
        .collect();
    if !gone.is_empty() {
        info!(?gone, "removing from Raft");
        raft.change_membership(ChangeMembers::RemoveNodes(gone), false)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// While this node holds no replica: asks a replica whom to trust, every `member_refresh`.
/// Says once (until it changes) when the replicas refuse it or do not admit it.
async fn refresh_member_view(node: ConsensusNode) {
    let mut said = None;
    loop {
        let refresh = node.inner.settings.member_refresh;
        if !node.is_replica() {
            let trouble = match node
                .refresh_member_view(Instant::now() + refresh.max(Duration::from_secs(1)))
                .await
            {
                Err(error) => Some(error.to_string()),
                Ok(()) if node.own_role().is_none() => Some(format!(
                    "this node is not admitted to mesh {}: a mesh admin admits it with mesh.admit",
                    node.inner.mesh
                )),
                Ok(()) => None,
            };
            if trouble.is_some() && trouble != said {
                warn!(node = %node.inner.address, reason = trouble.as_deref().unwrap_or_default(), "the mesh registry does not serve this node");
            }
            said = trouble;
        }
        tokio::time::sleep(refresh).await;
    }
}
