//! Cluster formation without hand-written addresses (Malla.Cluster's
//! `connect/1` and `config :malla, :connect`, and libcluster's DNS
//! strategies): connect targets that are addresses, DNS names (every A/AAAA
//! record is a node) or SRV names (targets and ports from the answer),
//! resolved with hickory and re-resolved periodically, so nodes that restart
//! or scale up are found and a cluster heals after a partition.

mod target;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio_util::sync::CancellationToken;

pub use target::ConnectTarget;

use crate::Error;

/// What the reconnect loop needs of the node.
pub(crate) trait Reach: Send + Sync + 'static {
    /// Addresses of this node and of the nodes already up: no need to reach
    /// out to them.
    fn known_addrs(&self) -> BTreeSet<SocketAddr>;
    /// Introduces this node to whoever listens at `addr`.
    fn reach_out(&self, addr: SocketAddr);
}

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

/// Re-resolves the connect targets every `interval` and gossips with every
/// address that is not a node already up, until the node stops.
pub(crate) async fn reconnect_loop(
    node: Weak<dyn Reach>,
    dns: Arc<Dns>,
    targets: Vec<ConnectTarget>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut failures: HashMap<String, String> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(node) = node.upgrade() else { return };
        let known = node.known_addrs();
        for target in &targets {
            match dns.resolve(target).await {
                Ok(addrs) => {
                    if failures.remove(&target.to_string()).is_some() {
                        tracing::info!(%target, "connect target resolves again");
                    }
                    for addr in addrs {
                        if !known.contains(&addr) {
                            tracing::debug!(%target, %addr, "reaching out");
                            node.reach_out(addr);
                        }
                    }
                }
                Err(err) => {
                    // Said once per new reason, not every period.
                    let reason = err.to_string();
                    if failures.insert(target.to_string(), reason.clone()).as_ref() != Some(&reason) {
                        tracing::warn!(%target, "{reason}; will retry every {interval:?}");
                    }
                }
            }
        }
    }
}
