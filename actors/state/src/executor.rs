//! The write path: one thread that owns the write side of `state.redb`. It takes every
//! queued job at once, runs them in arrival order inside one redb write transaction, and
//! commits once (group commit) before it answers any of them, so an answer always means
//! durable and callers see their writes in the order they were made. A job the app or
//! the caller got wrong leaves nothing behind; a storage failure aborts the whole batch.
//! The tree's node entries go through a [`NodeCache`] kept across batches, so a batch
//! writes each node it changed once, and the hot top of each tree is not read from redb.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use actix::Addr;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, SigningKey};
use cmesh_events::{Emit, EventsActor};
use futures::channel::oneshot;
use redb::{Database, ReadableTable, Table, WriteTransaction};
use serde_json::json;
use tracing::{debug, warn};

use crate::error::StateError;
use crate::ids::Id;
use crate::merkle;
use crate::messages::{CallContext, CallReply, ContextInfo, CreateContext, Requester, RoleReply, SetRole, WriteStats};
use crate::node_cache::{CachedNodes, NodeCache};
use crate::reader::ContextReader;
use crate::roles::Role;
use crate::runtime::{Call, Runtime, StorageError};
use crate::signer::Signer;
use crate::store::{self, ContextRecord};
use crate::tx::{Op, Transaction, TxBody, TX_FORMAT};

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

type Answer<T> = oneshot::Sender<Result<T, StateError>>;

pub enum Job {
    Create(CreateContext, Answer<ContextInfo>),
    Call(CallContext, Answer<CallReply>),
    SetRole(SetRole, Answer<RoleReply>),
}

/// A job's answer, held until its batch is durable.
enum Done {
    Create(Answer<ContextInfo>, Result<ContextInfo, StateError>),
    Call(Answer<CallReply>, Result<CallReply, StateError>),
    SetRole(Answer<RoleReply>, Result<RoleReply, StateError>),
}

impl Done {
    fn send(self) {
        // A caller that gave up waiting has dropped its receiver; nothing to do then.
        let _ = match self {
            Done::Create(tx, r) => tx.send(r).map_err(drop),
            Done::Call(tx, r) => tx.send(r).map_err(drop),
            Done::SetRole(tx, r) => tx.send(r).map_err(drop),
        };
    }

    fn fail(self, message: &str) -> Done {
        match self {
            Done::Create(tx, _) => Done::Create(tx, not_committed(message)),
            Done::Call(tx, _) => Done::Call(tx, not_committed(message)),
            Done::SetRole(tx, _) => Done::SetRole(tx, not_committed(message)),
        }
    }
}

/// The tables a batch writes, opened once per batch. The tree's node table is reached only
/// through the executor's cache, which must see every change to it.
struct Tables<'t> {
    app_code: Table<'t, &'static [u8], &'static [u8]>,
    versions: Table<'t, &'static str, &'static [u8]>,
    contexts: Table<'t, &'static [u8], &'static [u8]>,
    roles: Table<'t, &'static [u8], u8>,
    memberships: Table<'t, &'static [u8], u8>,
    order: Table<'t, &'static [u8], &'static [u8]>,
    kv: Table<'t, &'static [u8], &'static [u8]>,
    nodes: CachedNodes<'t, 't>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction, nodes: &'t mut NodeCache) -> Result<Self, StateError> {
        Ok(Tables {
            app_code: txn.open_table(store::APP_CODE)?,
            versions: txn.open_table(store::APP_VERSIONS)?,
            contexts: txn.open_table(store::CONTEXTS)?,
            roles: txn.open_table(store::ROLES)?,
            memberships: txn.open_table(store::MEMBERSHIPS)?,
            order: txn.open_table(store::TX_ORDER)?,
            kv: txn.open_table(store::KV)?,
            nodes: nodes.over(txn.open_table(merkle::NODES)?),
        })
    }
}

/// What a job produced besides its answer: events to publish once it is durable.
#[derive(Default)]
struct Effects {
    events: Vec<Emit>,
    /// Transactions made in this batch, waiting for their signatures.
    unsigned: Vec<(Id, TxBody)>,
    /// Transactions written (set once they are).
    written: u64,
    rejected: u64,
}

