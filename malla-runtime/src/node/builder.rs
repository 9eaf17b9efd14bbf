//! Configuration of a node before it starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Net, NetConfig, Node, NodeInner, accept_loop, events};
use crate::connection::ConnectionConfig;
use crate::handshake::{Cookie, Identity};
use crate::peer::Peers;
use crate::registry::Registry;
use crate::{Error, NodeId};

/// Largest frame a node accepts unless told otherwise.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
/// Smallest accepted `max_frame_size`: room for any header and error status.
const MIN_MAX_FRAME_SIZE: usize = 1024;
/// Environment variable read for the cookie when the builder sets none.
pub const COOKIE_ENV: &str = "MALLA_COOKIE";

/// Configures and starts a [`Node`]; made by [`Node::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), malla_runtime::Error> {
/// let node = malla_runtime::Node::builder("node1")
///     .cookie("secret")
///     .listen("127.0.0.1:0".parse().unwrap())
///     .start()
///     .await?;
/// println!("listening on {:?}", node.local_addr());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    cookie: Option<String>,
    listen: Option<SocketAddr>,
    hidden: bool,
    max_frame_size: usize,
    handshake_timeout: Duration,
    connect_timeout: Duration,
    tick_interval: Duration,
}

impl NodeBuilder {
    pub(crate) fn new(name: String) -> Self {
        NodeBuilder {
            name,
            cookie: None,
            listen: None,
            hidden: false,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            tick_interval: Duration::from_secs(1),
        }
    }

    /// The cluster's shared secret. Defaults to the `MALLA_COOKIE`
    /// environment variable; a node that listens or connects needs one.
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
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
        self.handshake_timeout = timeout;
        self
    }

    /// How long opening a TCP connection may take (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Interval of the keep-alive pings on idle connections (default 1 s). A
    /// connection silent for 4 intervals is closed and its peer marked down.
    pub fn tick_interval(mut self, interval: Duration) -> Self {
        self.tick_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Starts the node: binds the listener, if any. Must run inside a tokio
    /// runtime; the node's tasks run on it.
    pub async fn start(self) -> Result<Node, Error> {
        NodeId::validate(&self.name).map_err(Error::Config)?;
        let cookie = match self.cookie.or_else(|| std::env::var(COOKIE_ENV).ok()) {
            Some(c) if c.is_empty() => return Err(Error::Config("the cookie is empty".into())),
            Some(c) => Some(Cookie::new(c.as_bytes())),
            None => None,
        };
        let listener = match self.listen {
            Some(addr) => {
                if cookie.is_none() {
                    return Err(Error::Config(format!(
                        "no cookie: a node that listens needs one; set it with `.cookie(..)` or the {COOKIE_ENV} environment variable"
                    )));
                }
                Some(tokio::net::TcpListener::bind(addr).await?)
            }
            None => None,
        };
        let listen = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let id = NodeId::from(self.name);
        let inner = Arc::new(NodeInner {
            registry: Arc::new(Registry::default()),
            events: events::channel(),
            net: Net {
                cookie,
                identity: Identity {
                    name: id.clone(),
                    incarnation: rand::random(),
                    hidden: self.hidden,
                    listen,
                    max_frame: self.max_frame_size as u32,
                },
                config: NetConfig {
                    handshake_timeout: self.handshake_timeout,
                    connect_timeout: self.connect_timeout,
                    connection: ConnectionConfig {
                        max_frame: self.max_frame_size,
                        tick: self.tick_interval,
                    },
                },
                peers: Peers::default(),
                stop: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
                open_connections: AtomicUsize::new(0),
            },
            id,
        });
        if let Some(listener) = listener {
            tracing::info!(node = %inner.id, addr = ?listen, "listening");
            tokio::spawn(accept_loop(Arc::downgrade(&inner), listener, inner.net.stop.clone()));
        }
        Ok(Node { inner })
    }
}
