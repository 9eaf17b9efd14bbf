//! The one error type of the public API. Each variant says what happened and
//! carries what a caller needs to act on it: the service, the method, the
//! node, the deadline.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::NodeId;

/// Everything a malla call or node operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No reachable, active instance of the service is known: it was never
    /// discovered, every instance is paused, or every node refused it. This
    /// is what a stub answers before discovery, without touching the network.
    /// With a version requirement ([`CallOptions::vsn`](crate::CallOptions::vsn)),
    /// no instance that meets it was.
    #[error(
        "service `{service}` is not available on any known node{}",
        requirement.as_deref().map(|r| format!(" with a version matching `{r}`")).unwrap_or_default()
    )]
    ServiceNotAvailable {
        /// Wire name of the service.
        service: Cow<'static, str>,
        /// The call's version requirement, if it had one.
        requirement: Option<String>,
    },

    /// The node serving the call has another signature for the method: the
    /// caller was built from another version of the service (for example a
    /// stub generated from an outdated manifest).
    #[error(
        "`{service}.{method}` has a different signature on node `{node}`; the caller was built from another version of the service"
    )]
    SignatureMismatch {
        /// Wire name of the service.
        service: Cow<'static, str>,
        /// Method name.
        method: Cow<'static, str>,
        /// Node that refused the call.
        node: NodeId,
    },

    /// Every node tried was running as many handlers for this node's
    /// connection as it allows, and refused the call before running it. It
    /// did not run; calling again later may succeed.
    #[error("`{service}` is overloaded on node `{node}`: the call did not run")]
    Overloaded {
        /// Wire name of the service.
        service: Cow<'static, str>,
        /// The last node that refused.
        node: NodeId,
    },

    /// The call did not complete before its deadline. It may have run.
    #[error("`{service}.{method}` timed out after {timeout:?}")]
    Timeout {
        /// Wire name of the service.
        service: Cow<'static, str>,
        /// Method name.
        method: Cow<'static, str>,
        /// The deadline the call had.
        timeout: Duration,
    },

    /// The connection to the node was lost while the call was in flight, or
    /// the node is not connected. A non-idempotent call in flight is not
    /// retried elsewhere: it may have run.
    #[error("node `{node}` is down or unreachable")]
    NodeDown {
        /// The node.
        node: NodeId,
    },

    /// The method failed on the node that ran it: its handler panicked, or
    /// the node could not decode the request.
    #[error("`{service}.{method}` failed on node `{node}`: {message}")]
    Remote {
        /// Wire name of the service.
        service: Cow<'static, str>,
        /// Method name.
        method: Cow<'static, str>,
        /// Node that ran the call.
        node: NodeId,
        /// What went wrong, as the remote node reported it.
        message: String,
    },

    /// The peer does not share our cookie. Nothing was exchanged.
    #[error("{peer} refused the handshake: {reason}")]
    Unauthorized {
        /// Address or name of the peer.
        peer: String,
        /// Why, as far as it can be told.
        reason: String,
    },

    /// The connection handshake failed for another reason than the cookie:
    /// protocol version, duplicate node name, timeout.
    #[error("handshake with {peer} failed: {reason}")]
    Handshake {
        /// Address or name of the peer.
        peer: String,
        /// Why.
        reason: String,
    },

    /// Opening a TCP connection failed.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// Address dialed.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A value could not be encoded or decoded (arguments, reply, frame).
    #[error("could not {what}: {message}")]
    Codec {
        /// What was being done, e.g. "decode the reply of `Calculator.add`".
        what: String,
        /// The codec's message.
        message: String,
    },

    /// A connect target could not be resolved to any node address.
    #[error("cannot resolve `{target}`: {reason}")]
    Resolve {
        /// The target, as written.
        target: String,
        /// Why.
        reason: String,
    },

    /// A service with that name is already served on this node.
    #[error("service `{0}` is already served on this node")]
    AlreadyServed(String),

    /// The service is not served on this node.
    #[error("service `{0}` is not served on this node")]
    NotServed(String),

    /// The node was misconfigured (missing cookie, bad name, no runtime…).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The node has been shut down.
    #[error("the node has been shut down")]
    Shutdown,

    /// The consensus group could not be reached with a quorum before the
    /// deadline, or a grant ran out before its answer could be used: nothing
    /// is held (a request may still be applied if it reached the leader; a
    /// lock so granted is freed when its lease runs out).
    #[error("no quorum: {operation} waited {waited:?} for the consensus group ({reason})")]
    NoQuorum {
        /// What was asked, e.g. "lock `jobs`".
        operation: String,
        /// How long it waited.
        waited: Duration,
        /// The last reason it heard.
        reason: String,
    },

    /// The lock is held by another holder (on `node`), and stayed held
    /// for as long as the caller was willing to wait.
    #[error("lock `{name}` is held by node `{node}`")]
    LockBusy {
        /// The lock.
        name: String,
        /// The node whose guard holds it.
        node: NodeId,
    },

    /// The global name is registered by another node.
    #[error("the name `{name}` is registered by node `{node}`")]
    NameTaken {
        /// The name.
        name: String,
        /// The node that holds it.
        node: NodeId,
    },

    /// A lock or name this node does not hold (never held, already
    /// released, lost to its lease running out, or held with another token).
    #[error("`{name}` is not held here: {reason}")]
    NotHeld {
        /// The lock or name.
        name: String,
        /// What holds it instead, if anything.
        reason: String,
    },

    /// The lock's lease ran out while the guarded work ran (the node could
    /// not renew it, as when cut off from a quorum): the work was stopped.
    #[error("lock `{name}` was lost: its lease ran out before it could be renewed")]
    LockLost {
        /// The lock.
        name: String,
    },

    /// A lock or name that cannot be one: empty, too long, or a lease out
    /// of bounds.
    #[error("invalid lock or name request: {reason}")]
    InvalidName {
        /// Why.
        reason: String,
    },

    /// A server interceptor refused the call before its handler ran (see
    /// `ServeInterceptor`): the call did not run, and no other node was tried.
    #[error("`{service}.{method}` refused by {node}: {reason}")]
    Refused {
        /// Wire name of the service.
        service: Cow<'static, str>,
        /// The method.
        method: Cow<'static, str>,
        /// The node that refused it.
        node: NodeId,
        /// The interceptor's reason.
        reason: String,
    },

    /// Call metadata that cannot be sent: a bad key, or past its bounds
    /// (16 entries, 4 KiB encoded).
    #[error("invalid call metadata: {reason}")]
    InvalidMetadata {
        /// Why.
        reason: String,
    },

    /// An I/O error outside of a call (binding a port, for example).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// Whether the error says the call surely did not run: the service was
    /// not available there, its signature differs, the node was overloaded
    /// and refused it before running it, or a server interceptor refused it.
    pub fn is_not_run(&self) -> bool {
        matches!(
            self,
            Error::ServiceNotAvailable { .. }
                | Error::SignatureMismatch { .. }
                | Error::Overloaded { .. }
                | Error::Refused { .. }
        )
    }

    /// A node that listens, joins a cluster or dials has no cookie.
    pub(crate) fn no_cookie() -> Error {
        Error::Config(
            "no cookie: every node of a cluster needs the same one; call `.cookie(..)` on the builder or set MALLA_COOKIE (with `NodeBuilder::from_env`, MALLA_COOKIE_FILE too)"
                .into(),
        )
    }

    /// A codec error while doing `action` (`"decode the reply of"`) for
    /// `service.method`.
    pub(crate) fn codec(action: &str, service: &str, method: &str, message: impl ToString) -> Error {
        Error::Codec {
            what: format!("{action} `{service}.{method}`"),
            message: message.to_string(),
        }
    }

    /// The error's kind in a metric label or span field: `not_available`,
    /// `timeout`, `node_down`, …
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Error::ServiceNotAvailable { .. } => "not_available",
            Error::SignatureMismatch { .. } => "signature_mismatch",
            Error::Overloaded { .. } => "overloaded",
            Error::Timeout { .. } => "timeout",
            Error::NodeDown { .. } => "node_down",
            Error::Remote { .. } => "remote_error",
            Error::Unauthorized { .. } => "unauthorized",
            Error::Handshake { .. } => "handshake",
            Error::Connect { .. } => "connect",
            Error::Codec { .. } => "codec_error",
            Error::Shutdown => "shutdown",
            Error::NoQuorum { .. } => "no_quorum",
            Error::LockBusy { .. } => "lock_busy",
            Error::NameTaken { .. } => "name_taken",
            Error::NotHeld { .. } => "not_held",
            Error::LockLost { .. } => "lock_lost",
            Error::InvalidName { .. } => "invalid_name",
            Error::Refused { .. } => "refused",
            Error::InvalidMetadata { .. } => "invalid_metadata",
            Error::Resolve { .. } | Error::AlreadyServed(_) | Error::NotServed(_) | Error::Config(_) | Error::Io(_) => {
                "other"
            }
        }
    }
}
