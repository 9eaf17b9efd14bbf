//! A node's network side: dialing and accepting authenticated connections,
//! adopting them per peer, keeping live nodes connected, and hanging up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, Ticket};
use super::dial::{handshake_error, open_tcp};
use super::peer::Peers;
use crate::connection::{
    self, CloseReason, Connection, ConnectionConfig, Initiator, LinkEvent, LinkEvents, Services, Transport,
};
use crate::handshake::{self, Identity, Keyring, RejectReason, SessionKeys};
use crate::telemetry::metrics;
use crate::telemetry::throttle::LogThrottle;
use crate::wire::Goodbye;
use crate::{Error, NodeId};

/// How long a graceful shutdown waits for connections to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Network settings, fixed at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetConfig {
    pub(crate) handshake_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Incoming handshakes run at once, in all and per source address.
    pub(crate) max_handshakes: usize,
    pub(crate) max_handshakes_per_source: usize,
    pub(crate) connection: ConnectionConfig,
}

/// The connections of a node.
pub(crate) struct Network {
    keyring: Option<Keyring>,
    /// What this node says of itself in handshakes; `listen` is the
    /// advertised address.
    pub(crate) identity: Identity,
    /// The address the listener is bound to, if it listens.
    bound: Option<SocketAddr>,
    config: NetConfig,
    peers: Peers,
    admission: Arc<Admission>,
    services: Arc<dyn Services>,
    /// Where links report what happens to them.
    events: Arc<LinkEvents>,
    stop: CancellationToken,
    shutting_down: AtomicBool,
    /// Connections opened and not yet closed, duplicates included.
    open_connections: AtomicUsize,
    /// Incoming handshakes refused or failed: anyone can cause them, so
    /// they are said once a second (and counted in full as metrics).
    refused_log: LogThrottle,
}

impl Network {
    pub(crate) fn new(
        keyring: Option<Keyring>,
        identity: Identity,
        bound: Option<SocketAddr>,
        config: NetConfig,
        services: Arc<dyn Services>,
        events: Arc<LinkEvents>,
    ) -> Self {
        Network {
            keyring,
            identity,
            bound,
            config,
            peers: Peers::default(),
            admission: Admission::new(config.max_handshakes, config.max_handshakes_per_source),
            services,
            events,
            stop: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            open_connections: AtomicUsize::new(0),
            refused_log: LogThrottle::default(),
        }
    }

    /// This node's name.
    pub(crate) fn me(&self) -> &NodeId {
        &self.identity.name
    }

    /// The address the listener is bound to.
    pub(crate) fn bound_addr(&self) -> Option<SocketAddr> {
        self.bound
    }

    /// Cancelled when the node stops: background tasks end with it.
    pub(crate) fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Time a dial may take, connecting and handshake together.
    pub(crate) fn dial_timeout(&self) -> Duration {
        self.config.connect_timeout + self.config.handshake_timeout
    }

    /// The usable connection to `id`, if there is one now.
    pub(crate) fn connection_now(&self, id: &NodeId) -> Option<Arc<Connection>> {
        self.peers.connection(id)
    }

