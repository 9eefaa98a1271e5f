//! openraft's network traits over a [`Transport`]: one factory per group,
//! every group of a node sharing the node's transport.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::TypeConfig;
use super::{decode, encode, GroupId, NodeId, RaftRpc, RaftRpcReply, Transport, TransportError};

/// Makes the clients one group's Raft sends its RPCs through.
pub struct NetworkFactory {
    group: GroupId,
    transport: Arc<dyn Transport>,
}

impl NetworkFactory {
    pub fn new(group: GroupId, transport: Arc<dyn Transport>) -> Self {
        NetworkFactory { group, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            group: self.group,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// RPCs of one group to one target node.
pub struct Network {
    group: GroupId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl Network {
    /// Sends `rpc` and returns the target's reply, mapped onto openraft's
    /// error kinds.
    async fn call<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
    ) -> Result<RaftRpcReply, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let bytes = self
            .transport
            .call(self.target, &self.addr, self.group, encode(&rpc))
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Network { .. } => RPCError::Network(NetworkError::new(&e)),
            })?;
        let reply: RaftRpcReply = decode(&bytes).map_err(|e| {
            RPCError::Network(NetworkError::new(&std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e,
            )))
        })?;
        if let RaftRpcReply::NoGroup = reply {
            // The target has not created this group yet (or removed it):
            // as good as unreachable, so Raft backs off instead of spinning.
            let e = TransportError::Unreachable {
                node: self.target,
                addr: self.addr.clone(),
                reason: format!("it has no raft group {}", self.group),
            };
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if let RaftRpcReply::NotReady(why) = reply {
            // Sent again after a short pause (openraft's snapshot retries),
            // then with the next replication attempt.
            let e = std::io::Error::other(format!("node {}: {why}", self.target));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        Ok(reply)
    }

    fn unexpected<E: std::error::Error>(
        &self,
        reply: &RaftRpcReply,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("node {} answered with the wrong kind of reply: {reply:?}", self.target),
        );
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<T, E>(
        &self,
        r: Result<T, RaftError<NodeId, E>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error,
    {
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let (started, entries) = (std::time::Instant::now(), rpc.entries.len());
        let reply = match self.call(RaftRpc::Append(rpc)).await? {
            RaftRpcReply::Append(r) => self.remote(r),
            other => Err(self.unexpected(&other)),
        };
        if entries > 0 {
            tracing::debug!(target: super::TIMING, stage = "append_rpc", entries, us = started.elapsed().as_micros() as u64);
        }
        reply
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        match self.call(RaftRpc::Snapshot(rpc)).await? {
            RaftRpcReply::Snapshot(r) => self.remote(r),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        match self.call(RaftRpc::Vote(rpc)).await? {
            RaftRpcReply::Vote(r) => self.remote(r),
            other => Err(self.unexpected(&other)),
        }
    }
}
