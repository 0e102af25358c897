//! The write path: one thread that owns the write side of `state.redb`. It takes every
//! queued job at once, runs them in arrival order inside one redb write transaction, and
//! commits once (group commit) before it answers any of them, so an answer to a caller
//! always means durable and callers see their writes in the order they were made (a
//! batch of broadcast transactions alone skips the fsync: see [`MAX_UNSYNCED_IN_A_ROW`]).
//! A job the app or the caller got wrong leaves nothing behind; a storage failure aborts
//! the whole batch.
//!
//! The tree's node entries go through a [`NodeCache`] kept across batches, so a batch
//! writes each node it changed once, and the hot top of each tree is not read from redb.
//!
//! This node's own transactions sort after everything it holds (their parents are its
//! heads), so they are applied as they are made. Received ones are added to the DAG and
//! the context is settled at once (`replay.rs`): each is applied last when it commutes
//! with what sorts after it, else the context is rolled back to where it sorts and
//! applied forward from there.
//!
//! This module is the engine (the queue, a batch, its commit, and what every job shares:
//! making this node's transaction, finding the context a request names); each job is in
//! a file of its own next to it.

mod call;
mod create;
mod forget;
mod invite;
mod leave;
mod persist;
mod receive;
mod set_role;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use actix::{Addr, Recipient};
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, SigningKey};
use cmesh_events::{Emit, EventsActor};
use futures::channel::oneshot;
use redb::{Database, Durability};
use tracing::{debug, warn};

use crate::checks::{check_role, not_held};
use crate::dag::{self, Added, MemberCache};
use crate::error::StateError;
use crate::ids::Id;
use crate::membership::Change;
use crate::messages::{
    CallContext, CallReply, Committed, ContextInfo, CreateContext, Forget, ForgetReply, Invite, Leave, LeaveReply,
    MemberReply, Receive, ReceiveReport, Requester, RoleReply, SetRole, WriteStats,
};
use crate::node_cache::NodeCache;
use crate::replay::{self, Effect};
use crate::roles::Role;
use crate::signer::Signer;
use crate::store::{self, ContextRecord};
use crate::tables::Tables;
use crate::tx::{Op, Transaction, TxBody, TX_FORMAT};
use cmesh_runtime::Runtime;

/// Most jobs committed together.
const MAX_BATCH: usize = 512;
/// Jobs that may wait for the executor before callers get 503.
pub const QUEUE_DEPTH: usize = 8192;
/// Most tree node entries the executor keeps cached between batches: the top levels of
/// the trees, which every write goes through, and whole trees of up to ~50,000 pairs, in
/// ~14 MB (~280 bytes an entry). Most of the gain is within a batch (each changed node is
/// written once), so a larger cache buys little. Checked when a batch starts: above it,
/// the clean entries are dropped.
const CACHED_NODES: usize = 50_000;
/// Most commits in a row without fsync. A batch that only takes broadcast transactions
/// needs none: nobody waits on it, what a crash loses of it is fetched again from the
/// members on restart, and the next durable commit makes it durable too. A batch that
/// answers a caller, joins a context or takes a membership change is always durable.
const MAX_UNSYNCED_IN_A_ROW: u64 = 32;

type Answer<T> = oneshot::Sender<Result<T, StateError>>;

pub enum Job {
    Create(CreateContext, Answer<ContextInfo>),
    Call(CallContext, Answer<CallReply>),
    SetRole(SetRole, Answer<RoleReply>),
    Invite(Invite, Answer<MemberReply>),
    Receive(Receive, Answer<ReceiveReport>),
    Leave(Leave, Answer<LeaveReply>),
    Forget(Forget, Answer<ForgetReply>),
    /// Nothing but a durable commit.
    Persist(Answer<()>),
}

