//! The one place where the layers meet: a node's parts, and the glue that
//! carries what one layer reports to the layers that act on it.
//!
//! - link events (a connection up or closed, a dial failed) come here as
//!   values, in order: the network takes in the closes, membership the
//!   rest (routes, events); a hidden node that disconnected is forgotten by
//!   both;
//! - gossip views go to the network first (addresses to dial), then to
//!   membership, whose verdict closes the connections of dead nodes,
//!   forgets the nodes gossip forgot and keeps the live ones connected;
//! - the reconnect loop asks which addresses are known and reaches out to
//!   the others through gossip, or by dialing when the node does not gossip;
//! - a served service is published to gossip, the events and the waiters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::introspect::{Figures, Introspect};
use super::stats::NodeStats;
use crate::client::Layers;
use crate::cluster::{Dns, Reach};
use crate::connection::{Connection, LinkEvent, LinkEvents, LinkOwner};
use crate::coord::{Cluster, CoordConfig, Coordinator, RaftService};
use crate::discovery::advert::{Gossiped, RaftAdvert, ServiceAdvert};
use crate::discovery::{Discovery, ViewSink};
use crate::events::Event;
use crate::intercept::served::Installed;
use crate::membership::Membership;
use crate::net::Network;
use crate::registry::{LocalService, Registry, Route};
use crate::{AdminStatus, Error, NodeId, ServeInterceptor, Service, SingletonStatus};

/// Everything a node is made of; `Node` handles share one.
pub(super) struct NodeParts {
    pub(super) id: NodeId,
    pub(super) registry: Arc<Registry>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) network: Arc<Network>,
    pub(super) membership: Membership,
    /// Locks, names and the consensus group.
    pub(super) coord: Arc<Coordinator>,
    /// Set once gossip has started (nodes that listen or have seeds).
    pub(super) discovery: OnceLock<Discovery>,
    /// The DNS resolver of connect targets, built on first use.
    dns: OnceLock<Arc<Dns>>,
    /// Name servers for it; the system's if empty.
    dns_servers: Vec<SocketAddr>,
    /// When the node was assembled, for its uptime.
    pub(super) started: std::time::Instant,
    pub(super) layers: NodeLayers,
    this: Weak<NodeParts>,
}

/// The node's own interceptors.
pub(super) struct NodeLayers {
    /// Around its clients' calls, outermost first.
    pub(super) calls: Layers,
    /// Before its services' handlers, ahead of each service's own.
    pub(super) served: Installed<dyn ServeInterceptor>,
}

impl NodeParts {
    /// Assembles the parts around `network`, which reports its links to them.
    pub(super) fn new(
        id: NodeId,
        incarnation: u64,
        dns_servers: Vec<SocketAddr>,
        coordination: CoordConfig,
        layers: NodeLayers,
        network: impl FnOnce(Arc<Registry>, Arc<LinkEvents>) -> Network,
    ) -> Arc<NodeParts> {
        Arc::new_cyclic(|this: &Weak<NodeParts>| {
            let registry = Arc::new(Registry::default());
            let events = crate::events::channel();
            let links = LinkEvents::new(this.clone() as Weak<dyn LinkOwner<Connection>>);
            let network = Arc::new(network(Arc::clone(&registry), links));
            let cluster = this.clone() as Weak<dyn Cluster>;
            let coord = Coordinator::new(id.clone(), incarnation, coordination, Arc::clone(&network), cluster);
            // Every node answers `Node::stats_of` and the consensus group's
            // requests, unpublished.
            let introspect = Introspect {
                node: this.clone() as Weak<dyn Figures>,
            };
            let raft = RaftService {
                coordinator: Arc::downgrade(&coord),
            };
            let builtin: [Box<dyn Service>; 2] = [Box::new(introspect), Box::new(raft)];
            for service in builtin {
                let local = Arc::new(LocalService::new(&id, service, BTreeMap::new(), AdminStatus::Active));
                registry.slot(local.name()).update(|route| Route {
                    local: Some(local),
                    remote: Arc::clone(&route.remote),
                });
            }
            NodeParts {
                membership: Membership::new(id.clone(), Arc::clone(&registry), events.clone()),
                network,
                coord,
                id,
                registry,
                events,
                discovery: OnceLock::new(),
                dns: OnceLock::new(),
                dns_servers,
                started: std::time::Instant::now(),
                layers,
                this: this.clone(),
            }
        })
    }

    /// The resolver of connect targets.
    pub(super) fn dns(&self) -> Result<Arc<Dns>, Error> {
        if let Some(dns) = self.dns.get() {
            return Ok(Arc::clone(dns));
        }
        let dns = Arc::new(Dns::new(&self.dns_servers)?);
        Ok(Arc::clone(self.dns.get_or_init(|| dns)))
    }

    /// Connects to the node listening at `addr` and introduces this node to
    /// the rest of its cluster.
    pub(super) async fn connect(&self, addr: SocketAddr) -> Result<NodeId, Error> {
        let deadline = Instant::now() + self.network.dial_timeout();
        let conn = self.network.dial(addr, deadline).await?;
        // Gossip on the same port: the rest of the cluster learns of us.
        if let Some(discovery) = self.discovery.get() {
            discovery.introduce(conn.peer.listen.unwrap_or(addr));
        }
        Ok(conn.peer.name.clone())
    }

