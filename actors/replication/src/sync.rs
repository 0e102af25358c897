//! Catching a context up from one member: the same steps serve a joining node, a node
//! that restarted or lost broadcasts, and a transaction that arrived before its parents.
//!
//! 1. Ask a member (any, or a given one) for its state: heads, per-author seqs, members.
//! 2. Joining: fetch the genesis and, if this node lacks it, the app's module (checked
//!    against the app id, its keccak256), then start the context from the genesis.
//! 3. Page through what this node lacks, in the member's apply order (parents first),
//!    fetching the next page while the current one is checked and applied.
//! 4. Fetch the member's heads this node still lacks by id, and their missing parents,
//!    round by round: paging by seq cannot see an equivocator's second transaction with
//!    the same seq; asking for the heads can.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use cmesh_common::genesis::MeshId;
use cmesh_common::hash::keccak256;
use cmesh_common::{Address, CmtpError, SigningKey, Status};
use cmesh_events::{Emit, EventsActor};
use cmesh_state::tx::{Op, VerifiedTx};
use cmesh_state::{
    AppCode, Deploy, GetSyncState, Id, Lacking, OrderKey, Receive, ReceiveReport, StateActor, StateError, SyncState,
};
use futures::channel::oneshot;
use futures::StreamExt;
use serde_json::json;

use crate::bus::{Bus, BusError};
use crate::error::ReplicationError;
use crate::responder::MAX_FETCH_IDS;
use crate::settings::{span, Settings};
use crate::verify::{self, Rejected, TxVerifier};
use crate::wire::{self, Answer, Query, Reply, SyncRequest};

/// Rounds of fetching heads and their missing parents by id.
const FETCH_ROUNDS: usize = 64;

/// Everything a node needs to talk to members and hand their transactions to its state.
#[derive(Clone)]
pub struct Link {
    /// The mesh this node is of: its sync requests name it, and it answers only those
    /// that name it too.
    pub mesh: MeshId,
    pub bus: Arc<dyn Bus>,
    pub key: Arc<SigningKey>,
    pub state: Addr<StateActor>,
    pub verifier: Addr<TxVerifier>,
    pub threads: usize,
    pub events: Option<Addr<EventsActor>>,
    /// The largest message the bus takes.
    pub max_payload: usize,
    pub settings: Settings,
}

/// What a member said about a context.
#[derive(Debug, Clone)]
pub struct Remote {
    pub node: Address,
    pub heads: Vec<Id>,
    pub seqs: Vec<(Address, u64)>,
    pub applied: u64,
    pub root: Id,
}

/// How far a catch-up got, reported as it goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub fetched: u64,
    pub expected: u64,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub peer: Address,
    /// The progress last reported.
    pub progress: Progress,
    pub added: u64,
}

/// What became of checked and received transactions.
#[derive(Debug, Default)]
pub struct Delivered {
    pub report: ReceiveReport,
    /// Refused before the DAG (decoding, signature, wrong context).
    pub rejected: Vec<Rejected>,
    /// The checked transactions still waiting for parents, by id.
    pub waiting: HashMap<Id, VerifiedTx>,
}

/// A broadcast batch's place among its context's: its transactions reach the state actor
/// after those of the batches that arrived before it, whichever is checked first. (A
/// member's transaction usually names another member's that arrived just before it;
/// handed over in the wrong order, it would wait for that parent and start a catch-up.)
pub struct Turn {
    /// Fires once the batch before has been handed over.
    pub after: Option<oneshot::Receiver<()>>,
    /// Fired once this one has.
    pub then: oneshot::Sender<()>,
}

impl Turn {
    /// The next turn after `last` (the previous batch's signal, replaced by this one's).
    pub fn next(last: &mut Option<oneshot::Receiver<()>>) -> Turn {
        let (then, after_this) = oneshot::channel();
        Turn {
            after: last.replace(after_this),
            then,
        }
    }
}

/// Transactions that passed the checks that need no state, and those refused.
#[derive(Default)]
struct Verified {
    txs: Vec<VerifiedTx>,
    rejected: Vec<Rejected>,
}

fn mailbox(what: &'static str) -> impl Fn(actix::MailboxError) -> ReplicationError {
    move |_| ReplicationError::Gone(what)
}

impl Link {
    pub fn node(&self) -> Address {
        self.key.address()
    }

