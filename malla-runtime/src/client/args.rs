//! A call's arguments and the generated functions around them, behind one
//! small trait so the call path is generic over the reply type only.

use std::any::Any;
use std::marker::PhantomData;

use crate::service::{ArgsEncoder, EncodedArgs, LocalFuture, LocalHandle};
use crate::wire::bounded::DecodeError;

/// What the call path may do with a call's arguments: hand them by value to
/// a direct call, or encode them (once) for the wire; and decode the reply.
pub(crate) trait CallArgs<R>: Send {
    /// Starts a direct call if `handle` is the implementation's handle and the
    /// arguments were not encoded yet.
    fn call_direct(&mut self, handle: &LocalHandle) -> Option<LocalFuture<R>>;

    /// The encoded arguments, encoding them the first time.
    fn encoded(&mut self) -> Result<&[u8], String>;

    /// Decodes a reply.
    fn decode(&mut self, bytes: &[u8]) -> Result<R, String>;
}

/// The arguments of a generated client method and its three functions.
pub(crate) struct TypedArgs<A, L, F, E, D> {
    pub(crate) value: Option<A>,
    pub(crate) direct: Option<F>,
    pub(crate) encode: Option<E>,
    pub(crate) decode: Option<D>,
    pub(crate) encoded: Option<EncodedArgs>,
    pub(crate) handle: PhantomData<fn(&L)>,
}

impl<A, R, L, F, E, D> CallArgs<R> for TypedArgs<A, L, F, E, D>
where
    A: Send,
    L: Any + Send + Sync,
    F: FnOnce(&L, A) -> LocalFuture<R> + Send,
    E: FnOnce(&A, &mut ArgsEncoder) -> Result<(), postcard::Error> + Send,
    D: FnOnce(&[u8]) -> Result<R, DecodeError> + Send,
{
    fn call_direct(&mut self, handle: &LocalHandle) -> Option<LocalFuture<R>> {
        let handle = handle.downcast_ref::<L>()?;
        let value = self.value.take()?;
        let direct = self.direct.take()?;
        Some(direct(handle, value))
    }

    fn encoded(&mut self) -> Result<&[u8], String> {
        if self.encoded.is_none() {
            let value = self.value.take().ok_or("the arguments were moved into a direct call")?;
            let encode = self.encode.take().ok_or("the arguments were already encoded")?;
            let mut encoder = ArgsEncoder::new();
            encode(&value, &mut encoder).map_err(|e| e.to_string())?;
            self.encoded = Some(encoder.into_bytes());
        }
        Ok(self.encoded.as_deref().unwrap_or_default())
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<R, String> {
        let decode = self.decode.take().ok_or("a reply was already decoded")?;
        decode(bytes).map_err(|e| e.to_string())
    }
}
