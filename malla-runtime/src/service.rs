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
use crate::wire::bounded::{self, DecodeError};

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

    /// The singleton mode `#[malla::service(global, singleton)]` asks for:
    /// how the service is served unless its `ServeOptions` say otherwise.
    #[doc(hidden)]
    fn singleton(&self) -> Option<crate::SingletonMode> {
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
    /// The implementation is not running here now (a placed service
    /// between its instances): the caller fails over.
    NotAvailable,
    BadArguments(String),
    BadReply(String),
}

impl DispatchError {
    #[doc(hidden)]
    pub fn unknown_method(index: usize) -> Self {
        DispatchError(DispatchErrorKind::UnknownMethod(index))
    }

    /// No instance runs here to take the request: a caller fails over as
    /// from a paused service.
    pub(crate) fn not_available() -> Self {
        DispatchError(DispatchErrorKind::NotAvailable)
    }

    pub(crate) fn is_not_available(&self) -> bool {
        matches!(self.0, DispatchErrorKind::NotAvailable)
    }
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            DispatchErrorKind::UnknownMethod(index) => write!(f, "no method number {index}"),
            DispatchErrorKind::NotAvailable => f.write_str("the service is not running here"),
            DispatchErrorKind::BadArguments(why) => write!(f, "could not decode the arguments: {why}"),
            DispatchErrorKind::BadReply(why) => write!(f, "could not encode the reply: {why}"),
        }
    }
}

/// Decodes a request's arguments one by one. Generated code calls
/// [`ArgsDecoder::arg`] once per argument, spanned on the argument's type, so a
/// type that cannot be deserialized is reported there. In postcard the
/// arguments are the concatenation of their encodings (a tuple); in JSON, an
/// array, read element by element straight into each argument's type (no
/// tree of values in between: a large body costs what its arguments cost).
#[doc(hidden)]
pub struct ArgsDecoder<'a> {
    inner: ArgsSource<'a>,
}

enum ArgsSource<'a> {
    Postcard(&'a [u8]),
    Json(JsonArgs<'a>),
}

/// The rest of a JSON array of arguments, after its `[`.
struct JsonArgs<'a> {
    rest: &'a [u8],
    /// No argument read yet: the next one has no `,` before it.
    first: bool,
}

impl<'a> JsonArgs<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, DispatchError> {
        match skip_json_space(bytes).split_first() {
            Some((b'[', rest)) => Ok(JsonArgs { rest, first: true }),
            _ => Err(bad_arguments("JSON arguments are an array: `[1, 2]`".into())),
        }
    }

    fn next<T: DeserializeOwned>(&mut self) -> Result<T, DispatchError> {
        let mut rest = skip_json_space(self.rest);
        if rest.first() == Some(&b']') {
            return Err(bad_arguments("missing argument".into()));
        }
        if !self.first {
            match rest.split_first() {
                Some((b',', after)) => rest = after,
                _ => return Err(bad_arguments("expected `,` between the arguments".into())),
            }
        }
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
        match values.next() {
            Some(Ok(value)) => {
                self.rest = &rest[values.byte_offset()..];
                self.first = false;
                Ok(value)
            }
            Some(Err(err)) => Err(bad_arguments(err.to_string())),
            None => Err(bad_arguments("missing argument".into())),
        }
    }

    /// Whether the array ends here, with nothing after it.
    fn finish(&self) -> Result<(), DispatchError> {
        match skip_json_space(self.rest).split_first() {
            Some((b']', after)) if skip_json_space(after).is_empty() => Ok(()),
            _ => Err(bad_arguments("unexpected trailing items".into())),
        }
    }
}

fn skip_json_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

impl<'a> ArgsDecoder<'a> {
    #[doc(hidden)]
    pub fn new(format: Format, bytes: &'a [u8]) -> Result<Self, DispatchError> {
        let inner = match format {
            Format::Postcard => ArgsSource::Postcard(bytes),
            Format::Json => ArgsSource::Json(JsonArgs::new(bytes)?),
        };
        Ok(ArgsDecoder { inner })
    }