    /// Asks `member` (or any member, the first that answers well) about `context`.
    pub async fn ask(&self, context: Id, member: Option<Address>, query: Query) -> Result<Reply, ReplicationError> {
        let request = SyncRequest::new(&self.key, self.mesh, context, query)?;
        let payload = Bytes::from(wire::encode(&request)?);
        match member {
            Some(member) => {
                let subject = wire::sync_subject(&context, Some(&member));
                let timeout = self.settings.request_timeout;
                let message = match self.bus.request(subject, payload, timeout).await {
                    Err(BusError::TimedOut(_)) => {
                        return Err(ReplicationError::NoMember(format!(
                            "member {member} did not answer within {}",
                            span(timeout)
                        )))
                    }
                    Err(BusError::NoResponders(_)) => {
                        return Err(ReplicationError::NoMember(format!("member {member} is not online")))
                    }
                    Err(e) => return Err(e.into()),
                    Ok(message) => message,
                };
                wire::decode::<Answer>(&message.payload)?.map_err(ReplicationError::Refused)
            }
            None => self.ask_any(context, payload).await,
        }
    }

    /// Publishes to every member and takes the first good answer; refusals count only if
    /// nobody answers well (a member that has not yet seen an invitation refuses it).
    async fn ask_any(&self, context: Id, payload: Bytes) -> Result<Reply, ReplicationError> {
        let inbox = self.bus.new_inbox();
        let mut answers = self.bus.subscribe(inbox.clone()).await?;
        self.bus
            .publish_request(wire::sync_subject(&context, None), inbox, payload)
            .await?;
        let wait = self.settings.discover_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let mut refusal: Option<CmtpError> = None;
        loop {
            let message = match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => break,
            };
            match wire::decode::<Answer>(&message.payload) {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(refused)) => {
                    // The most telling refusal: "not a member" over "not found".
                    if refusal.as_ref().is_none_or(|r| r.status != Status::FORBIDDEN) {
                        refusal = Some(refused);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ignored a malformed sync answer"),
            }
        }
        Err(match refusal {
            Some(refused) => ReplicationError::Refused(refused),
            None => ReplicationError::NoMember(format!(
                "no other member of context {context} answered within {}",
                span(wait)
            )),
        })
    }

    pub async fn remote_state(&self, context: Id, member: Option<Address>) -> Result<Remote, ReplicationError> {
        match self.ask(context, member, Query::State).await? {
            Reply::State {
                node,
                heads,
                seqs,
                applied,
                root,
                ..
            } => Ok(Remote {
                node,
                heads,
                seqs,
                applied,
                root,
            }),
            other => Err(unexpected("State", &other)),
        }
    }

