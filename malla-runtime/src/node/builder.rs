//! Configuration of a node before it starts, and starting it: check the
//! settings, bind the sockets, assemble the parts, start the tasks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, UdpSocket};
use tracing::Instrument;

use super::api::Node;
use super::parts::{NodeLayers, NodeParts};
use crate::cluster::{ConnectTarget, Reach, reconnect_loop};
use crate::connection::{ConnectionConfig, Services};
use crate::coord::{CoordConfig, Role, Storage, Timing};
use crate::discovery::{Discovery, GossipConfig, ViewSink, Whoami};
use crate::handshake::{Cookie, Identity, Keyring};
use crate::intercept::served::Installed;
use crate::net::{NetConfig, Network, accept_loop};
use crate::options::bounded;
use crate::registry::Registry;
use crate::{Error, Interceptor, NodeId, Secret, ServeInterceptor};

/// Largest frame a node accepts unless told otherwise.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
/// Smallest accepted `max_frame_size`: room for any header and error status.
const MIN_MAX_FRAME_SIZE: usize = 1024;
/// Handlers that run at once for one peer's requests unless told otherwise.
pub const DEFAULT_MAX_HANDLERS: usize = 1024;
/// Incoming handshakes run at once, in all and per source address, unless
/// told otherwise.
pub const DEFAULT_MAX_HANDSHAKES: (usize, usize) = (256, 32);
/// Environment variable read for the cookie when the builder sets none.
pub const COOKIE_ENV: &str = "MALLA_COOKIE";

/// Configures and starts a [`Node`]; made by [`Node::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), malla_runtime::Error> {
/// let node = malla_runtime::Node::builder("node1")
///     .cookie("a-long-random-cluster-cookie")
///     .listen("127.0.0.1:0".parse().unwrap())
///     .start()
///     .await?;
/// println!("listening on {:?}", node.local_addr());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    cookie: Option<Secret>,
    also_accepted: Vec<Secret>,
    sealing: bool,
    max_handlers: usize,
    max_handshakes: (usize, usize),
    listen: Option<SocketAddr>,
    hidden: bool,
    max_frame_size: usize,
    handshake_timeout: Duration,
    connect_timeout: Duration,
    tick_interval: Duration,
    advertise: Option<SocketAddr>,
    gossip: GossipConfig,
    connect_targets: Vec<String>,
    dns_servers: Vec<SocketAddr>,
    reconnect_interval: Duration,
    voter: Option<usize>,
    data_dir: Option<PathBuf>,
    consensus_timing: Timing,
    intercept: Installed<dyn Interceptor>,
    intercept_served: Installed<dyn ServeInterceptor>,
}

/// Period of re-resolving connect targets unless told otherwise.
pub const DEFAULT_RECONNECT_INTERVAL: Duration = Duration::from_secs(5);

impl NodeBuilder {
    pub(crate) fn new(name: String) -> Self {
        NodeBuilder {
            name,
            cookie: None,
            also_accepted: Vec::new(),
            sealing: true,
            max_handlers: DEFAULT_MAX_HANDLERS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            listen: None,
            hidden: false,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            tick_interval: Duration::from_millis(500),
            advertise: None,
            gossip: GossipConfig::default(),
            connect_targets: Vec::new(),
            dns_servers: Vec::new(),
            reconnect_interval: DEFAULT_RECONNECT_INTERVAL,
            voter: None,
            data_dir: None,
            consensus_timing: Timing::default(),
            intercept: Installed::default(),
            intercept_served: Installed::default(),
        }
    }

    /// Runs `interceptor` around every call this node's clients make (and
    /// around each attempt), before the interceptors of the client
    /// (`…Client::with_interceptor`); in the order installed. See
    /// [`Interceptor`] for what it can do.
    ///
    /// ```
    /// use malla_runtime::{CallInfo, Decision, Interceptor};
    ///
    /// struct Tenant;
    ///
    /// impl Interceptor for Tenant {
    ///     fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
    ///         match call.metadata.insert("tenant", b"acme".to_vec()) {
    ///             Ok(()) => Decision::Continue,
    ///             Err(err) => Decision::Refuse(err),
    ///         }
    ///     }
    /// }
    ///
    /// let builder = malla_runtime::Node::builder("n1").intercept(Tenant);
    /// ```
    pub fn intercept(mut self, interceptor: impl Interceptor) -> Self {
        self.intercept.0.push(Arc::new(interceptor));
        self
    }

