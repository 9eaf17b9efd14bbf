//! The public API of a node, in one place: serving, discovery (Malla.Node's
//! `get_nodes`, `get_services`, …), calls by name, cluster membership and
//! shutdown. Construction is the builder's.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use super::introspect::{self, Figures};
use super::parts::NodeParts;
use super::stats::NodeStats;
use crate::client::Filter;
use crate::client::{ClientCore, NameResolver, call_encoded};
use crate::cluster::ConnectTarget;
use crate::coord::NameBinding;
use crate::discovery::sealed_udp::GossipStats;
use crate::events::Event;
use crate::membership::{Instance, Member};
use crate::options::ServeOptions;
use crate::options::VsnRequirement;
use crate::placed::{NamedService, placed};
use crate::registry::{INTERNAL_PREFIX, LocalService, Route, is_internal};
use crate::singleton::{SINGLETON_METADATA, Singleton, SingletonMode, SingletonStatus};
use crate::wire::Format;
use crate::{AdminStatus, CallOptions, Error, NodeId, Service, ServiceManifest, rendezvous};

/// What a codec error of a call by name was doing.
pub(super) const ENCODE: &str = "encode the arguments of";
pub(super) const DECODE: &str = "decode the reply of";

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
    pub(super) parts: Arc<NodeParts>,
}

