//! What the network tells the layer above it about links to other nodes.

use crate::NodeId;

/// Receives the state changes of this node's links.
pub(crate) trait LinkEvents: Send + Sync + 'static {
    /// A connection to `peer` came up where there was none usable.
    fn link_up(&self, peer: &NodeId, hidden: bool);
    /// The connection to `peer` closed, or dialing it failed.
    fn link_broken(&self, peer: &NodeId);
}