    async fn local_state(&self, context: Id) -> Result<Option<SyncState>, ReplicationError> {
        match self
            .state
            .send(GetSyncState { context })
            .await
            .map_err(mailbox("state"))?
        {
            Ok(state) => Ok(Some(state)),
            Err(StateError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a broadcast batch on the verifier pool and hands the good transactions to
    /// the state actor in `turn`.
    pub async fn deliver(&self, context: Id, encoded: Vec<Vec<u8>>, turn: Turn) -> Result<Delivered, ReplicationError> {
        let verified = self.check(context, encoded).await?;
        self.hand_over(context, verified, false, Some(turn)).await
    }

    /// Checks `encoded` transactions on the verifier pool and hands the good ones to the
    /// state actor, together with `checked` ones (that waited for parents), which are not
    /// checked again. `joining`: the context may start from its genesis among them.
    pub async fn deliver_with(
        &self,
        context: Id,
        encoded: Vec<Vec<u8>>,
        checked: Vec<VerifiedTx>,
        joining: bool,
    ) -> Result<Delivered, ReplicationError> {
        let mut verified = self.check(context, encoded).await?;
        verified.txs.extend(checked);
        self.hand_over(context, verified, joining, None).await
    }

    /// Checks encoded transactions on the verifier pool; says which were refused.
    async fn check(&self, context: Id, encoded: Vec<Vec<u8>>) -> Result<Verified, ReplicationError> {
        let results = verify::check_all(&self.verifier, self.threads, context, encoded)
            .await
            .map_err(mailbox("transaction verifier"))?;
        let mut verified = Verified::default();
        for result in results {
            match result {
                Ok(tx) => verified.txs.push(tx),
                Err(rejected) => verified.rejected.push(rejected),
            }
        }
        self.report_rejected(context, &verified.rejected);
        Ok(verified)
    }

    /// Hands checked transactions to the state actor, after the batches before `turn`.
    async fn hand_over(
        &self,
        context: Id,
        verified: Verified,
        joining: bool,
        turn: Option<Turn>,
    ) -> Result<Delivered, ReplicationError> {
        let Verified { txs, rejected } = verified;
        let mut delivered = Delivered {
            rejected,
            ..Delivered::default()
        };
        let mut by_id: HashMap<Id, VerifiedTx> = txs.iter().map(|tx| (tx.id(), tx.clone())).collect();
        let mut turn = turn;
        if let Some(before) = turn.as_mut().and_then(|turn| turn.after.take()) {
            // A batch given up on (its task gone) counts as handed over.
            let _ = before.await;
        }
        // `send` queues the message at once; the answer comes later.
        let request = (!txs.is_empty()).then(|| {
            self.state.send(Receive {
                txs,
                joining: joining.then_some(context),
            })
        });
        if let Some(turn) = turn {
            let _ = turn.then.send(());
        }
        if let Some(request) = request {
            delivered.report = request.await.map_err(mailbox("state"))??;
        }
        for (id, _) in &delivered.report.missing {
            if let Some(tx) = by_id.remove(id) {
                delivered.waiting.insert(*id, tx);
            }
        }
        Ok(delivered)
    }

    /// Says on the events bus which transactions were refused before the DAG, and why.
    pub fn report_rejected(&self, context: Id, rejected: &[Rejected]) {
        if rejected.is_empty() {
            return;
        }
        tracing::warn!(%context, count = rejected.len(), first = %rejected[0].reason, "refused received transactions");
        if let Some(events) = &self.events {
            let transactions: Vec<_> = rejected
                .iter()
                .map(|r| json!({ "tx": r.id, "reason": r.reason }))
                .collect();
            events.do_send(Emit::new(
                "state",
                "invalid",
                Vec::new(),
                json!({ "context": context, "transactions": transactions }),
            ));
        }
    }

    /// Catches `context` up from `member` (any member if `None`).
    pub async fn catch_up(
        &self,
        context: Id,
        member: Option<Address>,
        joining: bool,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Outcome, ReplicationError> {
        let remote = self.remote_state(context, member).await?;
        let peer = remote.node;
        let local = match self.local_state(context).await? {
            Some(local) => local,
            None if joining => {
                self.start_from_genesis(context, peer).await?;
                self.local_state(context)
                    .await?
                    .ok_or_else(|| ReplicationError::NotFound(format!("context {context} did not start")))?
            }
            None => {
                return Err(ReplicationError::NotFound(format!(
                    "context {context} is not held here"
                )))
            }
        };
        let mut status = Progress {
            fetched: 0,
            expected: remote.applied.saturating_sub(local.applied),
        };
        progress(status);
        let mut outcome = Outcome {
            peer,
            progress: status,
            added: 0,
        };
        let mut waiting: HashMap<Id, VerifiedTx> = HashMap::new();
        if local.heads != remote.heads {
            let have = &local.seqs;
            // While one page is applied, the next is fetched and checked.
            let fetch_checked = |after| async move {
                let (txs, next) = self.page(context, peer, have, after).await?;
                let count = txs.len() as u64;
                Ok::<_, ReplicationError>((self.check(context, txs).await?, count, next))
            };
            let mut page = fetch_checked(None).await?;
            loop {
                let (verified, count, next) = page;
                let prefetch = async {
                    match next {
                        Some(after) => Some(fetch_checked(Some(after)).await),
                        None => None,
                    }
                };
                let (delivered, upcoming) = futures::join!(self.hand_over(context, verified, joining, None), prefetch);
                let delivered = delivered?;
                outcome.added += delivered.report.added.len() as u64;
                waiting.extend(delivered.waiting);
                status.fetched += count;
                status.expected = status.expected.max(status.fetched);
                progress(status);
                match upcoming {
                    Some(next_page) => page = next_page?,
                    None => break,
                }
            }
        }
        outcome.added += self.fetch_lacking(context, peer, remote.heads, waiting).await?;
        outcome.progress = status;
        Ok(outcome)
    }

    async fn page(
        &self,
        context: Id,
        peer: Address,
        have: &[(Address, u64)],
        after: Option<OrderKey>,
    ) -> Result<(Vec<Vec<u8>>, Option<OrderKey>), ReplicationError> {
        let query = Query::Page {
            have: have.to_vec(),
            after,
            limit: self.settings.page_limit,
        };
        match self.ask(context, Some(peer), query).await? {
            Reply::Page { txs, next } => Ok((txs.into_iter().map(|tx| tx.into_vec()).collect(), next)),
            other => Err(unexpected("Page", &other)),
        }
    }

    /// Fetches `ids` this node lacks, then the parents they wait for (and those that
    /// `waiting` transactions wait for), until nothing is missing or the member has
    /// nothing more to give. Answers how many were added.
    async fn fetch_lacking(
        &self,
        context: Id,
        peer: Address,
        ids: Vec<Id>,
        mut waiting: HashMap<Id, VerifiedTx>,
    ) -> Result<u64, ReplicationError> {
        let mut added = 0;
        let mut wanted = ids;
        let mut asked: HashSet<Id> = HashSet::new();
        for _ in 0..FETCH_ROUNDS {
            wanted.retain(|id| !waiting.contains_key(id) && !asked.contains(id));
            let lacking = if wanted.is_empty() {
                Vec::new()
            } else {
                self.state
                    .send(Lacking { context, ids: wanted })
                    .await
                    .map_err(mailbox("state"))??
            };
            if lacking.is_empty() && waiting.is_empty() {
                break;
            }
            asked.extend(lacking.iter().copied());
            let mut encoded: Vec<Vec<u8>> = Vec::new();
            for chunk in lacking.chunks(MAX_FETCH_IDS) {
                match self
                    .ask(context, Some(peer), Query::Fetch { ids: chunk.to_vec() })
                    .await?
                {
                    Reply::Txs { txs } => encoded.extend(txs.into_iter().map(|tx| tx.into_vec())),
                    other => return Err(unexpected("Txs", &other)),
                }
            }
            let fetched_any = !encoded.is_empty();
            let checked = waiting.drain().map(|(_, tx)| tx).collect();
            let delivered = self.deliver_with(context, encoded, checked, false).await?;
            added += delivered.report.added.len() as u64;
            wanted = delivered
                .report
                .missing
                .iter()
                .flat_map(|(_, parents)| parents.iter().copied())
                .collect();
            waiting = delivered.waiting;
            // Stop when a round brought nothing and there is nothing new to ask for.
            let new_wants = wanted.iter().any(|id| !asked.contains(id));
            if !fetched_any && delivered.report.added.is_empty() && !new_wants {
                break;
            }
        }
        Ok(added)
    }

    /// Waits until another member holds `tx` (it had the broadcast, or fetched it after
    /// a heads notice), for at most [`Settings::confirm_limit`]; not needed if this node is the
    /// context's only member. What a leaving node says must outlive its copy.
    pub async fn confirm_held(&self, context: Id, tx: Id) -> Result<(), ReplicationError> {
        let alone = self
            .local_state(context)
            .await?
            .is_some_and(|state| state.members.iter().all(|m| m.member == self.node()));
        if alone {
            return Ok(());
        }
        let limit = self.settings.confirm_limit;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.ask(context, None, Query::Fetch { ids: vec![tx] }).await {
                Ok(Reply::Txs { txs }) if !txs.is_empty() => return Ok(()),
                // A member that holds the `Leave` no longer counts this node as a member.
                Err(ReplicationError::Refused(refused)) if refused.status == Status::FORBIDDEN => return Ok(()),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicationError::NoMember(format!(
                    "no other member of context {context} confirmed it holds transaction {tx} within {}; \
                     nothing was deleted: try again when another member is online",
                    span(limit)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts a context being joined from its genesis, deploying its app if needed.
    async fn start_from_genesis(&self, context: Id, peer: Address) -> Result<(), ReplicationError> {
        let encoded = match self
            .ask(context, Some(peer), Query::Fetch { ids: vec![context] })
            .await?
        {
            Reply::Txs { txs } => txs,
            other => return Err(unexpected("Txs", &other)),
        };
        let Some(genesis) = encoded.into_iter().next() else {
            return Err(ReplicationError::BadPeer(format!(
                "member {peer} did not send the genesis of context {context}"
            )));
        };
        let genesis = verify::check(&context, &genesis).map_err(|r| ReplicationError::BadPeer(r.reason))?;
        let Op::Create { app, name, version, .. } = &genesis.tx().body.op else {
            return Err(ReplicationError::BadPeer(format!(
                "member {peer} sent a transaction that is not context {context}'s genesis"
            )));
        };
        let held = self
            .state
            .send(AppCode { app: *app })
            .await
            .map_err(mailbox("state"))??;
        if held.is_none() {
            let code = match self.ask(context, Some(peer), Query::App { app: *app }).await? {
                Reply::App { code: Some(code) } => code.into_vec(),
                Reply::App { code: None } => {
                    return Err(ReplicationError::NotFound(format!(
                        "member {peer} does not have the module of app {app}"
                    )))
                }
                other => return Err(unexpected("App", &other)),
            };
            if keccak256(&code) != app.0 {
                return Err(ReplicationError::BadPeer(format!(
                    "member {peer} sent a module whose keccak256 is not app id {app}"
                )));
            }
            self.state
                .send(Deploy {
                    by: self.node(),
                    name: name.clone(),
                    version: version.clone(),
                    wasm: code,
                })
                .await
                .map_err(mailbox("state"))??;
        }
        let report = self
            .state
            .send(Receive {
                txs: vec![genesis],
                joining: Some(context),
            })
            .await
            .map_err(mailbox("state"))??;
        if let Some((_, why)) = report.invalid.first() {
            return Err(ReplicationError::BadPeer(format!("the genesis of {context}: {why}")));
        }
        Ok(())
    }
}

fn unexpected(wanted: &str, got: &Reply) -> ReplicationError {
    let got = match got {
        Reply::State { .. } => "State",
        Reply::Txs { .. } => "Txs",
        Reply::Page { .. } => "Page",
        Reply::App { .. } => "App",
    };
    ReplicationError::BadPeer(format!("asked for {wanted}, got {got}"))
}
