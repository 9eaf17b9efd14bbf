//! The node's network side: accepting and dialing authenticated connections,
//! adopting them per peer, and telling the rest of the node when a peer comes
//! up or goes down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeInner};
use crate::connection::{CloseReason, Connection, ConnectionConfig, Host, Initiator, Transport};
use crate::handshake::{self, Cookie, HandshakeError, Identity, RejectReason};
use crate::peer::Peers;
use crate::wire::Goodbye;
use crate::{Error, NodeId};

/// How long a graceful shutdown waits for connections to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Network settings, fixed at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetConfig {
    pub(crate) handshake_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) connection: ConnectionConfig,
}

/// The network state of a node.
pub(crate) struct Net {
    pub(crate) cookie: Option<Cookie>,
    pub(crate) identity: Identity,
    pub(crate) config: NetConfig,
    pub(crate) peers: Peers,
    pub(crate) stop: CancellationToken,
    pub(crate) shutting_down: AtomicBool,
    /// Connections opened and not yet closed, duplicates included.
    pub(crate) open_connections: AtomicUsize,
}

impl Node {
    /// Connects to the node listening at `addr` and returns its name. Both
    /// sides must share the cookie.
    ///
    /// Fails with [`Error::Unauthorized`] if the cookies differ,
    /// [`Error::Handshake`] for another handshake failure (protocol version,
    /// duplicate node name, timeout) and [`Error::Connect`] if nothing
    /// answers.
    pub async fn connect(&self, addr: SocketAddr) -> Result<NodeId, Error> {
        let config = self.inner.net.config;
        let deadline = Instant::now() + config.connect_timeout + config.handshake_timeout;
        let conn = self.inner.dial(addr, deadline).await?;
        // Gossip on the same port: the rest of the cluster learns of us.
        if let Some(discovery) = self.inner.discovery.get() {
            discovery.introduce(conn.peer.listen.unwrap_or(addr));
        }
        Ok(conn.peer.name.clone())
    }

    /// The visible nodes that are up, sorted by name: connected, or live in
    /// gossip and not cut off (hidden nodes are not listed, as in Erlang's
    /// `nodes()`).
    pub fn nodes(&self) -> Vec<NodeId> {
        self.inner.membership.up_nodes()
    }

    /// The address this node accepts connections on, if it listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.net.identity.listen
    }

    /// Whether this node was built `.hidden()`.
    pub fn is_hidden(&self) -> bool {
        self.inner.net.identity.hidden
    }

    /// Leaves the cluster gracefully: stops accepting connections, tells every
    /// peer to send no new requests, lets calls in flight finish (up to 2 s),
    /// then closes every connection.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

impl NodeInner {
    /// The connection to `id`, dialing its known address if there is none.
    pub(crate) async fn connection_to(
        self: &Arc<Self>,
        id: &NodeId,
        deadline: Instant,
    ) -> Result<Arc<Connection>, Error> {
        let down = || Error::NodeDown { node: id.clone() };
        let peer = self.net.peers.get(id).ok_or_else(down)?;
        if let Some(conn) = peer.connection() {
            return Ok(conn);
        }
        let _dialing = tokio::time::timeout_at(deadline, peer.dialing.lock())
            .await
            .map_err(|_| down())?;
        // Another caller may have connected while we waited.
        if let Some(conn) = peer.connection() {
            return Ok(conn);
        }
        let addr = peer.addr().ok_or_else(down)?;
        match self.dial(addr, deadline).await {
            Ok(conn) if conn.peer.name == *id => Ok(conn),
            outcome => {
                // Unreachable, or the address now belongs to another node:
                // its instances are out until a dial succeeds.
                self.membership.link_broken(self, id);
                outcome.and_then(|_| Err(down()))
            }
        }
    }

