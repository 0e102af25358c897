//! The state actor: the one address the router talks to. It owns no data itself; it hands
//! writes to the executor thread (group commit) and reads and deploys to the view pool.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use cmesh_common::SigningKey;
use cmesh_events::EventsActor;
use futures::channel::oneshot;

use crate::error::StateError;
use crate::executor::{Counters, Executor, Job, JobQueue};
use crate::ids::Id;
use crate::messages::{
    AppCode, CallContext, CallReply, Committed, ContextInfo, ContextMembers, ContextRoot, CreateContext, Deploy,
    FetchTransactions, Forget, ForgetReply, GetSyncState, HeldContexts, Invite, Lacking, Leave, LeaveReply, ListApps,
    ListContexts, MemberReply, MembersReply, MissingTransactions, Persist, Receive, ReceiveReport, ResolveContext,
    RoleReply, RootReply, SetRole, Stats, SyncPage, SyncState,
};
use crate::store::{self, AppRecord};
use crate::views::ViewWorker;
use cmesh_runtime::{Runtime, RuntimeConfig};

/// How the state service runs.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// `state.redb` and the compiled-module cache (`modules/`) live here.
    pub dir: PathBuf,
    pub runtime: RuntimeConfig,
    /// Threads answering views and deploys.
    pub view_threads: usize,
}

pub struct StateActor {
    jobs: JobQueue,
    views: Addr<ViewWorker>,
    counters: Arc<Counters>,
}

impl Actor for StateActor {
    type Context = Context<Self>;
}

impl StateActor {
    /// Opens the store, starts the executor thread and the view pool, and the actor on
    /// the current arbiter. `key` signs this node's transactions; `committed` hears of
    /// them once they are durable.
    pub fn start(
        config: StateConfig,
        key: Arc<SigningKey>,
        events: Option<Addr<EventsActor>>,
        committed: Option<Recipient<Committed>>,
    ) -> Result<Addr<StateActor>, StateError> {
        let db = Arc::new(store::open(&config.dir.join("state.redb"))?);
        let mut runtime_config = config.runtime;
        if runtime_config.cache_dir.is_none() {
            runtime_config.cache_dir = Some(config.dir.join("modules"));
        }
        let runtime = Runtime::new(runtime_config).map_err(StateError::RuntimeStart)?;
        let executor = Executor::new(db.clone(), runtime.clone(), key, events.clone(), committed)?;
        let counters = executor.counters();
        let jobs = executor.spawn()?;
        let views = SyncArbiter::start(config.view_threads.max(1), move || ViewWorker {
            db: db.clone(),
            runtime: runtime.clone(),
            events: events.clone(),
        });
        Ok(StateActor { jobs, views, counters }.start())
    }

    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StateError>>) -> Job,
    ) -> ResponseFuture<Result<T, StateError>> {
        let (answer, reply) = oneshot::channel();
        let submitted = self.jobs.submit(job(answer));
        Box::pin(async move {
            submitted?;
            reply.await.map_err(StateError::NoAnswer)?
        })
    }

    fn ask<M>(&self, msg: M) -> ResponseFuture<M::Result>
    where
        M: Message<Result = Result<<M as AskResult>::Ok, StateError>> + AskResult + Send + 'static,
        ViewWorker: Handler<M>,
        M::Result: Send,
    {
        let views = self.views.clone();
        Box::pin(async move { views.send(msg).await.map_err(StateError::ViewPool)? })
    }
}

/// The success type of a message answered with `Result<_, StateError>`.
pub trait AskResult {
    type Ok: Send + 'static;
}

macro_rules! view_messages {
    ($($msg:ty => $ok:ty),* $(,)?) => {$(
        impl AskResult for $msg {
            type Ok = $ok;
        }

        impl Handler<$msg> for StateActor {
            type Result = ResponseFuture<Result<$ok, StateError>>;

            fn handle(&mut self, msg: $msg, _: &mut Context<Self>) -> Self::Result {
                self.ask(msg)
            }
        }
    )*};
}

view_messages!(
    Deploy => AppRecord,
    ListApps => Vec<AppRecord>,
    ListContexts => Vec<ContextInfo>,
    ContextRoot => RootReply,
    ResolveContext => Id,
    ContextMembers => MembersReply,
    FetchTransactions => Vec<Vec<u8>>,
    GetSyncState => SyncState,
    MissingTransactions => SyncPage,
    Lacking => Vec<Id>,
    AppCode => Option<Vec<u8>>,
    HeldContexts => Vec<Id>,
);

impl Handler<CreateContext> for StateActor {
    type Result = ResponseFuture<Result<ContextInfo, StateError>>;

    fn handle(&mut self, msg: CreateContext, _: &mut Context<Self>) -> Self::Result {
        self.submit(|answer| Job::Create(msg, answer))
    }
}

impl Handler<CallContext> for StateActor {
    type Result = ResponseFuture<Result<CallReply, StateError>>;

    fn handle(&mut self, msg: CallContext, _: &mut Context<Self>) -> Self::Result {
        if msg.write {
            self.submit(|answer| Job::Call(msg, answer))
        } else {
            self.ask(msg)
        }
    }
}

impl AskResult for CallContext {
    type Ok = CallReply;
}

impl Handler<SetRole> for StateActor {
    type Result = ResponseFuture<Result<RoleReply, StateError>>;

    fn handle(&mut self, msg: SetRole, _: &mut Context<Self>) -> Self::Result {
        self.submit(|answer| Job::SetRole(msg, answer))
    }
}

impl Handler<Invite> for StateActor {
    type Result = ResponseFuture<Result<MemberReply, StateError>>;

    fn handle(&mut self, msg: Invite, _: &mut Context<Self>) -> Self::Result {
        self.submit(|answer| Job::Invite(msg, answer))
    }
}

impl Handler<Receive> for StateActor {
    type Result = ResponseFuture<Result<ReceiveReport, StateError>>;

    fn handle(&mut self, msg: Receive, _: &mut Context<Self>) -> Self::Result {
        self.submit(|answer| Job::Receive(msg, answer))
    }
}

impl Handler<Leave> for StateActor {
    type Result = ResponseFuture<Result<LeaveReply, StateError>>;

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) -> Self::Result {
        self.submit(|answer| Job::Leave(msg, answer))
    }
}

impl Handler<Forget> for StateActor {
    type Result = ResponseFuture<Result<ForgetReply, StateError>>;

    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) -> Self::Result {
        self.submit(|answer| Job::Forget(msg, answer))
    }
}

impl Handler<Persist> for StateActor {
    type Result = ResponseFuture<Result<(), StateError>>;

    fn handle(&mut self, _: Persist, _: &mut Context<Self>) -> Self::Result {
        self.submit(Job::Persist)
    }
}

impl Handler<Stats> for StateActor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.snapshot())
    }
}