/// The executor's counters, read by the actor without a round trip.
#[derive(Debug, Default)]
pub struct Counters {
    commits: AtomicU64,
    jobs: AtomicU64,
    transactions: AtomicU64,
    rejected: AtomicU64,
    aborted: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> WriteStats {
        WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
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
    /// Committed context records.
    contexts: HashMap<Id, ContextRecord>,
    counters: Arc<Counters>,
    /// Signs transaction ids on its own thread while this one runs the next job.
    signer: Signer,
    /// Tree node entries as committed (this thread is the only writer of the node table).
    nodes: NodeCache,
}

impl Executor {
    pub fn new(
        db: Arc<Database>,
        runtime: Runtime,
        key: Arc<SigningKey>,
        events: Option<Addr<EventsActor>>,
    ) -> Result<Self, StateError> {
        Ok(Executor {
            db,
            runtime,
            node: key.address(),
            events,
            contexts: HashMap::new(),
            counters: Arc::default(),
            signer: Signer::spawn(key)?,
            nodes: NodeCache::new(CACHED_NODES),
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
                done.into_iter().for_each(Done::send);
            }
            Err(err) => {
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                warn!(error = %err, jobs = size, "state batch aborted; nothing from it was kept");
                let message = format!("the write was not committed: {err}");
                done.into_iter().for_each(|d| d.fail(&message).send());
            }
        }
    }

    /// Runs the jobs in one write transaction and commits it. Answers are collected in
    /// `done` (even on error, so every caller hears back). The node cache is taken for the
    /// batch and put back once the batch is committed: on any error it is dropped, with
    /// the changes of the batch it holds.
    fn write_batch(
        &mut self,
        jobs: Vec<Job>,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        done: &mut Vec<Done>,
    ) -> Result<(), StateError> {
        let txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(err) => {
                done.extend(jobs.into_iter().map(pending));
                return Err(err.into());
            }
        };
        let mut nodes = std::mem::replace(&mut self.nodes, NodeCache::new(CACHED_NODES));
        nodes.trim();
        let mut failed = None;
        {
            let mut tables = Tables::open(&txn, &mut nodes)?;
            for job in jobs {
                if failed.is_some() {
                    done.push(pending(job));
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
                };
                let (answer, failure) = result;
                done.push(answer);
                failed = failure;
            }
            if let Some(Fatal(err)) = failed {
                return Err(*err);
            }
            tables.nodes.flush()?;
        }
        {
            let mut contexts = txn.open_table(store::CONTEXTS)?;
            for record in staged.values() {
                contexts.insert(record.id.0.as_slice(), store::encode(record)?.as_slice())?;
            }
            let mut txs = txn.open_table(store::TXS)?;
            let mut signatures = self.signer.collect(effects.unsigned.iter().map(|(id, _)| *id))?;
            effects.written = effects.unsigned.len() as u64;
            for (id, body) in effects.unsigned.drain(..) {
                let signature = signatures.remove(&id).flatten().ok_or_else(|| {
                    StateError::Unavailable(format!("the signer lost the signature of transaction {id}"))
                })?;
                let tx = Transaction { body, signature };
                txs.insert(id.0.as_slice(), tx.encode()?.as_slice())?;
            }
        }
        txn.commit()?;
        self.nodes = nodes;
        Ok(())
    }

    fn record(
        &self,
        tables: &Tables,
        staged: &HashMap<Id, ContextRecord>,
        id: &Id,
    ) -> Result<ContextRecord, StateError> {
        if let Some(record) = staged.get(id).or_else(|| self.contexts.get(id)) {
            return Ok(record.clone());
        }
        store::context_record(&tables.contexts, id)?
            .ok_or_else(|| StateError::NotFound(format!("no context {id} on this node")))
    }