    /// The next argument.
    #[doc(hidden)]
    pub fn arg<T: DeserializeOwned>(&mut self) -> Result<T, DispatchError> {
        match &mut self.inner {
            ArgsSource::Postcard(rest) => {
                let (value, tail) = bounded::take_from_bytes(rest).map_err(|e| bad_arguments(e.to_string()))?;
                *rest = tail;
                Ok(value)
            }
            ArgsSource::Json(args) => args.next(),
        }
    }

    /// Checks that nothing is left over: trailing bytes mean the caller and
    /// the service disagree about the arguments.
    #[doc(hidden)]
    pub fn finish(self) -> Result<(), DispatchError> {
        match self.inner {
            ArgsSource::Postcard([]) => Ok(()),
            ArgsSource::Postcard(rest) => Err(bad_arguments(format!("{} unexpected trailing bytes", rest.len()))),
            ArgsSource::Json(args) => args.finish(),
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
    let mut buf = crate::wire::reply_buffers::take();
    let result = match format {
        Format::Postcard => postcard::to_extend(reply, buf).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_writer(&mut buf, reply)
            .map(|()| buf)
            .map_err(|e| e.to_string()),
    };
    result.map_err(|why| DispatchError(DispatchErrorKind::BadReply(why)))
}

/// Encoded arguments: most calls' fit inline, without an allocation.
pub(crate) type EncodedArgs = smallvec::SmallVec<[u8; 64]>;

/// Encodes a call's arguments one by one, the mirror of [`ArgsDecoder`].
#[doc(hidden)]
pub struct ArgsEncoder {
    bytes: EncodedArgs,
}

impl ArgsEncoder {
    pub(crate) fn new() -> Self {
        ArgsEncoder {
            bytes: EncodedArgs::new(),
        }
    }

    /// Appends one argument.
    #[doc(hidden)]
    pub fn arg<T: Serialize>(&mut self, value: &T) -> Result<(), postcard::Error> {
        postcard::serialize_with_flavor(value, ArgsFlavor(&mut self.bytes))
    }

    pub(crate) fn into_bytes(self) -> EncodedArgs {
        self.bytes
    }
}

/// Where postcard writes the arguments (its `to_extend` pushes them a byte
/// at a time).
struct ArgsFlavor<'a>(&'a mut EncodedArgs);

impl postcard::ser_flavors::Flavor for ArgsFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Mostly a varint or a short string: `SmallVec::extend_from_slice`
        // is an insert at the end, whose general path costs more than
        // pushing a few bytes.
        if data.len() <= 16 {
            data.iter().for_each(|&byte| self.0.push(byte));
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes a reply. Generated code names the type, spanned on the user's
/// return type.
#[doc(hidden)]
pub fn decode_reply<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    bounded::from_bytes(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: DeserializeOwned>(body: &str, count: usize) -> Result<Vec<T>, String> {
        let mut decoder = ArgsDecoder::new(Format::Json, body.as_bytes()).map_err(|e| e.to_string())?;
        let values = (0..count).map(|_| decoder.arg::<T>()).collect::<Result<Vec<_>, _>>();
        let values = values.map_err(|e| e.to_string())?;
        decoder.finish().map_err(|e| e.to_string())?;
        Ok(values)
    }

    #[test]
    fn json_arguments_are_read_one_by_one_into_their_types() {
        assert_eq!(json::<i64>(" [ 40 ,\n2 ] ", 2).unwrap(), [40, 2]);
        assert_eq!(json::<String>(r#"["a,]", "b"]"#, 2).unwrap(), ["a,]", "b"]);
        assert_eq!(json::<Vec<u8>>("[[1,2],[]]", 2).unwrap(), [vec![1, 2], vec![]]);
        assert_eq!(json::<i64>("[]", 0).unwrap(), Vec::<i64>::new());
        for (body, count, error) in [
            ("[1]", 2, "missing argument"),
            ("[1, 2]", 1, "trailing"),
            ("[1 2]", 2, "expected `,`"),
            ("[1, 2] x", 2, "trailing"),
            ("{\"a\": 1}", 1, "an array"),
            ("[\"x\"]", 1, "invalid type"),
            ("[1,", 1, "trailing"),
            ("", 0, "an array"),
        ] {
            let err = json::<i64>(body, count).unwrap_err();
            assert!(err.contains(error), "{body:?}: {err}");
        }
    }
}