impl Node {
    /// This node's name.
    pub fn id(&self) -> &NodeId {
        &self.parts.id
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
        let name = service.manifest().name().to_owned();
        if is_internal(&name) {
            return Err(Error::Config(format!(
                "cannot serve `{name}`: names starting with `{INTERNAL_PREFIX}` are the runtime's own"
            )));
        }
        let interceptors = self.parts.layers.served.then(&options.interceptors);
        let singleton = options.singleton.or_else(|| service.singleton().map(Singleton::new));
        let mut metadata = options.metadata;
        if let Some(singleton) = &singleton {
            // Published, so tools (`malla singletons`) know what it is.
            metadata.insert(SINGLETON_METADATA.to_owned(), singleton.mode.as_str().to_owned());
        }
        let local = LocalService::new(&self.parts.id, Box::new(service), metadata, admin);
        let local = local.intercepted(interceptors);
        let local = Arc::new(match singleton {
            Some(singleton) => local.into_singleton(singleton),
            None => local,
        });
        let slot = self.parts.registry.slot(&name);
        let mut already = false;
        slot.update(|route| {
            already = route.local.is_some();
            Route {
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
        tracing::info!(node = %self.parts.id, service = %name, global = local.manifest.is_global(), "serving");
        self.parts.publish(&local).await;
        super::singletons::start(&self.parts, &local);
        Ok(())
    }

    /// Starts a service somewhere in the cluster, again elsewhere when it
    /// stops (Horde's `DynamicSupervisor`): of the nodes that call this for
    /// the same service, one runs an instance that `factory` builds, with
    /// the lease's fencing token in strict mode. When that node dies, is
    /// drained or stops, or loses its lease, another node builds a fresh
    /// instance; the old one is dropped once its running requests finish.
    ///
    /// It is served as a singleton ([`ServeOptions::singleton`], gossip
    /// mode unless the options say otherwise, its hooks told after the
    /// instance is built and before it is dropped): **at most one instance
    /// at a time only in strict mode**; in gossip mode each side of a
    /// partition may run one. Callers reach it wherever it runs, failing
    /// over from the nodes standing by; calls from a node running it take
    /// the encoded path, as the instance is not there to call directly.
    ///
    /// ```no_run
    /// # async fn demo<S: malla_runtime::NamedService>(
    /// #     node: malla_runtime::Node,
    /// #     ticker: fn(Option<u64>) -> S,
    /// # ) -> Result<(), malla_runtime::Error> {
    /// use malla_runtime::{ServeOptions, Singleton, SingletonMode};
    ///
    /// // `ticker` builds a generated server: `|token| TickerServer::new(Ticker::new(token))`.
    /// let strict = ServeOptions::default().singleton(Singleton::new(SingletonMode::Strict));
    /// node.spawn_somewhere(ticker, strict).await?;
    /// # Ok(()) }
    /// ```
    pub async fn spawn_somewhere<S, F>(&self, factory: F, options: ServeOptions) -> Result<(), Error>
    where
        S: NamedService,
        F: Fn(Option<u64>) -> S + Send + Sync + 'static,
    {
        let mut options = options;
        let mut singleton = options
            .singleton
            .take()
            .unwrap_or_else(|| Singleton::new(SingletonMode::default()));
        let (service, hooks) = placed(factory, singleton.hooks.take());
        singleton.hooks = Some(Arc::new(hooks));
        self.serve_with(service, options.singleton(singleton)).await
    }

    /// Sets the admin status of a service served here. `Paused` and
    /// `Inactive` make it answer `ServiceNotAvailable`, so callers fail over.
    pub async fn set_admin_status(&self, service: &str, status: AdminStatus) -> Result<(), Error> {
        let local = self
            .parts
            .registry
            .local(service)
            .ok_or_else(|| Error::NotServed(service.to_owned()))?;
        let previous = local.set_admin_status(status);
        self.parts.registry.slot(service).refresh();
        if previous != status {
            tracing::info!(node = %self.parts.id, service, ?status, "admin status changed");
            self.parts.publish(&local).await;
        }
        Ok(())
    }

    /// The admin status of a service served here.
    pub fn admin_status(&self, service: &str) -> Option<AdminStatus> {
        self.parts.registry.local(service).map(|l| l.admin_status())
    }

    /// Names of the services served on this node.
    pub fn local_services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .parts
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
        self.parts.events.subscribe()
    }

    /// Connects to the node listening at `addr` and returns its name. Both
    /// sides must share the cookie.
    ///
    /// Fails with [`Error::Unauthorized`] if the cookies differ,
    /// [`Error::Handshake`] for another handshake failure (protocol version,
    /// duplicate node name, timeout) and [`Error::Connect`] if nothing
    /// answers.
    pub async fn connect(&self, addr: SocketAddr) -> Result<NodeId, Error> {
        self.parts.connect(addr).await
    }

    /// The visible nodes that are up, sorted by name: connected, or live in
    /// gossip and not cut off (hidden nodes are not listed, as in Erlang's
    /// `nodes()`).
    pub fn nodes(&self) -> Vec<NodeId> {
        self.parts.membership.up_nodes()
    }

    /// This node's gossip, for the discovery tests.
    #[cfg(test)]
    pub(crate) fn discovery(&self) -> Option<&crate::discovery::Discovery> {
        self.parts.discovery.get()
    }

    /// The address this node's listener is bound to, if it listens: with
    /// port 0, the port it got.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.parts.network.bound_addr()
    }

    /// The address other nodes reach this one at, if it listens: the
    /// builder's [`advertise`](crate::NodeBuilder::advertise), else the
    /// listen address with an unspecified IP made concrete.
    pub fn advertised_addr(&self) -> Option<SocketAddr> {
        self.parts.network.identity.listen
    }

    /// Whether this node was built `.hidden()`.
    pub fn is_hidden(&self) -> bool {
        self.parts.network.identity.hidden
    }

    /// Leaves the cluster gracefully: stops accepting connections, tells every
    /// peer to send no new requests, lets calls in flight finish (up to 2 s),
    /// then closes every connection.
    pub async fn shutdown(&self) {
        self.parts.shutdown().await;
    }

    /// Resolves `target` (an address, `host:port`, or an SRV name such as
    /// `_malla._tcp.example.com`) and connects to every node it names, as
    /// Malla's `Cluster.connect/1`. Returns the nodes connected; fails only if
    /// none could be.
    ///
    /// ```no_run
    /// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
    /// let peers = node.cluster_connect("malla.default.svc.cluster.local:7000").await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_connect(&self, target: &str) -> Result<Vec<NodeId>, Error> {
        let target: ConnectTarget = target.parse()?;
        let addrs = self.parts.dns()?.resolve(&target).await?;
        let mut connected = Vec::new();
        let mut first_error = None;
        for addr in addrs {
            if Some(addr) == self.local_addr() || Some(addr) == self.advertised_addr() {
                continue;
            }
            match self.connect(addr).await {
                Ok(id) => connected.push(id),
                Err(err) => {
                    tracing::warn!(node = %self.parts.id, %target, %addr, "cannot connect: {err}");
                    first_error.get_or_insert(err);
                }
            }
        }
        match (connected.is_empty(), first_error) {
            (true, Some(err)) => Err(err),
            _ => Ok(connected),
        }
    }