/// A job's answer, held until its batch is durable.
enum Done {
    Create(Answer<ContextInfo>, Result<ContextInfo, StateError>),
    Call(Answer<CallReply>, Result<CallReply, StateError>),
    SetRole(Answer<RoleReply>, Result<RoleReply, StateError>),
    Invite(Answer<MemberReply>, Result<MemberReply, StateError>),
    Receive(Answer<ReceiveReport>, Result<ReceiveReport, StateError>),
    Leave(Answer<LeaveReply>, Result<LeaveReply, StateError>),
    Forget(Answer<ForgetReply>, Result<ForgetReply, StateError>),
    Persist(Answer<()>, Result<(), StateError>),
}

impl Job {
    /// Whether its batch must be on disk before anything of it is answered.
    fn needs_durability(&self) -> bool {
        match self {
            Job::Receive(msg, _) => {
                msg.joining.is_some() || msg.txs.iter().any(|tx| Change::of(&tx.tx().body).is_some())
            }
            _ => true,
        }
    }
}

impl Done {
    fn send(self) {
        // A caller that gave up waiting has dropped its receiver; nothing to do then.
        let _ = match self {
            Done::Create(tx, r) => tx.send(r).map_err(drop),
            Done::Call(tx, r) => tx.send(r).map_err(drop),
            Done::SetRole(tx, r) => tx.send(r).map_err(drop),
            Done::Invite(tx, r) => tx.send(r).map_err(drop),
            Done::Receive(tx, r) => tx.send(r).map_err(drop),
            Done::Leave(tx, r) => tx.send(r).map_err(drop),
            Done::Forget(tx, r) => tx.send(r).map_err(drop),
            Done::Persist(tx, r) => tx.send(r).map_err(drop),
        };
    }

    /// The same answer, replaced by the failure of its batch.
    fn fail(self, cause: &Arc<StateError>) -> Done {
        match self {
            Done::Create(tx, _) => Done::Create(tx, not_committed(cause)),
            Done::Call(tx, _) => Done::Call(tx, not_committed(cause)),
            Done::SetRole(tx, _) => Done::SetRole(tx, not_committed(cause)),
            Done::Invite(tx, _) => Done::Invite(tx, not_committed(cause)),
            Done::Receive(tx, _) => Done::Receive(tx, not_committed(cause)),
            Done::Leave(tx, _) => Done::Leave(tx, not_committed(cause)),
            Done::Forget(tx, _) => Done::Forget(tx, not_committed(cause)),
            Done::Persist(tx, _) => Done::Persist(tx, not_committed(cause)),
        }
    }
}

/// What a job produced besides its answer: events to publish once it is durable.
#[derive(Default)]
struct Effects {
    events: Vec<Emit>,
    /// Transactions made in this batch, waiting for their signatures.
    unsigned: HashMap<Id, TxBody>,
    /// This node's transactions once signed, by context, to broadcast once durable.
    made: HashMap<Id, Vec<Vec<u8>>>,
    /// Transactions written (set once they are).
    written: u64,
    rejected: u64,
}

/// The executor's counters, read by the actor without a round trip.
#[derive(Debug, Default)]
pub struct Counters {
    commits: AtomicU64,
    unsynced: AtomicU64,
    jobs: AtomicU64,
    transactions: AtomicU64,
    rejected: AtomicU64,
    aborted: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> WriteStats {
        WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            unsynced: self.unsynced.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
        }
    }
}

pub struct Executor {
    db: Arc<Database>,
    runtime: Runtime,
    node: Address,
    events: Option<Addr<EventsActor>>,
    /// Told of this node's transactions once they are durable (the replicator).
    committed: Option<Recipient<Committed>>,
    /// Committed context records.
    contexts: HashMap<Id, ContextRecord>,
    counters: Arc<Counters>,
    /// Signs transaction ids on its own thread while this one runs the next job.
    signer: Signer,
    /// Tree node entries as committed (this thread is the only writer of the node table).
    nodes: NodeCache,
    members: MemberCache,
    invalid: HashSet<Id>,
    /// Commits without fsync since the last durable one.
    unsynced_in_a_row: u64,
}