    /// Writes a signed transaction and the context's new record.
    /// Makes `body` the context's new head. The signature (on the signer thread) and the
    /// rows of the transaction and the record are written at the end of the batch.
    fn append(
        &self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        body: TxBody,
        id: Id,
        mut record: ContextRecord,
    ) -> Result<(Id, ContextRecord), StateError> {
        self.signer.request(id)?;
        record.last_time_ms = body.time_ms;
        effects.unsigned.push((id, body));
        record.applied += 1;
        record.heads = vec![id];
        tables
            .order
            .insert(store::order_key(&record.id, record.applied).as_slice(), id.0.as_slice())?;
        staged.insert(record.id, record.clone());
        Ok((id, record))
    }

    fn body(&self, record: &ContextRecord, by: &Requester, op: Op) -> TxBody {
        TxBody {
            format: TX_FORMAT,
            context: record.id,
            author: self.node,
            parents: record.heads.clone(),
            time_ms: unix_millis().max(record.last_time_ms),
            caller: by.address,
            caller_proof: by.proof.clone(),
            op,
        }
    }

    fn create(
        &self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: CreateContext,
    ) -> Step<ContextInfo> {
        let app = match store::find_app(&tables.versions, &msg.app, msg.version.as_deref()) {
            Ok(app) => app,
            Err(err) => return Ok(Err(err)),
        };
        let id = Id::random().map_err(|e| fatal(StateError::Unavailable(format!("no randomness: {e}"))))?;
        let now = unix_millis();
        let record = ContextRecord {
            id,
            app: app.app,
            name: app.name.clone(),
            version: app.version.clone(),
            created_by: msg.by.address,
            created_at_ms: now,
            applied: 0,
            heads: Vec::new(),
            root: Id(merkle::EMPTY_ROOT),
            last_time_ms: now,
        };
        let op = Op::Create {
            app: app.app,
            name: app.name,
            version: app.version,
        };
        let body = self.body(&record, &msg.by, op);
        let tx_id = body.id().map_err(|e| fatal(e.into()))?;
        let (tx, record) = self
            .append(tables, staged, effects, body, tx_id, record)
            .map_err(fatal)?;
        // Written now, not at the end of the batch: later jobs may name it by prefix.
        tables
            .contexts
            .insert(id.0.as_slice(), store::encode(&record).map_err(fatal)?.as_slice())
            .map_err(|e| fatal(e.into()))?;
        write_role(tables, &id, &msg.by.address, Some(Role::Admin)).map_err(fatal)?;
        effects.events.push(Emit::new(
            "state",
            "created",
            Vec::new(),
            json!({ "context": id, "app": record.app, "name": record.name, "version": record.version,
                    "tx": tx, "caller": msg.by.address }),
        ));
        Ok(Ok(ContextInfo {
            context: id,
            app: record.app,
            name: record.name,
            version: record.version,
            role: Role::Admin,
            applied: record.applied,
            root: record.root,
            tx: Some(tx),
        }))
    }