    /// Dials `addr`, runs the handshake and adopts the connection.
    pub(crate) async fn dial(self: &Arc<Self>, addr: SocketAddr, deadline: Instant) -> Result<Arc<Connection>, Error> {
        let cookie = self.cookie()?;
        if self.net.shutting_down.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let connect_deadline = deadline.min(Instant::now() + self.net.config.connect_timeout);
        let stream = match tokio::time::timeout_at(connect_deadline, self.open_tcp(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(Error::Connect { addr, source }),
            Err(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                return Err(Error::Connect { addr, source });
            }
        };
        let _ = stream.set_nodelay(true);
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(self.net.config.handshake_timeout);
        let established = handshake::dial(stream, cookie, &self.net.identity, timeout)
            .await
            .map_err(|err| handshake_error(&self.id, &addr.to_string(), err))?;
        let mut peer = established.peer;
        if peer.name == self.id {
            return Err(Error::Handshake {
                peer: addr.to_string(),
                reason: "that address is this node".into(),
            });
        }
        // A peer listening on 0.0.0.0 is reachable where we found it.
        if peer.listen.is_none_or(|l| l.ip().is_unspecified()) {
            peer.listen = Some(addr);
        }
        Ok(self.adopt(established.stream, established.read_buf, peer, Initiator::Us))
    }

    /// Opens a TCP connection from the address this node listens on, when it
    /// listens on a specific one, so its traffic comes from where it said it
    /// would (multi-homed hosts, firewall rules).
    async fn open_tcp(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let from = self.net.identity.listen.map(|l| l.ip()).filter(|ip| {
            !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4() && ip.is_loopback() == addr.ip().is_loopback()
        });
        let Some(from) = from else {
            return TcpStream::connect(addr).await;
        };
        let socket = if from.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(from, 0))?;
        socket.connect(addr).await
    }

    /// Runs the acceptor's handshake on an incoming connection.
    async fn accept(self: Arc<Self>, stream: TcpStream, from: SocketAddr) {
        let Ok(cookie) = self.cookie() else { return };
        let _ = stream.set_nodelay(true);
        let decision = |peer: &Identity| self.decide(peer);
        let result = handshake::accept(
            stream,
            cookie,
            &self.net.identity,
            self.net.config.handshake_timeout,
            decision,
        )
        .await;
        match result {
            Ok(established) => {
                let mut peer = established.peer;
                if let Some(listen) = peer.listen.as_mut().filter(|l| l.ip().is_unspecified()) {
                    listen.set_ip(from.ip());
                }
                self.adopt(established.stream, established.read_buf, peer, Initiator::Peer);
            }
            Err(err) if err.is_unauthorized() => {
                tracing::warn!(node = %self.id, peer = %from, "refused a connection: {err}");
            }
            Err(err) => tracing::info!(node = %self.id, peer = %from, "incoming handshake failed: {err}"),
        }
    }

    /// Whether to accept an authenticated dialer.
    fn decide(&self, peer: &Identity) -> Result<(), RejectReason> {
        if self.net.shutting_down.load(Ordering::Acquire) {
            return Err(RejectReason::ShuttingDown);
        }
        if peer.name == self.id {
            tracing::warn!(node = %self.id, "refused a node that uses our name");
            return Err(RejectReason::DuplicateName);
        }
        let live_other = self
            .net
            .peers
            .get(&peer.name)
            .and_then(|p| p.connection())
            .is_some_and(|c| c.peer.incarnation != peer.incarnation);
        if live_other {
            tracing::warn!(node = %self.id, peer = %peer.name, "refused a second live node named like a connected one");
            return Err(RejectReason::DuplicateName);
        }
        Ok(())
    }

    fn adopt<T: Transport>(
        self: &Arc<Self>,
        stream: T,
        read_buf: bytes::BytesMut,
        peer: Identity,
        initiator: Initiator,
    ) -> Arc<Connection> {
        let host: std::sync::Weak<dyn Host> = Arc::downgrade(self) as _;
        let hidden = peer.hidden;
        self.net.open_connections.fetch_add(1, Ordering::AcqRel);
        let conn = Connection::spawn(
            stream,
            read_buf,
            peer,
            initiator,
            Arc::clone(&self.registry),
            host,
            self.net.config.connection,
        );
        let installed = self
            .net
            .peers
            .get_or_insert(&conn.peer.name)
            .install(&self.id, Arc::clone(&conn));
        if installed.came_up {
            tracing::info!(node = %self.id, peer = %conn.peer.name, hidden, ?initiator, "connected");
            self.membership.link_up(self, &conn.peer.name, hidden);
        }
        installed.current
    }

    fn cookie(&self) -> Result<&Cookie, Error> {
        self.net.cookie.as_ref().ok_or_else(|| {
            Error::Config(
                "no cookie: set one with `.cookie(..)` or the MALLA_COOKIE environment variable; every node of a cluster must share it"
                    .into(),
            )
        })
    }

