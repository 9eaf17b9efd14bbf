//! The serving side of the call layers: interceptors run before a handler,
//! and the list a builder or options value keeps them in. Apart from the
//! client side so that `options` (which keeps a service's interceptors) and
//! `intercept` (whose `CallInfo` holds call options) do not import each other.

use std::sync::Arc;

use crate::{Metadata, NodeId};

/// A server-side call layer, run before the handler of every request a
/// service serves (from another node, or from this one's own clients).
///
/// ```
/// use malla_runtime::{Rejection, ServeInterceptor, ServedCall};
///
/// /// `Malla.authorize`: callers must present the token.
/// struct RequireToken(Vec<u8>);
///
/// impl ServeInterceptor for RequireToken {
///     fn before(&self, call: &ServedCall<'_>) -> Result<(), Rejection> {
///         match call.metadata().get("authorization") {
///             Some(token) if token == self.0.as_slice() => Ok(()),
///             _ => Err(Rejection::new("a valid `authorization` token is required")),
///         }
///     }
/// }
/// ```
pub trait ServeInterceptor: Send + Sync + 'static {
    /// Whether the request may run; a rejection reaches the caller as
    /// [`Error::Refused`](crate::Error::Refused), and the handler never runs.
    fn before(&self, call: &ServedCall<'_>) -> Result<(), Rejection>;
}

/// A request about to be served, as a [`ServeInterceptor`] sees it.
#[derive(Debug)]
pub struct ServedCall<'a> {
    pub(crate) caller: &'a NodeId,
    pub(crate) hidden: bool,
    pub(crate) local: bool,
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    pub(crate) metadata: &'a Metadata,
}

impl ServedCall<'_> {
    /// The calling node, as its handshake proved (it holds the cookie).
    pub fn caller(&self) -> &NodeId {
        self.caller
    }

    /// Whether the caller is a hidden node (a tool such as `malla`).
    pub fn is_hidden(&self) -> bool {
        self.hidden
    }

    /// Whether the call comes from this node itself, in-process.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The service's wire name.
    pub fn service(&self) -> &str {
        self.service
    }

    /// The method's name.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The call's metadata.
    pub fn metadata(&self) -> &Metadata {
        self.metadata
    }
}

/// Why a [`ServeInterceptor`] refuses a request; the caller gets it as
/// [`Error::Refused`](crate::Error::Refused)'s reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(String);

impl Rejection {
    /// A rejection saying `reason` (sent to the caller: name no secret in it).
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection(reason.into())
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.0
    }

    pub(crate) fn into_reason(self) -> String {
        self.0
    }
}

/// Interceptors as a builder or options value keeps them: shown as a count.
pub(crate) struct Installed<T: ?Sized>(pub(crate) Vec<Arc<T>>);

impl<T: ?Sized> Clone for Installed<T> {
    fn clone(&self) -> Self {
        Installed(self.0.clone())
    }
}

impl<T: ?Sized> Default for Installed<T> {
    fn default() -> Self {
        Installed(Vec::new())
    }
}

impl<T: ?Sized> std::fmt::Debug for Installed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} interceptors", self.0.len())
    }
}

impl<T: ?Sized> Installed<T> {
    /// These, then `more`, as the one list a call or request runs.
    pub(crate) fn then(&self, more: &Installed<T>) -> Arc<[Arc<T>]> {
        self.0.iter().chain(&more.0).cloned().collect()
    }
}

/// Runs `interceptors` in order on `call`; the first rejection wins.
pub(crate) fn admit(interceptors: &[Arc<dyn ServeInterceptor>], call: &ServedCall<'_>) -> Result<(), Rejection> {
    interceptors.iter().try_for_each(|interceptor| interceptor.before(call))
}
