//! The server side of a service as the runtime sees it: an object-safe
//! dispatcher that generated `…Server` types implement, and the codecs they
//! call.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ServiceManifest;

/// A served service. Implemented by the `…Server` types that
/// `#[malla::service]` generates; not meant to be implemented by hand.
pub trait Service: Send + Sync + 'static {
    /// What the service declares.
    fn manifest(&self) -> &'static ServiceManifest;

    /// Decodes the arguments of method number `method` (its index in the
    /// manifest) and returns the future that runs it and encodes the reply.
    #[doc(hidden)]
    fn dispatch(
        &self,
        method: usize,
        format: Format,
        args: &[u8],
    ) -> Result<DispatchFuture, DispatchError>;

    /// A type-erased handle through which a client on the same node calls the
    /// implementation directly, without serializing.
    #[doc(hidden)]
    fn local_handle(&self) -> Option<LocalHandle> {
        None
    }
}

/// Future returned by [`Service::dispatch`]: the encoded reply.
#[doc(hidden)]
pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, DispatchError>> + Send>>;

/// Future of a direct, in-process call.
#[doc(hidden)]
pub type LocalFuture<R> = Pin<Box<dyn Future<Output = R> + Send>>;

/// Encoding of arguments and replies on the wire.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The default: compact, not self-describing.
    Postcard,
    /// For tools (`malla call`): self-describing, slower.
    Json,
}

/// Why a request could not be dispatched.
#[doc(hidden)]
#[derive(Debug)]
pub struct DispatchError(pub(crate) DispatchErrorKind);

#[derive(Debug)]
pub(crate) enum DispatchErrorKind {
    UnknownMethod(usize),
    BadArguments(String),
    BadReply(String),
}

impl DispatchError {
    #[doc(hidden)]
    pub fn unknown_method(index: usize) -> Self {
        DispatchError(DispatchErrorKind::UnknownMethod(index))
    }
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            DispatchErrorKind::UnknownMethod(index) => write!(f, "no method number {index}"),
            DispatchErrorKind::BadArguments(why) => write!(f, "could not decode the arguments: {why}"),
            DispatchErrorKind::BadReply(why) => write!(f, "could not encode the reply: {why}"),
        }
    }
}

/// Decodes an argument tuple.
#[doc(hidden)]
pub fn decode_args<T: DeserializeOwned>(format: Format, bytes: &[u8]) -> Result<T, DispatchError> {
    let result = match format {
        Format::Postcard => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    };
    result.map_err(|why| DispatchError(DispatchErrorKind::BadArguments(why)))
}

/// Encodes a reply.
#[doc(hidden)]
pub fn encode_reply<T: Serialize>(format: Format, reply: &T) -> Result<Vec<u8>, DispatchError> {
    let result = match format {
        Format::Postcard => postcard::to_allocvec(reply).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_vec(reply).map_err(|e| e.to_string()),
    };
    result.map_err(|why| DispatchError(DispatchErrorKind::BadReply(why)))
}

/// The type-erased direct-call handle of a served implementation.
#[doc(hidden)]
pub struct LocalHandle(Box<dyn Any + Send + Sync>);

impl LocalHandle {
    #[doc(hidden)]
    pub fn new<T: Any + Send + Sync>(handle: T) -> Self {
        LocalHandle(Box::new(handle))
    }

    pub(crate) fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

/// Stands for "no direct-call handle" in stubs generated from a manifest:
/// they have no trait to call through.
#[doc(hidden)]
pub enum NoLocal {}

/// The direct-call function of a manifest stub; never called.
#[doc(hidden)]
pub fn no_local<A, R>(never: &NoLocal, _args: A) -> LocalFuture<R> {
    match *never {}
}

/// Generated code calls this with every argument and return type, spanned on
/// the user's type, so a type that cannot cross the network is reported there.
#[doc(hidden)]
pub fn assert_wire_type<T: Serialize + DeserializeOwned + Send + 'static>() {}

/// Whether a service on this node takes calls (Malla's admin status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AdminStatus {
    /// Takes calls; listed by discovery.
    Active,
    /// Temporarily refuses calls with `ServiceNotAvailable` (callers fail
    /// over); not listed by discovery.
    Paused,
    /// Stopped: refuses calls like `Paused`, for longer-lived shutdowns.
    Inactive,
}

impl AdminStatus {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            AdminStatus::Active => 0,
            AdminStatus::Paused => 1,
            AdminStatus::Inactive => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => AdminStatus::Active,
            1 => AdminStatus::Paused,
            _ => AdminStatus::Inactive,
        }
    }
}