    async fn shutdown(&self) {
        if self.net.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(node = %self.id, "shutting down");
        // Say so in gossip and give it about two rounds to spread, so peers
        // stop routing here before the connections go.
        if let Some(discovery) = self.discovery.get() {
            discovery.leave(self.connected_addrs()).await;
            tokio::time::sleep(discovery.interval * 2).await;
        }
        self.net.stop.cancel();
        let conns: Vec<Arc<Connection>> = self.net.peers.all().iter().filter_map(|p| p.connection()).collect();
        for conn in &conns {
            conn.retire(Goodbye::Leaving);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline && conns.iter().any(|c| !c.is_closed()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for conn in conns {
            conn.close(CloseReason::Local("the node shut down"));
        }
        if let Some(discovery) = self.discovery.get() {
            discovery.stop().await;
        }
    }

    /// Where the nodes that are up listen: connected, or running by gossip.
    pub(crate) fn up_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs = self.membership.up_addrs();
        addrs.extend(self.connected_addrs());
        addrs
    }

    /// Where the nodes this one is connected to listen (and gossip).
    pub(crate) fn connected_addrs(&self) -> Vec<SocketAddr> {
        self.net
            .peers
            .all()
            .iter()
            .filter_map(|p| p.connection()?.peer.listen)
            .collect()
    }

    /// Takes in a new gossip view: closes connections to nodes gossip
    /// declared dead (calls in flight there fail now, not at their
    /// deadline) and connects to the live ones.
    pub(crate) fn gossip_changed(
        self: &Arc<Self>,
        view: std::collections::BTreeMap<NodeId, crate::discovery::Gossiped>,
    ) {
        // Addresses first: a caller woken by the new routes must find them.
        for (id, gossiped) in &view {
            if let Some(rpc) = gossiped.advertised.rpc {
                self.net.peers.get_or_insert(id).set_addr(rpc);
            }
        }
        for id in self.membership.gossip_changed(self, view) {
            if let Some(conn) = self.net.peers.get(&id).and_then(|p| p.connection()) {
                conn.close(CloseReason::Local("gossip declared the node dead"));
            }
        }
        self.keep_connected();
    }

    /// Dials, in the background and with backoff, every live visible node
    /// that has no connection (as Erlang nodes connect transitively). Hidden
    /// nodes dial on first call only.
    fn keep_connected(self: &Arc<Self>) {
        let eager = !self.net.identity.hidden && !self.net.shutting_down.load(Ordering::Acquire);
        let now = Instant::now();
        if !eager {
            return;
        }
        for (id, _) in self.membership.connect_targets() {
            let peer = self.net.peers.get_or_insert(&id);
            if peer.connection().is_some() || !peer.start_background_dial(now) {
                continue;
            }
            let node = Arc::clone(self);
            let timeout = self.net.config.connect_timeout + self.net.config.handshake_timeout;
            tokio::spawn(async move {
                let dialed = node.connection_to(&id, Instant::now() + timeout).await;
                if let Err(err) = &dialed {
                    tracing::debug!(node = %node.id, peer = %id, "background dial failed: {err}");
                }
                peer.dial_finished(dialed.is_ok());
            });
        }
    }
}

impl Host for NodeInner {
    fn connection_closed(&self, conn: &Arc<Connection>, reason: &CloseReason) {
        self.net.open_connections.fetch_sub(1, Ordering::AcqRel);
        let Some(peer) = self.net.peers.get(&conn.peer.name) else {
            return;
        };
        if peer.remove(conn) {
            tracing::info!(node = %self.id, peer = %conn.peer.name, %reason, "disconnected");
            // Out at once, before gossip agrees.
            self.membership.link_broken(self, &conn.peer.name);
        }
    }
}

/// Accepts connections until the node stops.
pub(crate) async fn accept_loop(node: std::sync::Weak<NodeInner>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Some(node) = node.upgrade() else { return };
        match accepted {
            Ok((stream, from)) => {
                tokio::spawn(node.accept(stream, from));
            }
            Err(err) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(node = %node.id, "accept failed: {err}");
                drop(node);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Logs a failed outgoing handshake and turns it into the public error.
fn handshake_error(node: &NodeId, peer: &str, err: HandshakeError) -> Error {
    if err.is_unauthorized() {
        tracing::warn!(%node, %peer, "connection refused: {err}");
        Error::Unauthorized {
            peer: peer.to_owned(),
            reason: err.to_string(),
        }
    } else {
        tracing::info!(%node, %peer, "handshake failed: {err}");
        Error::Handshake {
            peer: peer.to_owned(),
            reason: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
