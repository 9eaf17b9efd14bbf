//! Cluster formation without hand-written addresses (Malla.Cluster's
//! `connect/1` and `config :malla, :connect`, and libcluster's DNS
//! strategies): connect targets that are addresses, DNS names (every A/AAAA
//! record is a node) or SRV names (targets and ports from the answer),
//! resolved with hickory and re-resolved periodically, so nodes that restart
//! or scale up are found and a cluster heals after a partition.

mod target;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio_util::sync::CancellationToken;

pub use target::ConnectTarget;

use crate::node::NodeInner;
use crate::{Error, Node, NodeId};

/// How connect targets resolve.
pub(crate) struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// The system's resolver, or these name servers (`ip:port`, UDP and TCP).
    pub(crate) fn new(name_servers: &[SocketAddr]) -> Result<Dns, Error> {
        let builder = if name_servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| Error::Config(format!("cannot read the system DNS configuration: {e}")))?
        } else {
            let servers = name_servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut builder = builder;
        // Records change as nodes come and go: never trust an answer longer
        // than a reconnect period, nor a "no such name" at all.
        builder.options_mut().positive_max_ttl = Some(Duration::from_secs(5));
        builder.options_mut().negative_max_ttl = Some(Duration::ZERO);
        let resolver = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the DNS resolver: {e}")))?;
        Ok(Dns { resolver })
    }

    /// The node addresses `target` names now.
    pub(crate) async fn resolve(&self, target: &ConnectTarget) -> Result<Vec<SocketAddr>, Error> {
        let fail = |reason: String| Error::Resolve {
            target: target.to_string(),
            reason,
        };
        match target {
            ConnectTarget::Addr(addr) => Ok(vec![*addr]),
            ConnectTarget::Host { host, port } => {
                let ips = self
                    .resolver
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, *port)).collect();
                if addrs.is_empty() {
                    return Err(fail("no A or AAAA records".into()));
                }
                Ok(addrs)
            }
            ConnectTarget::Srv(name) => {
                let answer = self
                    .resolver
                    .lookup(name.as_str(), RecordType::SRV)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let mut addrs = BTreeSet::new();
                let mut targets = 0;
                for record in answer.answers() {
                    let RData::SRV(srv) = &record.data else { continue };
                    // "." means: decidedly not available here.
                    if srv.target.is_root() {
                        continue;
                    }
                    targets += 1;
                    match self.resolver.lookup_ip(srv.target.clone()).await {
                        Ok(ips) => addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, srv.port))),
                        Err(err) => {
                            tracing::warn!(%target, srv_target = %srv.target, "cannot resolve an SRV target: {err}")
                        }
                    }
                }
                if targets == 0 {
                    return Err(fail("the SRV answer has no targets".into()));
                }
                if addrs.is_empty() {
                    return Err(fail("no SRV target resolves to an address".into()));
                }
                Ok(addrs.into_iter().collect())
            }
        }
    }
}

impl Node {
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
        let addrs = self.inner.dns()?.resolve(&target).await?;
        let mut connected = Vec::new();
        let mut first_error = None;
        for addr in addrs {
            if Some(addr) == self.local_addr() {
                continue;
            }
            match self.connect(addr).await {
                Ok(id) => connected.push(id),
                Err(err) => {
                    tracing::warn!(node = %self.inner.id, %target, %addr, "cannot connect: {err}");
                    first_error.get_or_insert(err);
                }
            }
        }
        match (connected.is_empty(), first_error) {
            (true, Some(err)) => Err(err),
            _ => Ok(connected),
        }
    }
}

/// Re-resolves the connect targets every `interval` and gossips with every
/// address that is not a node already up, until the node stops.
pub(crate) async fn reconnect_loop(
    node: Weak<NodeInner>,
    targets: Vec<ConnectTarget>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut failures: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(node) = node.upgrade() else { return };
        let Ok(dns) = node.dns() else { return };
        let known: BTreeSet<SocketAddr> = node.up_addrs().into_iter().collect();
        for target in &targets {
            match dns.resolve(target).await {
                Ok(addrs) => {
                    if failures.remove(&target.to_string()).is_some() {
                        tracing::info!(node = %node.id, %target, "connect target resolves again");
                    }
                    for addr in addrs {
                        if Some(addr) != node.net.identity.listen && !known.contains(&addr) {
                            tracing::debug!(node = %node.id, %target, %addr, "reaching out");
                            node.reach_out(addr);
                        }
                    }
                }
                Err(err) => {
                    // Said once per new reason, not every period.
                    let reason = err.to_string();
                    if failures.insert(target.to_string(), reason.clone()).as_ref() != Some(&reason) {
                        tracing::warn!(node = %node.id, %target, "{reason}; will retry every {interval:?}");
                    }
                }
            }
        }
    }
}

impl NodeInner {
    pub(crate) fn dns(&self) -> Result<&Dns, Error> {
        if let Some(dns) = self.dns.get() {
            return Ok(dns);
        }
        let dns = Dns::new(&self.dns_servers)?;
        Ok(self.dns.get_or_init(|| dns))
    }

    /// Introduces this node to whoever listens at `addr`: a gossip exchange,
    /// or a connection if this node does not gossip.
    pub(crate) fn reach_out(self: &Arc<Self>, addr: SocketAddr) {
        match self.discovery.get() {
            Some(discovery) => discovery.introduce(addr),
            None => {
                let node = Node {
                    inner: Arc::clone(self),
                };
                tokio::spawn(async move {
                    let _ = node.connect(addr).await;
                });
            }
        }
    }
}
