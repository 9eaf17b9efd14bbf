//! openraft's network, carried by the node's own connections: every RPC
//! between members is a request to the target's `malla.Raft` service on the
//! one sealed connection between the two nodes, dialed if needed.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::types::{Member, TypeConfig};
use super::wire::{Method, SERVICE};
use crate::NodeId;
use crate::connection::{CallError, Deadline, Request};
use crate::net::Network;
use crate::wire::Format;

/// Opens a [`Peer`] per member the leader replicates to.
pub(crate) struct Transport {
    pub(crate) network: Arc<Network>,
}

impl RaftNetworkFactory<TypeConfig> for Transport {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Peer {
        Peer {
            network: Arc::clone(&self.network),
            node: NodeId::from(node.name.as_str()),
            target,
        }
    }
}

/// One member, as another reaches it.
pub(crate) struct Peer {
    network: Arc<Network>,
    node: NodeId,
    target: u64,
}

/// Why an RPC got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RpcFailure(pub(crate) String);

/// How an RPC failed, before openraft's error types.
pub(crate) enum Failed {
    /// No connection could be had, or it broke before the request left.
    Unreachable(RpcFailure),
    /// Sent, and then lost, timed out or refused.
    Network(RpcFailure),
}

impl Peer {
    async fn rpc<Q: Serialize, A: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        method: Method,
        request: &Q,
        ttl: Duration,
    ) -> Result<A, RPCError<u64, Member, E>> {
        let reply: Result<A, E> = call(&self.network, &self.node, method, request, ttl)
            .await
            .map_err(|failed| match failed {
                Failed::Unreachable(why) => RPCError::Unreachable(Unreachable::new(&why)),
                Failed::Network(why) => RPCError::Network(NetworkError::new(&why)),
            })?;
        reply.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

/// Sends `request` to `node`'s `malla.Raft.<method>` and decodes the answer.
pub(crate) async fn call<Q: Serialize, A: DeserializeOwned>(
    network: &Arc<Network>,
    node: &NodeId,
    method: Method,
    request: &Q,
    ttl: Duration,
) -> Result<A, Failed> {
    let deadline = Instant::now() + ttl;
    let body = postcard::to_allocvec(request).map_err(|e| Failed::Network(RpcFailure(e.to_string())))?;
    let conn = match network.connection_now(node) {
        Some(conn) => conn,
        None => network
            .connection_to(node, deadline)
            .await
            .map_err(|e| Failed::Unreachable(RpcFailure(e.to_string())))?,
    };
    let request = Request {
        service: SERVICE,
        method: method.id(),
        signature: 0,
        format: Format::Postcard,
        body: &body,
        trace: None,
        metadata: &[],
    };
    let reply = conn.call(request, Deadline::from_now(deadline)).await.map_err(|err| {
        let why = RpcFailure(format!("{} to {node}: {err:?}", method.name()));
        match err {
            CallError::NotSent => Failed::Unreachable(why),
            _ => Failed::Network(why),
        }
    })?;
    crate::wire::bounded::from_bytes(&reply)
        .map_err(|e| Failed::Network(RpcFailure(format!("a bad answer from {node}: {e}"))))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.rpc(Method::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
        self.rpc(Method::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.rpc(Method::Vote, &rpc, option.hard_ttl()).await
    }
}