impl Executor {
    pub fn new(
        db: Arc<Database>,
        runtime: Runtime,
        key: Arc<SigningKey>,
        events: Option<Addr<EventsActor>>,
        committed: Option<Recipient<Committed>>,
    ) -> Result<Self, StateError> {
        Ok(Executor {
            db,
            runtime,
            node: key.address(),
            events,
            committed,
            contexts: HashMap::new(),
            counters: Arc::default(),
            signer: Signer::spawn(key)?,
            nodes: NodeCache::new(CACHED_NODES),
            members: MemberCache::default(),
            invalid: HashSet::new(),
            unsynced_in_a_row: 0,
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Starts the executor thread; jobs go in through the returned queue.
    pub fn spawn(self) -> Result<JobQueue, StateError> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("cmesh-state-exec".into())
            .spawn(move || self.run(receiver))?;
        Ok(JobQueue(sender))
    }

    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        debug!("state executor stopped");
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let size = jobs.len();
        let mut staged: HashMap<Id, ContextRecord> = HashMap::new();
        let mut effects = Effects::default();
        let mut done = Vec::with_capacity(size);
        let outcome = self.write_batch(jobs, &mut staged, &mut effects, &mut done);
        self.counters.jobs.fetch_add(size as u64, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters.transactions.fetch_add(effects.written, Ordering::Relaxed);
                self.counters.rejected.fetch_add(effects.rejected, Ordering::Relaxed);
                self.contexts.extend(staged);
                if let Some(events) = &self.events {
                    for event in effects.events {
                        events.do_send(event);
                    }
                }
                if let Some(committed) = &self.committed {
                    for (context, txs) in effects.made {
                        committed.do_send(Committed { context, txs });
                    }
                }
                done.into_iter().for_each(Done::send);
            }
            Err(cause) => {
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                warn!(error = %cause, jobs = size, "state batch aborted; nothing from it was kept");
                done.into_iter().for_each(|d| d.fail(&cause).send());
            }
        }
    }

