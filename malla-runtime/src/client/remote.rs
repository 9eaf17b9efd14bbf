//! The seam between the call path and the network: one request to one node.
//! The network implements it; unit tests of the failover rule implement it
//! with a scripted fake.

use std::future::Future;
use std::sync::Arc;

use crate::NodeId;
use crate::connection::{CallError, Deadline, ReplyBody, Request};
use crate::net::Network;

/// Why a remote attempt has no reply.
#[derive(Debug)]
pub(crate) enum RemoteError {
    /// No connection to the node could be had: the request was not sent.
    Unreachable,
    /// The connection failed the call.
    Call(CallError),
}

/// Sends requests to other nodes.
pub(crate) trait Remote: Send + Sync {
    /// The name of this node.
    fn me(&self) -> &NodeId;

    /// Whether this node is hidden (a tool).
    fn is_hidden(&self) -> bool;

    /// Calls from this node to `node` waiting for their replies now.
    fn in_flight(&self, node: &NodeId) -> usize;

    /// Sends `request` to `node` and waits for the reply until `deadline`.
    fn call(
        &self,
        node: &NodeId,
        request: Request<'_>,
        deadline: Deadline,
    ) -> impl Future<Output = Result<ReplyBody, RemoteError>> + Send;
}

impl Remote for Arc<Network> {
    fn me(&self) -> &NodeId {
        Network::me(self)
    }

    fn is_hidden(&self) -> bool {
        self.identity.hidden
    }

    fn in_flight(&self, node: &NodeId) -> usize {
        self.calls_in_flight(node)
    }

    async fn call(&self, node: &NodeId, request: Request<'_>, deadline: Deadline) -> Result<ReplyBody, RemoteError> {
        let (conn, deadline) = match self.connection_now(node) {
            Some(conn) => (conn, deadline),
            // Dialing (a connect and a handshake) is a large future: boxed,
            // so that every call's future is not that size.
            None => {
                let conn = Box::pin(self.connection_to(node, deadline.at()))
                    .await
                    .map_err(|_| RemoteError::Unreachable)?;
                (conn, deadline.refreshed())
            }
        };
        match conn.call(request, deadline).await {
            // Retired just now for a duplicate that won the tie-break (both
            // nodes dialed at once): the request did not leave; the winner
            // takes it.
            Err(CallError::NotSent) if !conn.is_closed() => match self.connection_now(node) {
                // Boxed: rare, and as large as the call itself.
                Some(winner) if !Arc::ptr_eq(&winner, &conn) => Box::pin(winner.call(request, deadline.refreshed()))
                    .await
                    .map_err(RemoteError::Call),
                _ => Err(RemoteError::Call(CallError::NotSent)),
            },
            result => result.map_err(RemoteError::Call),
        }
    }
}