    /// Runs `interceptor` before every request for a service this node
    /// serves (from other nodes and from this one), before the service's own
    /// ([`ServeOptions::intercept`](crate::ServeOptions::intercept)); the
    /// runtime's `malla.` services pass none (the cookie guards them). See
    /// [`ServeInterceptor`].
    pub fn intercept_served(mut self, interceptor: impl ServeInterceptor) -> Self {
        self.intercept_served.0.push(Arc::new(interceptor));
        self
    }

    /// Makes this node a voter of the cluster's consensus group, which
    /// starts once `expect` voters marked alike see each other (Consul's
    /// `bootstrap_expect`: mark exactly `expect` nodes; 3 or 5 survive the
    /// loss of 1 or 2). `0` makes it a client only. Unmarked, a node with no
    /// seeds and no connect targets is its own group of one; every other
    /// node asks the group's leader. Locks, names and strict singletons live
    /// in the group.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), malla_runtime::Error> {
    /// let node = malla_runtime::Node::builder("n1")
    ///     .cookie("a-long-random-cluster-cookie")
    ///     .listen("127.0.0.1:7000".parse().unwrap())
    ///     .voter(3)
    ///     .data_dir("/var/lib/malla/n1")
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn voter(mut self, expect: usize) -> Self {
        self.voter = Some(expect);
        self
    }

    /// Where this node keeps what it must not forget across restarts: the
    /// consensus group's log and snapshots (in `<dir>/raft/`, synced before
    /// anything is acknowledged). Without one they live in memory, and a
    /// restarted voter comes back as a new member (the old one must then be
    /// removed, `Node::remove_voter`). One directory per node.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The consensus group's heartbeat and election timeout (default 100 ms
    /// and 400 to 800 ms: a dead leader is replaced in about a second). The
    /// election timeout is drawn between `election` and twice it.
    #[doc(hidden)]
    pub fn consensus_timing(mut self, heartbeat: Duration, election: Duration) -> Self {
        let heartbeat = bounded(heartbeat).max(Duration::from_millis(10));
        let election = bounded(election).max(heartbeat * 3);
        self.consensus_timing = Timing {
            heartbeat,
            election_min: election,
            election_max: election * 2,
        };
        self
    }

    /// Where to find the cluster, looked up again every
    /// [`reconnect_interval`](Self::reconnect_interval): addresses,
    /// `host:port` names (every A/AAAA record is a node) or SRV names
    /// (`_malla._tcp.example.com`); see [`ConnectTarget`](crate::ConnectTarget).
    /// Addresses found that are not nodes already up are gossiped with, so
    /// restarted and new nodes are found and partitions heal.
    pub fn connect_targets<I, T>(mut self, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.connect_targets.extend(targets.into_iter().map(Into::into));
        self
    }

    /// Period of looking the connect targets up again (default 5 s).
    pub fn reconnect_interval(mut self, interval: Duration) -> Self {
        self.reconnect_interval = bounded(interval).max(Duration::from_millis(10));
        self
    }

    /// DNS servers (`ip:port`) for connect targets, instead of the system's.
    pub fn dns_servers<I: IntoIterator<Item = SocketAddr>>(mut self, servers: I) -> Self {
        self.dns_servers = servers.into_iter().collect();
        self
    }

    /// Nodes to gossip with at start to join their cluster (their listen
    /// addresses: gossip runs over UDP on the same port as TCP).
    pub fn seeds<I: IntoIterator<Item = SocketAddr>>(mut self, seeds: I) -> Self {
        self.gossip.seeds = seeds.into_iter().collect();
        self
    }

