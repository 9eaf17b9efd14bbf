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
    fn dispatch(&self, method: usize, format: Format, args: &[u8]) -> Result<DispatchFuture, DispatchError>;

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

pub use crate::wire::Format;

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

/// Decodes a request's arguments one by one. Generated code calls
/// [`ArgsDecoder::arg`] once per argument, spanned on the argument's type, so a
/// type that cannot be deserialized is reported there. In postcard the
/// arguments are the concatenation of their encodings (a tuple); in JSON, an
/// array.
#[doc(hidden)]
pub struct ArgsDecoder<'a> {
    inner: ArgsSource<'a>,
}

enum ArgsSource<'a> {
    Postcard(&'a [u8]),
    Json(std::vec::IntoIter<serde_json::Value>),
}

impl<'a> ArgsDecoder<'a> {
    #[doc(hidden)]
    pub fn new(format: Format, bytes: &'a [u8]) -> Result<Self, DispatchError> {
        let inner = match format {
            Format::Postcard => ArgsSource::Postcard(bytes),
            Format::Json => {
                let values: Vec<serde_json::Value> =
                    serde_json::from_slice(bytes).map_err(|e| bad_arguments(e.to_string()))?;
                ArgsSource::Json(values.into_iter())
            }
        };
        Ok(ArgsDecoder { inner })
    }

    /// The next argument.
    #[doc(hidden)]
    pub fn arg<T: DeserializeOwned>(&mut self) -> Result<T, DispatchError> {
        match &mut self.inner {
            ArgsSource::Postcard(rest) => {
                let (value, tail) = postcard::take_from_bytes(rest).map_err(|e| bad_arguments(e.to_string()))?;
                *rest = tail;
                Ok(value)
            }
            ArgsSource::Json(values) => {
                let value = values.next().ok_or_else(|| bad_arguments("missing argument".into()))?;
                serde_json::from_value(value).map_err(|e| bad_arguments(e.to_string()))
            }
        }
    }

    /// Checks that nothing is left over: trailing bytes mean the caller and
    /// the service disagree about the arguments.
    #[doc(hidden)]
    pub fn finish(self) -> Result<(), DispatchError> {
        let left = match self.inner {
            ArgsSource::Postcard(rest) => rest.len(),
            ArgsSource::Json(values) => values.len(),
        };
        if left == 0 {
            Ok(())
        } else {
            Err(bad_arguments(format!("{left} unexpected trailing items")))
        }
    }
}

fn bad_arguments(why: String) -> DispatchError {
    DispatchError(DispatchErrorKind::BadArguments(why))
}

/// Encodes a reply. Generated code names the type, spanned on the user's
/// return type.
#[doc(hidden)]
pub fn encode_reply<T: Serialize>(format: Format, reply: &T) -> Result<Vec<u8>, DispatchError> {
    let result = match format {
        Format::Postcard => postcard::to_allocvec(reply).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_vec(reply).map_err(|e| e.to_string()),
    };
    result.map_err(|why| DispatchError(DispatchErrorKind::BadReply(why)))
}

/// Encodes a call's arguments one by one, the mirror of [`ArgsDecoder`].
#[doc(hidden)]
pub struct ArgsEncoder {
    bytes: Vec<u8>,
}

impl ArgsEncoder {
    pub(crate) fn new() -> Self {
        ArgsEncoder {
            bytes: Vec::with_capacity(32),
        }
    }

    /// Appends one argument.
    #[doc(hidden)]
    pub fn arg<T: Serialize>(&mut self, value: &T) -> Result<(), postcard::Error> {
        let bytes = std::mem::take(&mut self.bytes);
        self.bytes = postcard::to_extend(value, bytes)?;
        Ok(())
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Decodes a reply. Generated code names the type, spanned on the user's
/// return type.
#[doc(hidden)]
pub fn decode_reply<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
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
/// the user's type: values move between tasks and threads.
#[doc(hidden)]
pub fn assert_sendable<T: Send + 'static>() {}

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
