//! Options of calls (as Malla's `remote/4` takes them) and of served
//! services.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::NodeId;
use crate::intercept::served::{Installed, ServeInterceptor};
use crate::singleton::Singleton;

/// Deadline and failover settings of a call.
///
/// ```
/// use std::time::Duration;
/// let opts = malla_runtime::CallOptions::default()
///     .timeout(Duration::from_millis(200))
///     .sna_retries(3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) sna_retries: u32,
    pub(crate) retry_interval: Option<Duration>,
    /// Shared: interceptors see a copy of a call's options, and a copy
    /// should not allocate.
    pub(crate) nodes: Option<Arc<[NodeId]>>,
    pub(crate) vsn: Option<Arc<VsnRequirement>>,
    pub(crate) balance: Balance,
    pub(crate) key: Option<u64>,
}

/// How a call picks the first node to try among the instances that may take
/// it. Every strategy tries this node first when it serves the service (a
/// call without the network), and fails over through the others in route
/// order.
///
/// ```
/// use malla_runtime::{Balance, CallOptions};
/// let spread = CallOptions::default().balance(Balance::LeastLoaded);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// The route's order, drawn again at random on every change of the
    /// cluster (Malla's): between two changes, calls go to the same node.
    #[default]
    LocalFirst,
    /// Each call starts one node further along the route.
    RoundRobin,
    /// Of two instances drawn at random, the one with fewer calls from this
    /// node in flight ("power of two choices"): a slow node holds its calls
    /// longer and is picked less.
    LeastLoaded,
}

/// A semver requirement on the version of the instances a call may reach
/// (`"^1.4"`, `">=2, <3"`), as [`CallOptions::vsn`] takes it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct VsnRequirement {
    text: String,
    parsed: Result<semver::VersionReq, String>,
}

impl VsnRequirement {
    fn new(text: &str) -> Self {
        VsnRequirement {
            text: text.to_owned(),
            parsed: text.parse().map_err(|e: semver::Error| e.to_string()),
        }
    }

    /// `text` as a requirement, or the error a call with it would give.
    pub(crate) fn checked(text: &str) -> Result<Self, crate::Error> {
        let requirement = Self::new(text);
        requirement.parsed()?;
        Ok(requirement)
    }

    /// The requirement, or why it does not parse.
    pub(crate) fn parsed(&self) -> Result<&semver::VersionReq, crate::Error> {
        self.parsed
            .as_ref()
            .map_err(|why| crate::Error::Config(format!("version requirement `{}`: {why}", self.text)))
    }

    /// Whether an instance of version `vsn` meets it; one with no
    /// version, or one that is not semver, never does.
    pub(crate) fn matches(&self, vsn: Option<&semver::Version>) -> bool {
        matches!((&self.parsed, vsn), (Ok(req), Some(vsn)) if req.matches(vsn))
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for VsnRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// The longest duration any setting takes (a year): longer ones are cut to
/// it, so no deadline computed from them overflows.
pub const LONGEST_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `duration`, at most [`LONGEST_DURATION`].
pub(crate) fn bounded(duration: Duration) -> Duration {
    duration.min(LONGEST_DURATION)
}

/// Deadline of a call when neither the options nor `#[malla(timeout_ms)]` set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two rounds over the nodes when the service was not available.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

impl CallOptions {
    /// Deadline of the whole call, every attempt included (default: the
    /// method's `timeout_ms`, else 15 s; at most [`LONGEST_DURATION`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(bounded(timeout));
        self
    }

    /// How many more rounds over the nodes to make when no node could run the
    /// call because the service was not available (default 0: fail at once;
    /// Elixir Malla defaults to 5).
    pub fn sna_retries(mut self, retries: u32) -> Self {
        self.sna_retries = retries;
        self
    }

    /// Pause between those rounds (default 1 s).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = Some(bounded(interval));
        self
    }

    /// Only instances whose version meets `requirement`, a semver requirement
    /// (`"^1.4"`, `"=2.0.3"`, `">=2, <3"`). Instances whose version is not
    /// semver (or empty) never do. A requirement that does not parse fails
    /// the call with [`Error::Config`](crate::Error::Config); one that no
    /// instance meets, with `ServiceNotAvailable` naming it.
    ///
    /// ```
    /// let v2 = malla_runtime::CallOptions::default().vsn("^2");
    /// ```
    pub fn vsn(mut self, requirement: &str) -> Self {
        self.vsn = Some(Arc::new(VsnRequirement::new(requirement)));
        self
    }

    /// How to pick the first node among the instances (default
    /// [`Balance::LocalFirst`]).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Routes the call by `key` (an entity id, a tenant, a user): every call
    /// with the same key goes to the same instance, the one with the
    /// highest rendezvous score for it among the instances that may take
    /// the call, and fails over in score order. Every node that sees the
    /// same instances picks the same one; when an instance leaves, only
    /// its keys move, about 1/N of them. The key overrides the balance,
    /// this node's own instance included: it is one candidate among the
    /// others. Keys are bytes: pass integers as `to_be_bytes()`.
    ///
    /// ```
    /// let for_user = malla_runtime::CallOptions::default().key("user-1842");
    /// ```
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(crate::rendezvous::key_hash(key.as_ref()));
        self
    }

    /// Call these nodes, in this order, instead of the discovered ones.
    pub fn nodes<I, N>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<NodeId>,
    {
        self.nodes = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    #[inline]
    pub(crate) fn effective_timeout(&self, method_default_ms: Option<u64>) -> Duration {
        let timeout = self
            .timeout
            .or(method_default_ms.map(Duration::from_millis))
            .unwrap_or(DEFAULT_TIMEOUT);
        bounded(timeout)
    }

    pub(crate) fn effective_retry_interval(&self) -> Duration {
        self.retry_interval.unwrap_or(DEFAULT_RETRY_INTERVAL)
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
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) paused: bool,
    pub(crate) interceptors: Installed<dyn ServeInterceptor>,
    pub(crate) singleton: Option<Singleton>,
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

    /// Serves it as a singleton: of all the nodes serving it, one instance
    /// is active and the others stand by, answering `ServiceNotAvailable`
    /// (callers fail over to the owner). See [`SingletonMode`](crate::SingletonMode)
    /// for what each mode promises.
    pub fn singleton(mut self, singleton: Singleton) -> Self {
        self.singleton = Some(singleton);
        self
    }

    /// Runs `interceptor` before every request this service serves, from
    /// other nodes and from this one, after the node's own
    /// ([`NodeBuilder::intercept_served`](crate::NodeBuilder::intercept_served)).
    /// The first that refuses ends the request with [`Error::Refused`](crate::Error::Refused).
    pub fn intercept(mut self, interceptor: impl ServeInterceptor) -> Self {
        self.interceptors.0.push(std::sync::Arc::new(interceptor));
        self
    }
}