    /// The address other nodes reach this one at, if not the listen address
    /// (listening on `0.0.0.0`, behind NAT). Defaults to the listen address,
    /// with an unspecified IP replaced by the one that routes to the first
    /// seed.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Interval between gossip rounds (default 500 ms); also the failure
    /// detector's initial heartbeat interval.
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip.interval = bounded(interval).max(Duration::from_millis(10));
        self
    }

    /// Suspicion level above which the failure detector declares a silent
    /// node dead (default 8; a node silent for about that many mean heartbeat
    /// intervals).
    pub fn phi_threshold(mut self, phi: f64) -> Self {
        // NaN or below zero would declare every node dead at once.
        self.gossip.phi_threshold = if phi.is_nan() { 8.0 } else { phi.clamp(0.1, 1e6) };
        self
    }

    /// How long a dead node's state is kept before it is forgotten (default
    /// 15 minutes).
    pub fn dead_node_grace(mut self, grace: Duration) -> Self {
        self.gossip.dead_node_grace = bounded(grace);
        self
    }

    /// The cluster's shared secret, at least [`MIN_COOKIE_LEN`] bytes
    /// (16; `malla cookie` makes a random one). Defaults to the
    /// `MALLA_COOKIE` environment variable; a node that listens or connects
    /// needs one.
    ///
    /// [`MIN_COOKIE_LEN`]: crate::MIN_COOKIE_LEN
    pub fn cookie(mut self, cookie: impl Into<Secret>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }

    /// Another cookie accepted from dialing nodes besides [`cookie`]: for
    /// rotating a cluster's cookie without downtime, in three rolling
    /// restarts. (1) Every node accepts the new cookie; (2) every node uses
    /// the new cookie and accepts the old; (3) the old one goes. At each
    /// step every two nodes share a cookie one uses and the other accepts,
    /// for connections and gossip alike.
    ///
    /// [`cookie`]: Self::cookie
    pub fn also_accept_cookie(mut self, cookie: impl Into<Secret>) -> Self {
        self.also_accepted.push(cookie.into());
        self
    }

    /// Handlers that may run at once for the requests of one connected
    /// node (default 1024; at least 1). Past it, a request is answered
    /// `Overloaded` before it runs, and its caller fails over to another
    /// node. Handlers that finish when first polled do not count.
    pub fn max_handlers_per_connection(mut self, handlers: usize) -> Self {
        self.max_handlers = handlers.max(1);
        self
    }

    /// Incoming handshakes that may run at once, in all and per source IP
    /// address (default 256 and 32). Past either, the oldest pending one
    /// is dropped for the new one: sockets opened and left idle cannot keep
    /// a real node out, and cost at most this many tasks.
    pub fn max_handshakes(mut self, total: usize, per_source: usize) -> Self {
        self.max_handshakes = (total.max(1), per_source.max(1));
        self
    }

    /// Whether this node seals what it sends after the handshake (default:
    /// yes). A connection is sealed unless both of its nodes turn sealing
    /// off. Sealing encrypts and authenticates every byte with
    /// ChaCha20-Poly1305 under per-connection keys, so nothing on the path
    /// can read, inject, replay, reorder or truncate traffic; it costs about
    /// 1 µs and 20 bytes per write on small calls (see BENCHMARKS.md). Turn it
    /// off only on a network you trust entirely, as Erlang distribution
    /// without TLS does.
    pub fn sealing(mut self, seal: bool) -> Self {
        self.sealing = seal;
        self
    }

    /// Accepts connections on `addr` (port 0 picks a free port; see
    /// [`Node::local_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// A hidden node calls services but is not listed by other nodes and
    /// advertises nothing (for tools and command-line clients).
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// Largest frame accepted from peers (default 16 MiB, at least 1 KiB). A
    /// request or reply larger than the receiver accepts fails without being
    /// sent.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes.clamp(MIN_MAX_FRAME_SIZE, u32::MAX as usize);
        self
    }

    /// How long a connection handshake may take (default 5 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = bounded(timeout);
        self
    }

    /// How long opening a TCP connection may take (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = bounded(timeout);
        self
    }

    /// Interval of the keep-alive pings on idle connections (default 500 ms).
    /// A connection silent for 4 intervals is closed and its peer marked down
    /// at once: with the defaults, a node cut off without closing its sockets
    /// is out within about 2 s, before gossip's failure detector (phi 8 at
    /// 500 ms rounds) gets there in 3 to 4 s.
    pub fn tick_interval(mut self, interval: Duration) -> Self {
        self.tick_interval = bounded(interval).max(Duration::from_millis(10));
        self
    }

    /// Starts the node: binds the listener, if any. Must run inside a tokio
    /// runtime; the node's tasks run on it.
    pub async fn start(self) -> Result<Node, Error> {
        let checked = self.check()?;
        let sockets = self.bind(checked.gossips).await?;
        let lone = self.gossip.seeds.is_empty() && checked.targets.is_empty();
        let parts = self.assemble(checked.keyring, &sockets, lone);
        self.start_tasks(&parts, sockets, checked.targets).await?;
        parts.coord.start();
        Ok(Node { parts })
    }

    /// Checks the settings that can be wrong before anything is bound.
    fn check(&self) -> Result<Checked, Error> {
        NodeId::validate(&self.name).map_err(Error::Config)?;
        let from_env = || std::env::var(COOKIE_ENV).ok().map(Secret::from);
        let cookie = match self.cookie.clone().or_else(from_env) {
            Some(cookie) => {
                cookie.check_cookie("the cookie")?;
                Some(Cookie::from_secret(cookie))
            }
            None if !self.also_accepted.is_empty() => {
                return Err(Error::Config(
                    "`also_accept_cookie` without a cookie: set the one this node uses with `.cookie(..)`".into(),
                ));
            }
            None => None,
        };
        for accepted in &self.also_accepted {
            accepted.check_cookie("an accepted cookie")?;
        }
        let also_accepted = self.also_accepted.iter().cloned().map(Cookie::from_secret).collect();
        let keyring = cookie.map(|cookie| Keyring::new(cookie, also_accepted));
        let targets = self
            .connect_targets
            .iter()
            .map(|t| t.parse::<ConnectTarget>())
            .collect::<Result<Vec<_>, _>>()?;
        let gossips = self.listen.is_some() || !self.gossip.seeds.is_empty() || !targets.is_empty();
        if keyring.is_none() && gossips {
            return Err(Error::no_cookie());
        }
        Ok(Checked {
            keyring,
            targets,
            gossips,
        })
    }

    /// Binds the listener and the gossip socket, and works out the address
    /// to advertise.
    async fn bind(&self, gossips: bool) -> Result<Sockets, Error> {
        let seed = self.gossip.seeds.first();
        let (listener, udp) = match self.listen {
            Some(addr) => {
                let (tcp, udp) = bind_same_port(addr).await?;
                (Some(tcp), Some(udp))
            }
            None if gossips => {
                let any = SocketAddr::new(unspecified_like(seed), 0);
                (None, Some(UdpSocket::bind(any).await?))
            }
            None => (None, None),
        };
        let bound = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let advertise = match (bound, &udp) {
            (Some(tcp), _) => Some(self.advertise.unwrap_or(reachable(tcp, seed))),
            (None, Some(udp)) => Some(reachable(udp.local_addr()?, seed)),
            (None, None) => None,
        };
        Ok(Sockets {
            listener,
            bound,
            udp,
            advertise,
            // Grows across restarts (gossip needs that to tell a restarted
            // node's state from the old one); also the handshake's incarnation.
            generation: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64)
                ^ u64::from(rand::random::<u16>()),
        })
    }

    /// How this node takes part in the consensus group: as marked, else
    /// its own group if it is `lone` (no seeds, no connect targets), else a
    /// client.
    fn coordination(&self, lone: bool) -> CoordConfig {
        let role = match self.voter {
            _ if self.hidden => Role::Client,
            Some(0) => Role::Client,
            Some(expect) => Role::Voter { expect },
            None if lone => Role::Lone,
            None => Role::Client,
        };
        let storage = match &self.data_dir {
            Some(dir) => Storage::Dir(dir.clone()),
            None => Storage::Memory,
        };
        CoordConfig {
            role,
            storage,
            timing: self.consensus_timing,
        }
    }

    /// Builds the node's parts; nothing runs yet.
    fn assemble(&self, keyring: Option<Keyring>, sockets: &Sockets, lone: bool) -> Arc<NodeParts> {
        let id = NodeId::from(self.name.clone());
        let identity = Identity {
            name: id.clone(),
            incarnation: sockets.generation,
            hidden: self.hidden,
            listen: sockets.bound.and(sockets.advertise),
            max_frame: self.max_frame_size as u32,
            seal: self.sealing,
        };
        let config = NetConfig {
            handshake_timeout: self.handshake_timeout,
            connect_timeout: self.connect_timeout,
            max_handshakes: self.max_handshakes.0,
            max_handshakes_per_source: self.max_handshakes.1,
            connection: ConnectionConfig {
                max_frame: self.max_frame_size,
                tick: self.tick_interval,
                max_handlers: self.max_handlers,
            },
        };
        let incarnation = identity.incarnation;
        let network = |registry: Arc<Registry>, links| {
            let services: Arc<dyn Services> = registry;
            Network::new(keyring, identity, sockets.bound, config, services, links)
        };
        let layers = NodeLayers {
            calls: self.intercept.then(&Installed::default()),
            served: self.intercept_served.clone(),
        };
        NodeParts::new(
            id,
            incarnation,
            self.dns_servers.clone(),
            self.coordination(lone),
            layers,
            network,
        )
    }

    /// Starts accepting, gossiping and re-resolving the connect targets.
    async fn start_tasks(
        &self,
        parts: &Arc<NodeParts>,
        sockets: Sockets,
        targets: Vec<ConnectTarget>,
    ) -> Result<(), Error> {
        let network = &parts.network;
        if let Some(listener) = sockets.listener {
            tracing::info!(node = %parts.id, addr = ?sockets.advertise, "listening");
            tokio::spawn(accept_loop(Arc::downgrade(network), listener, network.stopped()));
        }
        if let (Some(udp), Some(advertise), Some(keyring)) = (sockets.udp, sockets.advertise, network.keyring().ok()) {
            let me = Whoami {
                name: &parts.id,
                generation: sockets.generation,
                advertise,
                rpc: network.identity.listen,
                hidden: self.hidden,
            };
            let sink: std::sync::Weak<dyn ViewSink> = Arc::downgrade(parts) as _;
            let discovery = Discovery::start(me, udp, keyring, &self.gossip, sink).await?;
            let _ = parts.discovery.set(discovery);
        }
        if !targets.is_empty() {
            // A resolver that cannot be built is a configuration error now,
            // not a warning every period.
            let dns = parts.dns()?;
            let reach: std::sync::Weak<dyn Reach> = Arc::downgrade(parts) as _;
            let task = reconnect_loop(reach, dns, targets, self.reconnect_interval, network.stopped());
            tokio::spawn(task.instrument(tracing::info_span!("reconnect", node = %parts.id)));
        }
        Ok(())
    }
}

