//! A node: a named member of a cluster that serves services and calls them.
//! `Node` is a cheap handle; clones share the same node.

mod builder;
mod cluster;
mod config;
mod events;
mod net;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

pub use builder::{COOKIE_ENV, DEFAULT_MAX_FRAME_SIZE, DEFAULT_RECONNECT_INTERVAL, NodeBuilder};
pub use config::NodeConfig;
pub use events::Event;
pub(crate) use net::{Net, NetConfig, accept_loop};

use crate::discovery::Discovery;
use crate::discovery::advert::ServiceAdvert;
use crate::membership::Membership;
use crate::registry::{LocalService, Registry};
use crate::{AdminStatus, Error, NodeId, Service};

/// A member of a malla cluster.
///
/// ```
/// # async fn demo() -> Result<(), malla_runtime::Error> {
/// let node = malla_runtime::Node::builder("node1").start().await?;
/// assert_eq!(node.id().as_str(), "node1");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) net: Net,
    pub(crate) membership: Membership,
    /// Set once gossip has started (nodes that listen or have seeds).
    pub(crate) discovery: OnceLock<Discovery>,
    /// The DNS resolver of connect targets, built on first use.
    pub(crate) dns: OnceLock<crate::cluster::Dns>,
    /// Name servers for it; the system's if empty.
    pub(crate) dns_servers: Vec<std::net::SocketAddr>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        // The last handle is gone: stop listening and hang up.
        self.net.stop.cancel();
        for peer in self.net.peers.all() {
            if let Some(conn) = peer.connection() {
                conn.close(crate::connection::CloseReason::Local("the node was dropped"));
            }
        }
    }
}

/// How a service is served: its initial admin status and the metadata
/// published with it.
///
/// ```
/// let opts = malla_runtime::ServeOptions::default().metadata("zone", "eu-1").paused();
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    metadata: BTreeMap<String, String>,
    paused: bool,
}

impl ServeOptions {
    /// Adds a metadata entry, published with the instance (keep it small: it
    /// travels in gossip).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Starts the service `Paused`, as Malla's `paused: true`.
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }
}

impl Node {
    /// Starts configuring a node called `name`.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder::new(name.into())
    }

    /// This node's name.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// Serves a service on this node. Clients on this node call it directly;
    /// if it is `global`, every node of the cluster can call it.
    ///
    /// Fails with [`Error::AlreadyServed`] if a service of the same name is
    /// already served here.
    pub async fn serve<S: Service>(&self, service: S) -> Result<(), Error> {
        self.serve_with(service, ServeOptions::default()).await
    }

    /// [`serve`](Self::serve) with metadata or an initial admin status.
    pub async fn serve_with<S: Service>(&self, service: S, options: ServeOptions) -> Result<(), Error> {
        let admin = if options.paused {
            AdminStatus::Paused
        } else {
            AdminStatus::Active
        };
        let local = Arc::new(LocalService::new(Box::new(service), options.metadata, admin));
        let name = local.name().to_owned();
        let slot = self.inner.registry.slot(&name);
        let mut already = false;
        slot.update(|route| {
            already = route.local.is_some();
            crate::registry::Route {
                local: if already {
                    route.local.clone()
                } else {
                    Some(Arc::clone(&local))
                },
                remote: Arc::clone(&route.remote),
            }
        });
        if already {
            return Err(Error::AlreadyServed(name));
        }
        tracing::info!(node = %self.inner.id, service = %name, global = local.manifest.is_global(), "serving");
        self.published(&local).await;
        Ok(())
    }

    /// Tells the cluster (gossip, events, waiters) about a local service's
    /// state. Services that are not global are never published.
    async fn published(&self, local: &LocalService) {
        let status = local.admin_status();
        if let (true, Some(discovery)) = (local.manifest.is_global(), self.inner.discovery.get()) {
            let advert = ServiceAdvert {
                vsn: local.manifest.vsn().to_owned(),
                status: status.into(),
                meta: local.metadata.clone(),
            };
            discovery
                .publish_service(local.manifest, &advert, self.inner.connected_addrs())
                .await;
        }
        let (service, node) = (local.name().to_owned(), self.inner.id.clone());
        let event = if status == AdminStatus::Active {
            Event::ServiceUp { service, node }
        } else {
            Event::ServiceDown { service, node }
        };
        let _ = self.inner.events.send(event);
        self.inner.membership.touch();
    }

    /// Sets the admin status of a service served here. `Paused` and
    /// `Inactive` make it answer `ServiceNotAvailable`, so callers fail over.
    pub async fn set_admin_status(&self, service: &str, status: AdminStatus) -> Result<(), Error> {
        let local = self
            .inner
            .registry
            .local(service)
            .ok_or_else(|| Error::NotServed(service.to_owned()))?;
        let previous = local.set_admin_status(status);
        self.inner.registry.slot(service).refresh();
        if previous != status {
            tracing::info!(node = %self.inner.id, service, ?status, "admin status changed");
            self.published(&local).await;
        }
        Ok(())
    }

    /// The admin status of a service served here.
    pub fn admin_status(&self, service: &str) -> Option<AdminStatus> {
        self.inner.registry.local(service).map(|l| l.admin_status())
    }

    /// Names of the services served on this node.
    pub fn local_services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .registry
            .locals()
            .iter()
            .map(|l| l.name().to_owned())
            .collect();
        names.sort();
        names
    }

    /// A receiver of cluster events from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}