    /// The connection to `id`, dialing its known address if there is none.
    pub(crate) async fn connection_to(
        self: &Arc<Self>,
        id: &NodeId,
        deadline: Instant,
    ) -> Result<Arc<Connection>, Error> {
        if let Some(conn) = self.connection_now(id) {
            return Ok(conn);
        }
        let down = || Error::NodeDown { node: id.clone() };
        let peer = self.peers.get(id).ok_or_else(down)?;
        let _dialing = tokio::time::timeout_at(deadline, peer.one_dial.lock())
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
                self.events.post(LinkEvent::DialFailed(id.clone()));
                outcome.and_then(|_| Err(down()))
            }
        }
    }

    /// Dials `addr`, runs the handshake and adopts the connection.
    pub(crate) async fn dial(self: &Arc<Self>, addr: SocketAddr, deadline: Instant) -> Result<Arc<Connection>, Error> {
        let keyring = self.keyring()?;
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let connect_deadline = deadline.min(Instant::now() + self.config.connect_timeout);
        let from = self.bound.map(|b| b.ip());
        let stream = match tokio::time::timeout_at(connect_deadline, open_tcp(addr, from)).await {
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
            .min(self.config.handshake_timeout);
        let established = handshake::dial(stream, keyring, &self.identity, timeout)
            .await
            .map_err(|err| handshake_error(self.me(), &addr.to_string(), err))?;
        let mut peer = established.peer;
        if peer.name == *self.me() {
            return Err(Error::Handshake {
                peer: addr.to_string(),
                reason: "that address is this node".into(),
            });
        }
        // A peer listening on 0.0.0.0 is reachable where we found it.
        if peer.listen.is_none_or(|l| l.ip().is_unspecified()) {
            peer.listen = Some(addr);
        }
        Ok(self.adopt(
            established.stream,
            established.read_buf,
            established.sealing,
            peer,
            Initiator::Us,
        ))
    }

    /// Runs the acceptor's handshake on an incoming connection, unless a
    /// newer one takes its slot first.
    async fn accept(self: Arc<Self>, stream: TcpStream, from: SocketAddr, ticket: Ticket) {
        let Ok(keyring) = self.keyring() else { return };
        let _ = stream.set_nodelay(true);
        let decision = |peer: &Identity| self.decide(peer);
        let handshake = handshake::accept(stream, keyring, &self.identity, self.config.handshake_timeout, decision);
        let result = tokio::select! {
            result = handshake => result,
            () = ticket.evicted.cancelled() => {
                tracing::debug!(node = %self.me(), peer = %from, "dropped a pending handshake for a newer one");
                return;
            }
        };
        match result {
            Ok(established) => {
                let mut peer = established.peer;
                if let Some(listen) = peer.listen.as_mut().filter(|l| l.ip().is_unspecified()) {
                    listen.set_ip(from.ip());
                }
                self.adopt(
                    established.stream,
                    established.read_buf,
                    established.sealing,
                    peer,
                    Initiator::Peer,
                );
            }
            Err(err) if err.is_unauthorized() => {
                metrics::handshake_refused(self.me().as_str(), true, true);
                if let Some(unsaid) = self.refused_log.admit() {
                    tracing::warn!(node = %self.me(), peer = %from, unsaid, "refused a connection: {err}");
                }
            }
            Err(err) => {
                metrics::handshake_refused(self.me().as_str(), true, false);
                if let Some(unsaid) = self.refused_log.admit() {
                    tracing::info!(node = %self.me(), peer = %from, unsaid, "incoming handshake failed: {err}");
                }
            }
        }
    }

    /// Whether to accept an authenticated dialer.
    fn decide(&self, peer: &Identity) -> Result<(), RejectReason> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(RejectReason::ShuttingDown);
        }
        if peer.name == *self.me() {
            tracing::warn!(node = %self.me(), "refused a node that uses our name");
            return Err(RejectReason::DuplicateName);
        }
        let live_other = self
            .peers
            .get(&peer.name)
            .and_then(|p| p.connection())
            .is_some_and(|c| c.peer.incarnation != peer.incarnation);
        if live_other {
            tracing::warn!(node = %self.me(), peer = %peer.name, "refused a second live node named like a connected one");
            return Err(RejectReason::DuplicateName);
        }
        Ok(())
    }

    fn adopt<T: Transport>(
        self: &Arc<Self>,
        stream: T,
        read_buf: bytes::BytesMut,
        sealing: Option<SessionKeys>,
        peer: Identity,
        initiator: Initiator,
    ) -> Arc<Connection> {
        let hidden = peer.hidden;
        self.open_connections.fetch_add(1, Ordering::AcqRel);
        metrics::connections(self.me().as_str(), 1.0);
        let conn = connection::spawn(
            stream,
            read_buf,
            sealing,
            peer,
            initiator,
            Arc::clone(&self.services),
            Arc::clone(&self.events),
            self.config.connection,
        );
        let installed = self
            .peers
            .get_or_insert(&conn.peer.name)
            .install(self.me(), Arc::clone(&conn));
        if installed.came_up {
            tracing::info!(node = %self.me(), peer = %conn.peer.name, hidden, ?initiator, "connected");
            self.events.post(LinkEvent::Up(Arc::clone(&installed.current)));
        }
        installed.current
    }

    /// The cluster's cookies; without one, a node can neither dial nor accept.
    pub(crate) fn keyring(&self) -> Result<&Keyring, Error> {
        self.keyring.as_ref().ok_or_else(Error::no_cookie)
    }

    /// Refuses new connections from now on; false if already shutting down.
    pub(crate) fn begin_shutdown(&self) -> bool {
        !self.shutting_down.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Stops listening, tells every peer to send no new requests, lets calls
    /// in flight finish (up to 2 s), then closes every connection.
    pub(crate) async fn hang_up(&self) {
        self.stop.cancel();
        let conns = self.connections();
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
    }

    /// Stops listening and closes every connection at once.
    pub(crate) fn close_all(&self, why: &'static str) {
        self.stop.cancel();
        for conn in self.connections() {
            conn.close(CloseReason::Local(why));
        }
    }

    /// Closes the connection to `id`, if any: calls in flight there fail
    /// now, not at their deadline.
    pub(crate) fn close_peer(&self, id: &NodeId, why: &'static str) {
        if let Some(conn) = self.connection_now(id) {
            conn.close(CloseReason::Local(why));
        }
    }

    /// Records where `id` listens, for dials to come.
    pub(crate) fn set_addr(&self, id: &NodeId, addr: SocketAddr) {
        self.peers.get_or_insert(id).set_addr(addr);
    }

    /// Forgets `id` if no connection to it is up.
    pub(crate) fn forget(&self, id: &NodeId) {
        self.peers.forget(id);
    }

    fn connections(&self) -> Vec<Arc<Connection>> {
        self.peers.all().iter().filter_map(|p| p.connection()).collect()
    }

    /// Where the nodes this one is connected to listen (and gossip).
    pub(crate) fn connected_addrs(&self) -> Vec<SocketAddr> {
        self.connections().iter().filter_map(|c| c.peer.listen).collect()
    }

    /// Dials, in the background and with backoff, every node of `targets`
    /// that has no connection (as Erlang nodes connect transitively). Hidden
    /// nodes dial on first call only.
    pub(crate) fn keep_connected(self: &Arc<Self>, targets: impl IntoIterator<Item = NodeId>) {
        if self.identity.hidden || self.is_shutting_down() {
            return;
        }
        let now = Instant::now();
        for id in targets {
            let peer = self.peers.get_or_insert(&id);
            if peer.connection().is_some() || !peer.start_background_dial(now) {
                continue;
            }
            let network = Arc::clone(self);
            tokio::spawn(async move {
                let dialed = network
                    .connection_to(&id, Instant::now() + network.dial_timeout())
                    .await;
                if let Err(err) = &dialed {
                    tracing::debug!(node = %network.me(), peer = %id, "background dial failed: {err}");
                }
                peer.dial_finished(dialed.is_ok());
            });
        }
    }

    /// The peer named `id`, for tests.
    #[cfg(test)]
    pub(crate) fn peer(&self, id: &NodeId) -> Option<Arc<super::peer::Peer>> {
        self.peers.get(id)
    }

    /// Calls to `id` waiting for replies, on its current connection.
    pub(crate) fn calls_in_flight(&self, id: &NodeId) -> usize {
        self.peers
            .get(id)
            .and_then(|peer| peer.connection())
            .map_or(0, |conn| conn.pending_calls())
    }

    /// Connections opened and not yet closed.
    pub(crate) fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Acquire)
    }
}

