//! What `Node::stats` reports: a node's own tallies, read without a metrics
//! recorder. Every node serves them to the others (and to `malla stats`)
//! through its built-in `malla.Introspect` service.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::Network;
use crate::registry::{Registry, is_internal};
use crate::telemetry::counters::read;
use crate::{GossipStats, NodeId};

/// One node's figures since it started.
///
/// ```no_run
/// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
/// for member in node.members() {
///     let stats = node.stats_of(&member.node).await?;
///     let served: u64 = stats.services.iter().map(|s| s.served).sum();
///     println!("{}: {served} requests served", stats.node);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node.
    pub node: NodeId,
    /// Time since the node started.
    pub uptime: Duration,
    /// Connections to other nodes open now.
    pub connections: u64,
    /// Every service the node serves or has called, by name.
    pub services: Vec<ServiceStats>,
    /// Gossip traffic, if the node gossips.
    pub gossip: Option<GossipStats>,
}

/// One service's figures on one node: as its server (`served` …
/// `in_flight`) and as a caller of it (`calls` … `failovers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceStats {
    /// The service's wire name.
    pub service: String,
    /// Requests whose handler ran here: from other nodes, and from this
    /// node's stubs and calls by name (a typed client on the same node
    /// calls the implementation directly: that is a call, not a request).
    pub served: u64,
    /// Of those, the ones that failed (bad arguments, a panic, an
    /// unencodable reply) or were dropped before answering (deadline,
    /// cancellation).
    pub serve_errors: u64,
    /// Requests refused before a handler ran: paused, unknown method, other
    /// signature, overloaded.
    pub refused: u64,
    /// Handlers running now.
    pub in_flight: u64,
    /// Calls this node's clients made, stubs included.
    pub calls: u64,
    /// Of those, the ones that returned an error.
    pub call_errors: u64,
    /// Times a call moved on to another node.
    pub failovers: u64,
}

impl NodeStats {
    /// The figures, now, of the node `node` with this registry, network
    /// and gossip, up for `uptime`.
    pub(super) fn collect(
        node: &NodeId,
        uptime: Duration,
        registry: &Registry,
        network: &Network,
        gossip: Option<GossipStats>,
    ) -> NodeStats {
        let services = registry
            .slots()
            .into_iter()
            .filter(|(name, _)| !is_internal(name))
            .filter_map(|(name, slot)| {
                let local = slot.route().local.clone();
                let calls = &slot.counters;
                if local.is_none() && calls.calls() == 0 {
                    return None;
                }
                let mut stats = ServiceStats {
                    service: name.to_string(),
                    served: 0,
                    serve_errors: 0,
                    refused: 0,
                    in_flight: 0,
                    calls: calls.calls(),
                    call_errors: calls.errors(),
                    failovers: read(&calls.failovers),
                };
                if let Some(local) = local {
                    let served = &local.telemetry.counters;
                    stats.served = served.served.read();
                    stats.serve_errors = read(&served.errors);
                    stats.refused = read(&served.refused);
                    stats.in_flight = served.in_flight();
                }
                Some(stats)
            })
            .collect();
        NodeStats {
            node: node.clone(),
            uptime,
            connections: network.open_connections() as u64,
            services,
            gossip,
        }
    }
}
