//! Cluster events, as `net_kernel:monitor_nodes/1` and Malla's service
//! up/down notifications give them.

use tokio::sync::broadcast;

use crate::NodeId;

/// Something changed in the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A visible node became reachable.
    NodeUp(NodeId),
    /// A visible node stopped being reachable (connection lost, left, or
    /// declared dead).
    NodeDown(NodeId),
    /// An instance of a service became callable on a node.
    ServiceUp {
        /// Wire name of the service.
        service: String,
        /// The node running it.
        node: NodeId,
    },
    /// An instance of a service stopped being callable on a node.
    ServiceDown {
        /// Wire name of the service.
        service: String,
        /// The node that ran it.
        node: NodeId,
    },
}

/// Capacity of the event channel; a receiver that falls further behind gets
/// `RecvError::Lagged` and misses the oldest events.
pub(crate) const EVENT_CAPACITY: usize = 1024;

pub(crate) fn channel() -> broadcast::Sender<Event> {
    broadcast::channel(EVENT_CAPACITY).0
}