    /// Tells the cluster (gossip, events, waiters) about a local service's
    /// state. Services that are not global are never published.
    pub(super) async fn publish(&self, local: &LocalService) {
        let status = local.admin_status();
        if let (true, Some(discovery)) = (local.manifest.is_global(), self.discovery.get()) {
            let advert = ServiceAdvert {
                vsn: local.manifest.vsn().to_owned(),
                status: status.into(),
                meta: local.metadata.clone(),
                sigs: local
                    .manifest
                    .methods()
                    .iter()
                    .map(|m| (m.id(), m.signature()))
                    .collect(),
            };
            discovery
                .publish_service(local.manifest, &advert, self.network.connected_addrs())
                .await;
        }
        let (service, node) = (local.name().to_owned(), self.id.clone());
        let event = if status == AdminStatus::Active {
            Event::ServiceUp { service, node }
        } else {
            Event::ServiceDown { service, node }
        };
        let _ = self.events.send(event);
        self.membership.touch();
    }

    /// Leaves the cluster: says so in gossip and gives it about two rounds
    /// to spread, so peers stop routing here before the connections go;
    /// then hangs up.
    pub(super) async fn shutdown(&self) {
        if !self.network.begin_shutdown() {
            return;
        }
        tracing::info!(node = %self.id, "shutting down");
        // What this node holds is free before the others stop routing here.
        self.coord.leave().await;
        if let Some(discovery) = self.discovery.get() {
            discovery.leave(self.network.connected_addrs()).await;
            tokio::time::sleep(discovery.interval * 2).await;
        }
        self.network.hang_up().await;
        self.coord.shutdown().await;
        if let Some(discovery) = self.discovery.get() {
            discovery.stop().await;
        }
    }
}

impl Cluster for NodeParts {
    fn adverts(&self) -> Vec<(NodeId, RaftAdvert)> {
        self.membership.raft_adverts()
    }

    fn publish(&self, advert: RaftAdvert) {
        let Some(parts) = self.this.upgrade() else { return };
        if parts.discovery.get().is_none() || parts.network.identity.hidden {
            return;
        }
        tokio::spawn(async move {
            if let Some(discovery) = parts.discovery.get() {
                discovery.publish_raft(&advert).await;
            }
        });
    }
}

impl Figures for NodeParts {
    fn stats(&self) -> NodeStats {
        let gossip = self.discovery.get().map(|d| d.stats());
        NodeStats::collect(&self.id, self.started.elapsed(), &self.registry, &self.network, gossip)
    }

    fn singletons(&self) -> Vec<SingletonStatus> {
        let locals = self.registry.locals();
        locals
            .iter()
            .filter_map(|l| Some(l.singleton.as_ref()?.status()))
            .collect()
    }
}

impl LinkOwner<Connection> for NodeParts {
    fn handle(&self, event: LinkEvent) {
        match event {
            // Not if it closed before its adoption was handled.
            LinkEvent::Up(conn) if conn.is_usable() => self.membership.link_up(&conn.peer.name, conn.peer.hidden),
            LinkEvent::Up(_) => {}
            LinkEvent::Closed(conn, reason) => {
                if self.network.connection_closed(&conn, &reason) {
                    // Out at once, before gossip agrees.
                    self.link_broken(&conn.peer.name);
                }
            }
            // Not if the peer connected meanwhile.
            LinkEvent::DialFailed(peer) if self.network.connection_now(&peer).is_none() => self.link_broken(&peer),
            LinkEvent::DialFailed(_) => {}
        }
    }
}

impl NodeParts {
    fn link_broken(&self, peer: &NodeId) {
        if self.membership.link_broken(peer) {
            self.network.forget(peer);
        }
    }
}

impl ViewSink for NodeParts {
    fn gossip_changed(&self, view: BTreeMap<NodeId, Gossiped>) {
        // Addresses first: a caller woken by the new routes must find them.
        for (id, gossiped) in &view {
            if let Some(rpc) = gossiped.advertised.rpc {
                self.network.set_addr(id, rpc);
            }
        }
        let change = self.membership.gossip_changed(view);
        for id in &change.dead {
            self.network.close_peer(id, "gossip declared the node dead");
        }
        for id in &change.forgotten {
            self.network.forget(id);
        }
        self.network.keep_connected(self.membership.connect_targets());
    }
}

impl Reach for NodeParts {
    fn known_addrs(&self) -> BTreeSet<SocketAddr> {
        let mut known: BTreeSet<SocketAddr> = self.membership.up_addrs().into_iter().collect();
        known.extend(self.network.connected_addrs());
        known.extend(self.network.bound_addr());
        known.extend(self.network.identity.listen);
        known
    }

    fn reach_out(&self, addr: SocketAddr) {
        match self.discovery.get() {
            Some(discovery) => discovery.introduce(addr),
            None => {
                let Some(parts) = self.this.upgrade() else { return };
                tokio::spawn(async move {
                    let _ = parts.connect(addr).await;
                });
            }
        }
    }
}

impl Drop for NodeParts {
    fn drop(&mut self) {
        // The last handle is gone: stop listening and hang up.
        self.network.close_all("the node was dropped");
    }
}