impl Network {
    /// Takes in that `conn` closed; true if it was the connection calls to
    /// its peer used, which leaves the peer unreachable until a new one.
    pub(crate) fn connection_closed(&self, conn: &Arc<Connection>, reason: &CloseReason) -> bool {
        self.open_connections.fetch_sub(1, Ordering::AcqRel);
        metrics::connections(self.me().as_str(), -1.0);
        let was_current = self.peers.get(&conn.peer.name).is_some_and(|peer| peer.remove(conn));
        if was_current {
            tracing::info!(node = %self.me(), peer = %conn.peer.name, %reason, "disconnected");
        }
        was_current
    }
}

/// Accepts connections until the node stops.
pub(crate) async fn accept_loop(network: Weak<Network>, listener: TcpListener, stop: CancellationToken) {
    // Evictions are said at most once a second, with how many.
    let mut evictions = 0usize;
    let mut said = Instant::now();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Some(network) = network.upgrade() else { return };
        match accepted {
            Ok((stream, from)) => {
                let (ticket, evicted) = network.admission.admit(from.ip());
                evictions += evicted;
                if evictions > 0 && said.elapsed() >= Duration::from_secs(1) {
                    tracing::warn!(
                        node = %network.me(),
                        evictions,
                        "too many handshakes at once: dropped the oldest pending ones (idle or slow dialers)"
                    );
                    (evictions, said) = (0, Instant::now());
                }
                tokio::spawn(network.accept(stream, from, ticket));
            }
            Err(err) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(node = %network.me(), "accept failed: {err}");
                drop(network);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::net::UnixStream;

    use super::*;
    use crate::connection::LinkOwner;
    use crate::registry::Registry;
    use crate::test_support::identity;

    /// Takes the link events the way a node does: closes through
    /// `connection_closed`, recording what it reports.
    #[derive(Default)]
    struct Owner {
        network: std::sync::OnceLock<Weak<Network>>,
        seen: Mutex<Vec<String>>,
    }

    impl LinkOwner<Connection> for Owner {
        fn handle(&self, event: LinkEvent) {
            let seen = match event {
                LinkEvent::Up(conn) => format!("up {}", conn.peer.name),
                LinkEvent::Closed(conn, reason) => {
                    let network = self.network.get().and_then(Weak::upgrade).expect("the network");
                    let current = network.connection_closed(&conn, &reason);
                    format!("closed {} current={current}", conn.peer.name)
                }
                LinkEvent::DialFailed(peer) => format!("dial failed {peer}"),
            };
            self.seen.lock().unwrap().push(seen);
        }
    }

    fn network(name: &str, keyring: Option<Keyring>) -> (Arc<Network>, Arc<Owner>) {
        let owner = Arc::new(Owner::default());
        let events = LinkEvents::new(Arc::downgrade(&owner) as Weak<dyn LinkOwner<Connection>>);
        let config = NetConfig {
            handshake_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_handshakes: 4,
            max_handshakes_per_source: 2,
            connection: ConnectionConfig {
                max_frame: 1 << 20,
                tick: Duration::from_secs(1),
                max_handlers: 8,
            },
        };
        let services: Arc<dyn Services> = Arc::new(Registry::default());
        let network = Arc::new(Network::new(
            keyring,
            identity(name, false),
            None,
            config,
            services,
            events,
        ));
        owner.network.set(Arc::downgrade(&network)).unwrap();
        (network, owner)
    }

    /// Adopts one end of a socket pair as a connection from `peer`.
    fn adopt(network: &Arc<Network>, peer: Identity, initiator: Initiator) -> (Arc<Connection>, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (
            network.adopt(ours, bytes::BytesMut::new(), None, peer, initiator),
            theirs,
        )
    }

    #[test]
    fn without_a_cookie_it_neither_dials_nor_accepts_and_says_how_to_set_one() {
        let (network, _) = network("a", None);
        let err = network.keyring().map(|_| ()).expect_err("no keyring");
        let text = err.to_string();
        assert!(text.contains("MALLA_COOKIE") && text.contains(".cookie(.."), "{text}");
    }

    #[test]
    fn a_dialer_with_our_name_is_refused_and_so_is_everyone_once_shutting_down() {
        let (network, _) = network("a", None);
        assert_eq!(network.decide(&identity("a", false)), Err(RejectReason::DuplicateName));
        assert_eq!(network.decide(&identity("b", false)), Ok(()));
        assert!(network.begin_shutdown());
        assert!(!network.begin_shutdown(), "once");
        assert_eq!(network.decide(&identity("b", false)), Err(RejectReason::ShuttingDown));
    }

    #[tokio::test]
    async fn a_second_live_node_under_a_connected_name_is_refused() {
        let (network, _) = network("a", None);
        let _b = adopt(&network, identity("b", false), Initiator::Peer);
        let twin = Identity {
            incarnation: 2,
            ..identity("b", false)
        };
        assert_eq!(network.decide(&twin), Err(RejectReason::DuplicateName));
        assert_eq!(network.decide(&identity("b", false)), Ok(()), "the same life redialing");
    }

    #[tokio::test]
    async fn only_the_connection_calls_use_breaks_the_link_when_it_closes() {
        let (network, owner) = network("a", None);
        let (first, _keep) = adopt(&network, identity("b", false), Initiator::Peer);
        // `a` sorts first: its own dial wins the tie-break, the peer's retires.
        let (second, _keep2) = adopt(&network, identity("b", false), Initiator::Us);
        assert!(Arc::ptr_eq(&network.connection_now(&"b".into()).unwrap(), &second));
        assert!(!first.is_usable());
        assert_eq!(network.open_connections(), 2);
        first.close(CloseReason::Local("test"));
        second.close(CloseReason::Local("test"));
        assert_eq!(network.open_connections(), 0);
        assert_eq!(
            *owner.seen.lock().unwrap(),
            ["up b", "closed b current=false", "closed b current=true"]
        );
        assert!(network.connection_now(&"b".into()).is_none());
    }
}