    /// The nodes with a running instance of `service`, in the order calls try
    /// them: this node first if it runs it, then the others in a random order
    /// drawn again on every change of the cluster.
    ///
    /// ```no_run
    /// # fn demo(node: &malla_runtime::Node) {
    /// match node.get_nodes("Calculator").first() {
    ///     None => println!("not available anywhere"),
    ///     Some(first) => println!("calls go to {first} first"),
    /// }
    /// # }
    /// ```
    pub fn get_nodes(&self, service: &str) -> Vec<NodeId> {
        self.nodes_where(service, None)
    }

    /// [`get_nodes`](Self::get_nodes), only instances whose version meets
    /// `requirement` (semver, as [`CallOptions::vsn`] takes it): the nodes a
    /// call with that requirement tries.
    ///
    /// Fails with [`Error::Config`] if the requirement does not parse.
    pub fn get_nodes_matching(&self, service: &str, requirement: &str) -> Result<Vec<NodeId>, Error> {
        let requirement = VsnRequirement::checked(requirement)?;
        Ok(self.nodes_where(service, Some(&requirement)))
    }

    fn nodes_where(&self, service: &str, vsn: Option<&VsnRequirement>) -> Vec<NodeId> {
        let route = self.parts.registry.slot(service).route_full();
        let filter = Filter {
            vsn,
            ..Filter::default()
        };
        let local = route
            .local
            .as_ref()
            .filter(|l| l.is_active() && vsn.is_none_or(|req| req.matches(l.vsn.as_ref())))
            .map(|_| self.parts.id.clone());
        let remote = route.remote.iter().filter(|i| filter.admits(i)).map(|i| i.node.clone());
        local.into_iter().chain(remote).collect()
    }

    /// [`get_instances`](Self::get_instances), only those whose version
    /// meets `requirement`.
    ///
    /// Fails with [`Error::Config`] if the requirement does not parse.
    pub fn get_instances_matching(&self, service: &str, requirement: &str) -> Result<Vec<Instance>, Error> {
        let requirement = VsnRequirement::checked(requirement)?;
        let mut instances = self.get_instances(service);
        instances.retain(|i| requirement.matches(i.vsn.parse().ok().as_ref()));
        Ok(instances)
    }

    /// Every instance of `service` on this node and on the nodes that are up,
    /// paused ones included (see [`Instance::status`]).
    pub fn get_instances(&self, service: &str) -> Vec<Instance> {
        let local = self.parts.registry.local(service).map(|local| Instance {
            node: self.parts.id.clone(),
            addr: self.advertised_addr(),
            vsn: local.manifest.vsn().to_owned(),
            status: local.admin_status().into(),
            metadata: local.metadata.clone(),
        });
        local
            .into_iter()
            .chain(self.parts.membership.instances(service))
            .collect()
    }

    /// Every service with a running instance anywhere in the cluster, sorted.
    pub fn get_services(&self) -> Vec<String> {
        let mut services: BTreeSet<String> = self.parts.membership.running_services();
        for local in self.parts.registry.locals() {
            if local.is_active() {
                services.insert(local.name().to_owned());
            }
        }
        services.into_iter().collect()
    }

