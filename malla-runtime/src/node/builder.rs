//! Configuration of a node before it starts.

use std::sync::Arc;

use super::{Node, NodeInner, events};
use crate::registry::Registry;
use crate::{Error, NodeId};

/// Configures and starts a [`Node`]; made by [`Node::builder`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
}

impl NodeBuilder {
    pub(crate) fn new(name: String) -> Self {
        NodeBuilder { name }
    }

    /// Starts the node.
    pub async fn start(self) -> Result<Node, Error> {
        NodeId::validate(&self.name).map_err(Error::Config)?;
        Ok(Node {
            inner: Arc::new(NodeInner {
                id: NodeId::from(self.name),
                registry: Registry::default(),
                events: events::channel(),
            }),
        })
    }
}
