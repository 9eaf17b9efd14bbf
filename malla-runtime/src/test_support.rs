//! Helpers the unit tests of several modules share; what the integration
//! tests share too (waiting, partitions, processes) is in `malla-test-support`.

use std::sync::OnceLock;

use crate::manifest::method_id;
use crate::service::{ArgsDecoder, DispatchError, DispatchFuture, Format, encode_reply};
use crate::{MethodManifest, Service, ServiceManifest};

pub(crate) use crate::handshake::plain_identity as identity;

/// `Adder`, a hand-written service: `add(i64, i64) -> i64`, `explode()`
/// (panics while dispatching) and `explode_later()` (panics when polled).
pub(crate) struct Adder;

/// The signature `Adder.add` declares.
pub(crate) const ADD_SIGNATURE: u64 = 0xadd;

impl Adder {
    pub(crate) fn manifest(global: bool) -> &'static ServiceManifest {
        static GLOBAL: OnceLock<ServiceManifest> = OnceLock::new();
        static LOCAL: OnceLock<ServiceManifest> = OnceLock::new();
        let methods = || -> &'static [MethodManifest] {
            let method = |name: &'static str, signature| {
                MethodManifest::__new(name, method_id(name), &[], "", signature, false, None)
            };
            Box::leak(Box::new([
                method("add", ADD_SIGNATURE),
                method("explode", 2),
                method("explode_later", 3),
            ]))
        };
        let cell = if global { &GLOBAL } else { &LOCAL };
        cell.get_or_init(|| ServiceManifest::__new("Adder", "1.2.0", global, methods()))
    }
}

/// `Adder` as published (`global`) or served to its own node only.
pub(crate) struct AdderService {
    pub(crate) global: bool,
}

impl Service for AdderService {
    fn manifest(&self) -> &'static ServiceManifest {
        Adder::manifest(self.global)
    }

    fn dispatch(&self, method: usize, format: Format, args: &[u8]) -> Result<DispatchFuture, DispatchError> {
        let mut decoder = ArgsDecoder::new(format, args)?;
        match method {
            0 => {
                let (a, b): (i64, i64) = (decoder.arg()?, decoder.arg()?);
                decoder.finish()?;
                Ok(Box::pin(async move { encode_reply(format, &(a + b)) }))
            }
            1 => panic!("exploded while dispatching"),
            2 => Ok(Box::pin(async move { panic!("exploded while running") })),
            other => Err(DispatchError::unknown_method(other)),
        }
    }
}

/// `(a, b)` as `Adder.add` takes them.
pub(crate) fn add_args(a: i64, b: i64) -> Vec<u8> {
    postcard::to_allocvec(&(a, b)).expect("encodes")
}