    /// Waits until every service in `services` has a running instance
    /// somewhere, or fails with [`Error::Timeout`] after `timeout`. Returns as
    /// soon as the last one appears.
    pub async fn wait_for_services(&self, services: &[&str], timeout: Duration) -> Result<(), Error> {
        let mut changes = self.parts.membership.subscribe();
        let all_up = |node: &Node| services.iter().all(|s| !node.get_nodes(s).is_empty());
        let wait = async {
            loop {
                if all_up(self) {
                    return;
                }
                if changes.changed().await.is_err() {
                    // The node is gone; nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| Error::Timeout {
            service: services.join(",").into(),
            method: "wait_for_services".into(),
            timeout,
        })
    }

    /// Calls `service.method` on every node that runs it (Malla's
    /// `call_cb_all`), concurrently; each result is the node's own, and one
    /// failing does not stop the others.
    pub async fn call_all<A, R>(
        &self,
        service: &str,
        method: &str,
        args: &A,
        options: CallOptions,
    ) -> Vec<(NodeId, Result<R, Error>)>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let calls = self.get_nodes(service).into_iter().map(|node| {
            let options = options.clone().nodes([node.clone()]);
            async move { (node, self.remote(service, method, args, options).await) }
        });
        join_all(calls).await
    }

    /// The manifest a node running `service` publishes, if any node does.
    pub async fn service_manifest(&self, service: &str) -> Option<ServiceManifest> {
        if let Some(local) = self.parts.registry.local(service) {
            return Some(local.manifest.clone());
        }
        let discovery = self.parts.discovery.get()?;
        for instance in self.parts.membership.instances(service) {
            if let Some(manifest) = discovery.manifest(&instance.node, service).await {
                return Some(manifest);
            }
        }
        None
    }

    /// Every other visible node this one knows, with its address, status and
    /// services, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.parts.membership.members()
    }

    /// This node's figures: calls, requests served, in flight, errors,
    /// connections and gossip. No metrics recorder needed.
    pub fn stats(&self) -> NodeStats {
        self.parts.stats()
    }

    /// The figures of `node` (this one or another), asked of its built-in
    /// `malla.Introspect` service; a hidden node (such as `malla stats`) may
    /// ask too.
    ///
    /// Fails as a call to `node` would: [`Error::NodeDown`] if it cannot be
    /// reached, [`Error::Timeout`] after the default deadline.
    pub async fn stats_of(&self, node: &NodeId) -> Result<NodeStats, Error> {
        let options = CallOptions::default().nodes([node.clone()]);
        self.remote(introspect::SERVICE, introspect::STATS, &(), options).await
    }

    /// Gossip traffic this node has seen, if it gossips.
    pub fn gossip_stats(&self) -> Option<GossipStats> {
        self.parts.discovery.get().map(|d| d.stats())
    }

    /// Calls `service.method` with `args` (a tuple of the arguments, as the
    /// service declares them), routed and failed over like a generated
    /// client's call.
    ///
    /// If the service is declared in this binary, its manifest supplies the
    /// method's signature hash (checked by the serving node), idempotence and
    /// default timeout; otherwise (or if several declarations disagree) the
    /// call is unchecked: arguments of the wrong types fail to decode on the
    /// serving node.
    ///
    /// ```no_run
    /// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
    /// let sum: i64 = node.remote("Calculator", "add", &(1i64, 2i64), Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn remote<A, R>(&self, service: &str, method: &str, args: &A, options: CallOptions) -> Result<R, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let body = postcard::to_allocvec(args).map_err(|e| Error::codec(ENCODE, service, method, e))?;
        let bytes = self
            .call_encoded(service, method, body, options, Format::Postcard)
            .await?;
        crate::wire::bounded::from_bytes(&bytes).map_err(|e| Error::codec(DECODE, service, method, e))
    }

    /// Calls `service.method` with JSON arguments (an array, one element per
    /// argument) and returns the JSON reply: for tools such as `malla call`,
    /// which have no Rust types for the service. The serving node decodes the
    /// arguments with the method's own types and reports a mismatch as
    /// [`Error::Remote`].
    pub async fn call_json(
        &self,
        service: &str,
        method: &str,
        args: &serde_json::Value,
        options: CallOptions,
    ) -> Result<serde_json::Value, Error> {
        if !args.is_array() {
            let why = "JSON arguments are an array, one element per argument: `[1, 2]`";
            return Err(Error::codec(ENCODE, service, method, why));
        }
        let body = serde_json::to_vec(args).map_err(|e| Error::codec(ENCODE, service, method, e))?;
        let bytes = self.call_encoded(service, method, body, options, Format::Json).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::codec(DECODE, service, method, e))
    }

    /// A dynamic call with pre-encoded arguments; returns the encoded reply.
    pub(super) async fn call_encoded(
        &self,
        service: &str,
        method: &str,
        body: Vec<u8>,
        options: CallOptions,
        format: Format,
    ) -> Result<Vec<u8>, Error> {
        let slot = self.parts.registry.slot(service);
        let layers = &self.parts.layers.calls;
        let (network, target) = (&self.parts.network, (service, method));
        call_encoded(network, &slot, target, (body, format), &options, layers).await
    }
}