    fn call(
        &self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: CallContext,
    ) -> Step<CallReply> {
        let record = match self.admitted(tables, staged, &msg.context, &msg.by.address, Role::Writer) {
            Ok(record) => record,
            Err(err) => return Ok(Err(err)),
        };
        if let Err(err) = check_version(&record, msg.version_req.as_deref()) {
            return Ok(Err(err));
        }
        let op = Op::Call {
            method: msg.method.clone(),
            args: msg.args,
        };
        let body = self.body(&record, &msg.by, op);
        let tx_id = body.id().map_err(|e| fatal(e.into()))?;
        let args: &[u8] = match &body.op {
            Op::Call { args, .. } => args,
            _ => &[],
        };
        let outcome = {
            let reader = ContextReader::new(&tables.kv, record.id);
            let code = &tables.app_code;
            let load = || load_code(code, &record.app);
            let call = Call {
                method: &msg.method,
                input: args,
                caller: msg.by.address.0,
                context: record.id.0,
                tx_id: Some(tx_id.0),
                time_ms: body.time_ms,
                gas_limit: None,
            };
            self.runtime.call(&record.app.0, &load, call, &reader)
        };
        let outcome = match outcome
            .map_err(StateError::from)
            .and_then(|o| Ok((output_value(&o.output)?, o)))
        {
            Ok(outcome) => outcome,
            // A failed call wrote nothing, so it never aborts the batch, even when the
            // node is at fault (a stored module that no longer loads): only this job fails.
            Err(err) => {
                effects.rejected += 1;
                effects.events.push(Emit::new(
                    "state",
                    "rejected",
                    Vec::new(),
                    json!({ "context": record.id, "method": msg.method, "caller": msg.by.address,
                            "status": err.status().0, "error": err.to_string() }),
                ));
                return Ok(Err(err));
            }
        };
        let (result, outcome) = outcome;
        let mut record = record;
        for (key, value) in &outcome.writes {
            let root = merkle::set(&mut tables.kv, &mut tables.nodes, &record.id.0, key, value.as_deref())
                .map_err(|e| fatal(e.into()))?;
            record.root = Id(root);
        }
        let (tx, record) = self
            .append(tables, staged, effects, body, tx_id, record)
            .map_err(fatal)?;
        effects.events.push(Emit::new(
            "state",
            "executed",
            Vec::new(),
            json!({ "context": record.id, "tx": tx, "method": msg.method, "caller": msg.by.address,
                    "gas_used": outcome.gas_used, "writes": outcome.writes.len(), "root": record.root }),
        ));
        let context = record.id.to_string();
        effects.events.extend(
            outcome
                .events
                .into_iter()
                .map(|event| Emit::context(&context, &event.name, event.data)),
        );
        Ok(Ok(CallReply {
            result,
            tx: Some(tx),
            gas_used: outcome.gas_used,
            logs: outcome.logs,
        }))
    }

    fn set_role(
        &self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: SetRole,
    ) -> Step<RoleReply> {
        let record = match self.admitted(tables, staged, &msg.context, &msg.by.address, Role::Admin) {
            Ok(record) => record,
            Err(err) => return Ok(Err(err)),
        };
        let current = store::role_of(&tables.roles, &record.id, &msg.user).map_err(fatal)?;
        if current == Some(Role::Admin) && msg.role != Some(Role::Admin) {
            let admins = count_admins(&tables.roles, &record.id).map_err(fatal)?;
            if admins <= 1 {
                return Ok(Err(StateError::Conflict(format!(
                    "{} is the last admin of context {}: grant admin to someone else first",
                    msg.user, record.id
                ))));
            }
        }
        let op = match msg.role {
            Some(role) => Op::Grant { user: msg.user, role },
            None => Op::Revoke { user: msg.user },
        };
        let body = self.body(&record, &msg.by, op);
        let tx_id = body.id().map_err(|e| fatal(e.into()))?;
        let (tx, record) = self
            .append(tables, staged, effects, body, tx_id, record)
            .map_err(fatal)?;
        write_role(tables, &record.id, &msg.user, msg.role).map_err(fatal)?;
        let kind = if msg.role.is_some() { "granted" } else { "revoked" };
        effects.events.push(Emit::new(
            "state",
            kind,
            Vec::new(),
            json!({ "context": record.id, "tx": tx, "user": msg.user, "role": msg.role, "caller": msg.by.address }),
        ));
        Ok(Ok(RoleReply {
            context: record.id,
            user: msg.user,
            role: msg.role,
            tx,
        }))
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
        let record = self.record(tables, staged, &id)?;
        check_role(store::role_of(&tables.roles, &id, user)?, needed, user, &id)?;
        Ok(record)
    }
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
    fn into_done(self, f: impl FnOnce(Result<T, StateError>) -> Done) -> (Done, Option<Fatal>);
}

impl<T> IntoDone<T> for Step<T> {
    fn into_done(self, f: impl FnOnce(Result<T, StateError>) -> Done) -> (Done, Option<Fatal>) {
        match self {
            Ok(result) => (f(result), None),
            Err(failure) => {
                let message = format!("the write was not committed: {}", failure.0);
                (f(not_committed(&message)), Some(failure))
            }
        }
    }
}

/// The answer of a job that never ran because its batch failed.
fn pending(job: Job) -> Done {
    const MESSAGE: &str = "the write was not committed";
    match job {
        Job::Create(_, answer) => Done::Create(answer, not_committed(MESSAGE)),
        Job::Call(_, answer) => Done::Call(answer, not_committed(MESSAGE)),
        Job::SetRole(_, answer) => Done::SetRole(answer, not_committed(MESSAGE)),
    }
}

