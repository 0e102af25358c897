//! openraft's network over NATS: each RPC is a signed request to the target's subject
//! (see [`crate::wire`]), answered with the target's signed reply.

use std::sync::Arc;

use cmesh_common::Address;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, EmptyNode, RPCTypes};

use crate::raft_types::MeshRaft;
use crate::requester::{CallError, Requester};
use crate::wire::{Rpc, RpcReply};

/// Makes a [`PeerClient`] per Raft peer; all share this node's [`Requester`].
#[derive(Clone)]
pub struct NatsNetwork {
    requester: Arc<Requester>,
}

impl NatsNetwork {
    pub fn new(requester: Arc<Requester>) -> NatsNetwork {
        NatsNetwork { requester }
    }
}

impl RaftNetworkFactory<MeshRaft> for NatsNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: Address, _node: &EmptyNode) -> PeerClient {
        PeerClient {
            requester: self.requester.clone(),
            target,
        }
    }
}

pub struct PeerClient {
    requester: Arc<Requester>,
    target: Address,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<Address, EmptyNode, RaftError<Address, E>>>;

impl PeerClient {
    async fn send<E: std::error::Error>(
        &self,
        action: RPCTypes,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<RpcReply, RPCError<Address, EmptyNode, RaftError<Address, E>>> {
        let timeout = option.hard_ttl();
        let entries = match &rpc {
            Rpc::Append(request) => request.entries.len(),
            _ => 0,
        };
        match self.requester.call(self.target, rpc, timeout).await {
            Ok(RpcReply::Refused(reason)) => {
                tracing::warn!(peer = %self.target, %reason, "a Raft peer refuses this node");
                Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(reason))))
            }
            Ok(reply) => Ok(reply),
            Err(CallError::TimedOut { .. }) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.requester.key().address(),
                target: self.target,
                timeout,
            })),
            // Fewer entries per message until it fits under NATS's max_payload.
            Err(CallError::TooLarge { .. }) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2) as u64),
            )),
            Err(error @ CallError::NoResponders { .. }) => Err(RPCError::Unreachable(Unreachable::new(&error))),
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, reply: RpcReply) -> RPCError<Address, EmptyNode, RaftError<Address, E>> {
        let reason = format!("{} answered with the wrong kind of reply: {reply:?}", self.target);
        RPCError::Network(NetworkError::new(&AnyError::error(reason)))
    }

    fn remote<E: std::error::Error>(
        &self,
        error: RaftError<Address, E>,
    ) -> RPCError<Address, EmptyNode, RaftError<Address, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }
}

impl RaftNetwork<MeshRaft> for PeerClient {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<MeshRaft>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<Address>> {
        match self
            .send(RPCTypes::AppendEntries, Rpc::Append(request), &option)
            .await?
        {
            RpcReply::Append(Ok(response)) => Ok(response),
            RpcReply::Append(Err(error)) => Err(self.remote(error)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<MeshRaft>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<Address>, InstallSnapshotError> {
        match self
            .send(RPCTypes::InstallSnapshot, Rpc::Snapshot(request), &option)
            .await?
        {
            RpcReply::Snapshot(Ok(response)) => Ok(response),
            RpcReply::Snapshot(Err(error)) => Err(self.remote(error)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(&mut self, request: VoteRequest<Address>, option: RPCOption) -> RpcResult<VoteResponse<Address>> {
        match self.send(RPCTypes::Vote, Rpc::Vote(request), &option).await? {
            RpcReply::Vote(Ok(response)) => Ok(response),
            RpcReply::Vote(Err(error)) => Err(self.remote(error)),
            other => Err(self.unexpected(other)),
        }
    }
}