/// Settings checked by [`NodeBuilder::check`].
struct Checked {
    keyring: Option<Keyring>,
    targets: Vec<ConnectTarget>,
    gossips: bool,
}

/// What [`NodeBuilder::bind`] bound.
struct Sockets {
    listener: Option<TcpListener>,
    /// The listener's address.
    bound: Option<SocketAddr>,
    udp: Option<UdpSocket>,
    /// Where other nodes reach this one (TCP and gossip).
    advertise: Option<SocketAddr>,
    generation: u64,
}

impl Node {
    /// Starts configuring a node called `name`.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder::new(name.into())
    }
}

/// Binds TCP and UDP on the same port (gossip rides on the listen port). With
/// port 0, retries until the port TCP picked is free for UDP too.
async fn bind_same_port(addr: SocketAddr) -> Result<(TcpListener, UdpSocket), Error> {
    const ATTEMPTS: usize = 16;
    for _ in 0..ATTEMPTS {
        let tcp = TcpListener::bind(addr).await?;
        match UdpSocket::bind(tcp.local_addr()?).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(err) if addr.port() == 0 && err.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(Error::Config(format!(
        "could not find a port free for both TCP and UDP on {} after {ATTEMPTS} attempts",
        addr.ip()
    )))
}

/// The unspecified address of the seed's family.
fn unspecified_like(seed: Option<&SocketAddr>) -> IpAddr {
    match seed {
        Some(SocketAddr::V6(_)) => IpAddr::from([0u16; 8]),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// `bound` with an unspecified IP replaced by the local IP that routes to
/// `seed` (a connected UDP socket tells, without sending anything), or
/// loopback.
fn reachable(bound: SocketAddr, seed: Option<&SocketAddr>) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let routed = seed.and_then(|seed| {
        let probe = std::net::UdpSocket::bind(SocketAddr::new(unspecified_like(Some(seed)), 0)).ok()?;
        probe.connect(seed).ok()?;
        Some(probe.local_addr().ok()?.ip())
    });
    SocketAddr::new(routed.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), bound.port())
}