impl Node {
    /// The singletons served here: mode, whether this instance is active,
    /// the owner as this node knows it, token, since when.
    pub fn singletons(&self) -> Vec<SingletonStatus> {
        self.parts.singletons()
    }

    /// What [`singletons`](Self::singletons) says on `node`, asked of its
    /// built-in `malla.Introspect` service (as [`stats_of`](Self::stats_of)).
    pub async fn singletons_of(&self, node: &NodeId) -> Result<Vec<SingletonStatus>, Error> {
        let options = CallOptions::default().nodes([node.clone()]);
        self.remote(introspect::SERVICE, introspect::SINGLETONS, &(), options)
            .await
    }

    /// The active instance of the singleton `service` as this node knows
    /// it: in strict mode, if served here, what its task last decided (else
    /// ask the group: the holder of the lock `malla.singleton.<service>`,
    /// `node.locks()`); in gossip mode, the choice over the instances this
    /// node sees, its own included, the same every node with this view
    /// makes.
    pub fn singleton_owner(&self, service: &str) -> Option<NodeId> {
        let local = self.parts.registry.local(service);
        if let Some(state) = local.as_ref().and_then(|l| l.singleton.as_ref())
            && state.config.mode == SingletonMode::Strict
        {
            return state.status().owner;
        }
        let key = rendezvous::key_hash(service.as_bytes());
        super::singletons::gossip_owner(&self.parts, key, service, local.as_deref())
    }
}

impl ClientCore {
    /// What a generated client's `new` calls.
    #[doc(hidden)]
    pub fn new(node: &Node, manifest: &'static ServiceManifest) -> Self {
        let parts = &node.parts;
        let keep_alive: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(parts) as _;
        ClientCore::from_parts(
            Arc::clone(&parts.network),
            keep_alive,
            parts.registry.slot(manifest.name()),
            manifest,
            None,
            Arc::clone(&parts.layers.calls),
        )
    }

    /// What a generated client's `named` calls: a client of the node that
    /// holds the global name `name`.
    #[doc(hidden)]
    pub fn named(node: &Node, manifest: &'static ServiceManifest, name: &str) -> Self {
        let parts = &node.parts;
        let keep_alive: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(parts) as _;
        let binding: Arc<dyn NameResolver> = Arc::new(NameBinding::new(&parts.coord, name));
        ClientCore::from_parts(
            Arc::clone(&parts.network),
            keep_alive,
            parts.registry.slot(manifest.name()),
            manifest,
            Some(binding),
            Arc::clone(&parts.layers.calls),
        )
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.parts.id)
            .finish_non_exhaustive()
    }
}