    /// Runs the jobs in one write transaction and commits it. Answers are collected in
    /// `done` (even on error, so every caller hears back; the caller replaces them all by
    /// the error, which every job of the batch shares). The node cache is taken for the
    /// batch and put back once the batch is committed: on any error it is dropped, with
    /// the changes of the batch it holds.
    fn write_batch(
        &mut self,
        jobs: Vec<Job>,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        done: &mut Vec<Done>,
    ) -> Result<(), Arc<StateError>> {
        let abandon = |jobs: Vec<Job>, done: &mut Vec<Done>, err: StateError| {
            let cause = Arc::new(err);
            done.extend(jobs.into_iter().map(|job| pending(job, &cause)));
            Err(cause)
        };
        let mut txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(err) => return abandon(jobs, done, err.into()),
        };
        let durable = self.unsynced_in_a_row >= MAX_UNSYNCED_IN_A_ROW || jobs.iter().any(Job::needs_durability);
        if !durable {
            if let Err(err) = txn.set_durability(Durability::None) {
                return abandon(jobs, done, StateError::NoFsync(err));
            }
        }
        let mut nodes = std::mem::replace(&mut self.nodes, NodeCache::new(CACHED_NODES));
        nodes.trim();
        let mut failed: Option<Arc<StateError>> = None;
        {
            let mut tables = match Tables::open(&txn, &mut nodes) {
                Ok(tables) => tables,
                Err(err) => return abandon(jobs, done, err),
            };
            for job in jobs {
                if let Some(cause) = &failed {
                    done.push(pending(job, cause));
                    continue;
                }
                let result = match job {
                    Job::Create(msg, answer) => self
                        .create(&mut tables, staged, effects, msg)
                        .into_done(|r| Done::Create(answer, r)),
                    Job::Call(msg, answer) => self
                        .call(&mut tables, staged, effects, msg)
                        .into_done(|r| Done::Call(answer, r)),
                    Job::SetRole(msg, answer) => self
                        .set_role(&mut tables, staged, effects, msg)
                        .into_done(|r| Done::SetRole(answer, r)),
                    Job::Invite(msg, answer) => self
                        .invite(&mut tables, staged, effects, msg)
                        .into_done(|r| Done::Invite(answer, r)),
                    Job::Receive(msg, answer) => self
                        .receive(&mut tables, staged, effects, msg)
                        .into_done(|r| Done::Receive(answer, r)),
                    Job::Leave(msg, answer) => self
                        .leave(&mut tables, staged, effects, msg)
                        .into_done(|r| Done::Leave(answer, r)),
                    Job::Forget(msg, answer) => self
                        .forget(&mut tables, staged, effects, msg)
                        .into_done(|r| Done::Forget(answer, r)),
                    Job::Persist(answer) => self.persist().into_done(|r| Done::Persist(answer, r)),
                };
                let (answer, failure) = result;
                done.push(answer);
                failed = failure;
            }
            if let Some(cause) = failed {
                return Err(cause);
            }
            self.seal(&mut tables, staged, effects).map_err(Arc::new)?;
        }
        txn.commit().map_err(|err| Arc::new(err.into()))?;
        if durable {
            self.unsynced_in_a_row = 0;
        } else {
            self.unsynced_in_a_row += 1;
            self.counters.unsynced.fetch_add(1, Ordering::Relaxed);
        }
        self.nodes = nodes;
        Ok(())
    }

    /// What a batch writes once its jobs have run: the tree's changed nodes, the context
    /// records, and this node's transactions with their signatures.
    fn seal(
        &mut self,
        tables: &mut Tables,
        staged: &HashMap<Id, ContextRecord>,
        effects: &mut Effects,
    ) -> Result<(), StateError> {
        tables.nodes.flush()?;
        for record in staged.values() {
            tables
                .contexts
                .insert(record.id.0.as_slice(), store::encode(record)?.as_slice())?;
        }
        let mut signatures = self.signer.collect(effects.unsigned.keys().copied())?;
        effects.written += effects.unsigned.len() as u64;
        for (id, body) in effects.unsigned.drain() {
            let signature = signatures.remove(&id).flatten().ok_or(StateError::SignatureLost(id))?;
            let context = body.context_of(id);
            let tx = Transaction { body, signature };
            let encoded = tx.encode()?;
            dag::attach_signed(tables, &context, &id, &encoded)?;
            effects.made.entry(context).or_default().push(encoded);
        }
        Ok(())
    }

    fn record(
        &self,
        tables: &Tables,
        staged: &HashMap<Id, ContextRecord>,
        id: &Id,
    ) -> Result<Option<ContextRecord>, StateError> {
        if let Some(record) = staged.get(id).or_else(|| self.contexts.get(id)) {
            return Ok(Some(record.clone()));
        }
        store::context_record(&tables.contexts, id)
    }

    /// Makes this node's next transaction of `record` with `op`, applies it and adds it to
    /// the DAG (its signature and row come at the end of the batch). The inner error says
    /// why nothing was made.
    fn author(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        mut record: ContextRecord,
        by: &Requester,
        op: Op,
    ) -> Step<(Id, ContextRecord, Effect)> {
        let members = dag::current_members(&tables.changes, &mut self.members, &record).map_err(fatal)?;
        if !members.contains_key(&self.node) {
            return Ok(Err(StateError::Conflict(format!(
                "this node ({}) is not a member of context {}: send the request to a member (ctx.members)",
                self.node, record.id
            ))));
        }
        let body = TxBody {
            format: TX_FORMAT,
            context: record.id,
            author: self.node,
            seq: record.seq_of(&self.node) + 1,
            parents: record.heads.clone(),
            time_ms: unix_millis().max(record.last_time_ms),
            caller: by.address,
            caller_proof: by.proof.clone(),
            op,
        };
        let id = body.id().map_err(|e| fatal(e.into()))?;
        let (effect, undo) = replay::apply(&self.runtime, tables, &mut record, &body, id).map_err(fatal)?;
        replay::refresh_root(tables, &mut record).map_err(fatal)?;
        let effect = match effect {
            Ok(effect) => effect,
            Err(err) => return Ok(Err(err)),
        };
        match dag::add(tables, &mut self.members, &mut record, &body, id, None).map_err(fatal)? {
            Added::New(key) => replay::mark_applied(tables, &mut record, key, &undo).map_err(fatal)?,
            other => {
                return Err(fatal(StateError::Record(format!(
                    "this node's own transaction {id} was not added to the DAG: {other:?}"
                ))))
            }
        }
        self.signer.request(id).map_err(fatal)?;
        effects.unsigned.insert(id, body);
        staged.insert(record.id, record.clone());
        Ok(Ok((id, record, effect)))
    }

    /// The context `text` names, if `user` holds at least `needed` in it.
    fn admitted(
        &self,
        tables: &Tables,
        staged: &HashMap<Id, ContextRecord>,
        text: &str,
        user: &Address,
        needed: Role,
    ) -> Result<ContextRecord, StateError> {
        let id = store::resolve_context(&tables.contexts, text)?;
        let record = self.record(tables, staged, &id)?.ok_or_else(|| not_held(&id))?;
        check_role(store::role_of(&tables.roles, &id, user)?, needed, user, &id)?;
        Ok(record)
    }
}

