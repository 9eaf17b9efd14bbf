//! A node: a named member of a cluster that serves services and calls them.
//! `Node` is a cheap handle; clones share the same node.
//!
//! | file | what it owns |
//! |---|---|
//! | `api` | [`Node`] and its public API: serving, discovery, calls by name, membership |
//! | `coordination` | locks, global names and the consensus group's membership |
//! | `builder` | [`NodeBuilder`]: settings, and starting a node step by step |
//! | `config` | [`NodeConfig`]: settings from a file and the environment |
//! | `parts` | what a node is made of, and the glue between the layers |
//! | `drain` | [`Node::drain`]: leaving without a caller noticing |
//! | `stats` | [`NodeStats`]: a node's own figures |
//! | `introspect` | `malla.Introspect`, the service that serves them to other nodes |

mod api;
mod builder;
mod config;
mod coordination;
mod drain;
mod introspect;
mod parts;
mod singletons;
mod stats;
#[cfg(feature = "tower")]
mod tower;

pub use api::Node;
pub use builder::{
    COOKIE_ENV, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HANDLERS, DEFAULT_MAX_HANDSHAKES, DEFAULT_RECONNECT_INTERVAL,
    NodeBuilder,
};
pub use config::NodeConfig;
pub use drain::DrainReport;
pub use stats::{NodeStats, ServiceStats};
#[cfg(feature = "tower")]
pub use tower::{CallService, NamedCall};

#[cfg(test)]
mod tests;
