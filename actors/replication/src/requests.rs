//! The replicator's answers to node admins: `ctx.join` (with or without waiting for the
//! catch-up), `ctx.status` and `ctx.leave`.

use std::sync::Arc;

use actix::prelude::*;
use cmesh_state::{FetchTransactions, Forget, GetSyncState, Id, Leave, StateActor, StateError};
use futures::channel::oneshot;

use crate::actor::{Replicator, Tracked};
use crate::error::ReplicationError;
use crate::messages::{ContextStatus, JoinContext, LeaveContext, LeftReply, Phase, StatusReply};
use crate::wire::{self, TxBatch};

/// A join's answer: at once, or once the catch-up is over.
enum Joined {
    Now(Box<Result<StatusReply, ReplicationError>>),
    Later(oneshot::Receiver<Result<StatusReply, Arc<ReplicationError>>>),
}

impl Replicator {
    fn status(&self, context: Id) -> Result<StatusReply, ReplicationError> {
        self.contexts
            .get(&context)
            .map(|tracked| tracked.status(context))
            .ok_or(ReplicationError::Gone("status"))
    }

    /// The status now, or (`wait`) once the running catch-up is over.
    fn answer_join(&mut self, context: Id, wait: bool) -> Joined {
        match self.contexts.get_mut(&context) {
            Some(tracked) if wait && tracked.syncing => {
                let (waiter, answer) = oneshot::channel();
                tracked.waiters.push(waiter);
                Joined::Later(answer)
            }
            _ => Joined::Now(Box::new(self.status(context))),
        }
    }
}

/// What the waiting join is told, with the local root once the catch-up succeeded.
async fn joined(context: Id, joined: Joined, state: Addr<StateActor>) -> Result<StatusReply, ReplicationError> {
    let status = match joined {
        Joined::Now(status) => return *status,
        Joined::Later(answer) => answer
            .await
            .map_err(|_| ReplicationError::Gone("replicator"))?
            .map_err(|source| ReplicationError::JoinFailed { context, source })?,
    };
    with_local(status, &state).await
}

/// Adds this node's applied count, root and heads, once it holds the context.
async fn with_local(mut status: StatusReply, state: &Addr<StateActor>) -> Result<StatusReply, ReplicationError> {
    let context = status.context;
    match state.send(GetSyncState { context }).await {
        Ok(Ok(local)) => {
            status.applied = Some(local.applied);
            status.root = Some(local.root);
            status.heads = Some(local.heads);
            Ok(status)
        }
        Ok(Err(StateError::NotFound(_))) => Ok(status),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ReplicationError::Gone("state")),
    }
}

impl Handler<JoinContext> for Replicator {
    type Result = ResponseActFuture<Self, Result<StatusReply, ReplicationError>>;

    fn handle(&mut self, msg: JoinContext, _: &mut Context<Self>) -> Self::Result {
        let JoinContext { context, wait } = msg;
        let state = self.link.state.clone();
        match self.contexts.get(&context).map(|t| t.phase) {
            Some(Phase::Joining) | Some(Phase::CatchingUp) => {
                let answer = self.answer_join(context, wait);
                return Box::pin(async move { joined(context, answer, state).await }.into_actor(self));
            }
            Some(Phase::InSync) => {
                return Box::pin(fut::ready(Err(ReplicationError::Conflict(format!(
                    "this node holds context {context} already"
                )))))
            }
            Some(Phase::Failed) | None => {}
        }
        // A member must accept this node before the join is under way: a node that was
        // not invited hears so now, not from `ctx.status`.
        let link = self.link.clone();
        let accepted = async move { link.remote_state(context, None).await };
        Box::pin(accepted.into_actor(self).then(move |remote, act, ctx| {
            let answer = match remote {
                Ok(remote) => {
                    let tracked = act
                        .contexts
                        .entry(context)
                        .or_insert_with(|| Tracked::new(Phase::Joining));
                    tracked.phase = Phase::Joining;
                    act.catch_up(context, Some(remote.node), ctx);
                    act.answer_join(context, wait)
                }
                Err(e) => Joined::Now(Box::new(Err(e))),
            };
            async move { joined(context, answer, state).await }.into_actor(act)
        }))
    }
}

impl Handler<ContextStatus> for Replicator {
    type Result = ResponseActFuture<Self, Result<StatusReply, ReplicationError>>;

    fn handle(&mut self, msg: ContextStatus, _: &mut Context<Self>) -> Self::Result {
        let context = msg.context;
        let status = self.status(context).map_err(|_| {
            ReplicationError::NotFound(format!("context {context} is neither held nor being joined here"))
        });
        let state = self.link.state.clone();
        Box::pin(async move { with_local(status?, &state).await }.into_actor(self))
    }
}

impl Handler<LeaveContext> for Replicator {
    type Result = ResponseActFuture<Self, Result<LeftReply, ReplicationError>>;

    fn handle(&mut self, msg: LeaveContext, _: &mut Context<Self>) -> Self::Result {
        let context = msg.context;
        let link = self.link.clone();
        let leave = async move {
            let left = link
                .state
                .send(Leave { context })
                .await
                .map_err(|_| ReplicationError::Gone("state"))??;
            // The others hear of the leave before this node forgets the context: once
            // forgotten, it could not answer for the transaction.
            if let Some(tx) = left.tx {
                let txs = link
                    .state
                    .send(FetchTransactions { context, ids: vec![tx] })
                    .await
                    .map_err(|_| ReplicationError::Gone("state"))??;
                let payload = wire::encode(&TxBatch {
                    txs: txs.into_iter().map(serde_bytes::ByteBuf::from).collect(),
                })?;
                link.bus.publish(wire::txs_subject(&context), payload.into()).await?;
                link.bus.flush().await?;
                link.confirm_held(context, tx).await?;
            }
            let forgotten = link
                .state
                .send(Forget { context })
                .await
                .map_err(|_| ReplicationError::Gone("state"))??;
            Ok(LeftReply {
                context,
                tx: left.tx,
                deleted: forgotten.transactions,
            })
        };
        Box::pin(leave.into_actor(self).map(move |result, act, _| {
            if result.is_ok() {
                act.contexts.remove(&context);
            }
            result
        }))
    }
}