fn not_committed<T>(message: &str) -> Result<T, StateError> {
    Err(StateError::Unavailable(message.to_string()))
}

pub fn check_role(role: Option<Role>, needed: Role, user: &Address, context: &Id) -> Result<(), StateError> {
    match role {
        Some(role) if role.allows(needed) => Ok(()),
        Some(role) => Err(StateError::Forbidden(format!(
            "{user} is a {role} of context {context}; this needs the {needed} role (an admin grants it with ctx.grant)"
        ))),
        None => Err(StateError::Forbidden(format!(
            "{user} has no role in context {context}; this needs the {needed} role (an admin grants it with ctx.grant)"
        ))),
    }
}

/// `A:` calls run only on a context whose app version matches the requirement.
pub fn check_version(record: &ContextRecord, requirement: Option<&str>) -> Result<(), StateError> {
    let Some(requirement) = requirement else {
        return Ok(());
    };
    let req = semver::VersionReq::parse(requirement)
        .map_err(|e| StateError::BadRequest(format!("`{requirement}` is not a semver requirement: {e}")))?;
    let version = semver::Version::parse(&record.version)
        .map_err(|e| StateError::Record(format!("context {} has version {}: {e}", record.id, record.version)))?;
    if req.matches(&version) {
        Ok(())
    } else {
        Err(StateError::Conflict(format!(
            "context {} runs {} {}, which does not match `{requirement}`",
            record.id, record.name, record.version
        )))
    }
}

/// An app's output as JSON: the SDK writes JSON; anything else that is UTF-8 comes back
/// as a string.
pub fn output_value(output: &[u8]) -> Result<serde_json::Value, StateError> {
    if output.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    if let Ok(value) = serde_json::from_slice(output) {
        return Ok(value);
    }
    match std::str::from_utf8(output) {
        Ok(text) => Ok(serde_json::Value::String(text.to_string())),
        Err(_) => Err(StateError::Unprocessable(format!(
            "the app returned {} bytes that are neither JSON nor UTF-8",
            output.len()
        ))),
    }
}

pub fn load_code(table: &impl ReadableTable<&'static [u8], &'static [u8]>, app: &Id) -> Result<Vec<u8>, StorageError> {
    match table.get(app.0.as_slice()) {
        Ok(Some(code)) => Ok(code.value().to_vec()),
        Ok(None) => Err(StorageError(format!("the code of app {app} is missing"))),
        Err(e) => Err(StorageError(e.to_string())),
    }
}

fn write_role(tables: &mut Tables, context: &Id, user: &Address, role: Option<Role>) -> Result<(), StateError> {
    let key = store::role_key(context, user);
    let member = store::membership_key(user, context);
    match role {
        Some(role) => {
            tables.roles.insert(key.as_slice(), role.to_byte())?;
            tables.memberships.insert(member.as_slice(), role.to_byte())?;
        }
        None => {
            tables.roles.remove(key.as_slice())?;
            tables.memberships.remove(member.as_slice())?;
        }
    }
    Ok(())
}

fn count_admins(roles: &impl ReadableTable<&'static [u8], u8>, context: &Id) -> Result<usize, StateError> {
    let start = store::role_key(context, &Address([0; 20]));
    let end = store::role_key(context, &Address([0xff; 20]));
    let mut admins = 0;
    for entry in roles.range(start.as_slice()..=end.as_slice())? {
        let (_, role) = entry?;
        if Role::from_byte(role.value()) == Some(Role::Admin) {
            admins += 1;
        }
    }
    Ok(admins)
}

/// The executor's input. Full → 503, never an unbounded queue.
#[derive(Clone)]
pub struct JobQueue(SyncSender<Job>);

impl JobQueue {
    pub fn submit(&self, job: Job) -> Result<(), StateError> {
        self.0.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => StateError::Unavailable("too many writes are waiting; try again".into()),
            TrySendError::Disconnected(_) => StateError::Unavailable("the state executor has stopped".into()),
        })
    }
}