/// Stages a new context's record, and writes it at once rather than at the end of the
/// batch: later jobs of the batch may name it by prefix.
fn start_context(
    tables: &mut Tables,
    staged: &mut HashMap<Id, ContextRecord>,
    record: ContextRecord,
) -> Result<(), StateError> {
    tables
        .contexts
        .insert(record.id.0.as_slice(), store::encode(&record)?.as_slice())?;
    staged.insert(record.id, record);
    Ok(())
}

/// A storage failure in the middle of a batch: the whole batch is abandoned.
pub struct Fatal(Box<StateError>);

/// A job's answer, or a failure that aborts its batch.
type Step<T> = Result<Result<T, StateError>, Fatal>;

fn fatal(err: StateError) -> Fatal {
    Fatal(Box::new(err))
}

trait IntoDone<T> {
    /// The job's answer, and the failure that aborts the batch if there was one.
    fn into_done(self, f: impl FnOnce(Result<T, StateError>) -> Done) -> (Done, Option<Arc<StateError>>);
}

impl<T> IntoDone<T> for Step<T> {
    fn into_done(self, f: impl FnOnce(Result<T, StateError>) -> Done) -> (Done, Option<Arc<StateError>>) {
        match self {
            Ok(result) => (f(result), None),
            Err(Fatal(err)) => {
                let cause = Arc::from(err);
                (f(not_committed(&cause)), Some(cause))
            }
        }
    }
}

/// The answer of a job that never ran because its batch failed.
fn pending(job: Job, cause: &Arc<StateError>) -> Done {
    match job {
        Job::Create(_, answer) => Done::Create(answer, not_committed(cause)),
        Job::Call(_, answer) => Done::Call(answer, not_committed(cause)),
        Job::SetRole(_, answer) => Done::SetRole(answer, not_committed(cause)),
        Job::Invite(_, answer) => Done::Invite(answer, not_committed(cause)),
        Job::Receive(_, answer) => Done::Receive(answer, not_committed(cause)),
        Job::Leave(_, answer) => Done::Leave(answer, not_committed(cause)),
        Job::Forget(_, answer) => Done::Forget(answer, not_committed(cause)),
        Job::Persist(answer) => Done::Persist(answer, not_committed(cause)),
    }
}

fn not_committed<T>(cause: &Arc<StateError>) -> Result<T, StateError> {
    Err(StateError::NotCommitted(cause.clone()))
}

/// The executor's input. Full → 503, never an unbounded queue.
#[derive(Clone)]
pub struct JobQueue(SyncSender<Job>);

impl JobQueue {
    pub fn submit(&self, job: Job) -> Result<(), StateError> {
        self.0.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => StateError::QueueFull,
            TrySendError::Disconnected(_) => StateError::ExecutorStopped,
        })
    }
}
