//! Calls by service and method name, for code that has no generated client
//! (Malla's `Malla.remote/4`, and `malla call` with JSON).

use std::borrow::Cow;
use std::sync::Arc;

use super::args::CallArgs;
use super::call::{Call, Layered};
use super::remote::Remote;
use crate::registry::ServiceSlot;
use crate::service::{LocalFuture, LocalHandle};
use crate::telemetry::metrics::ClientMethod;
use crate::wire::Format;
use crate::{CallOptions, Error, Interceptor, Metadata, MethodManifest, declared_services};

/// Calls `service.method` with arguments encoded in `format`; returns the
/// reply in the same format. Routed and failed over like a generated
/// client's call.
pub(crate) async fn call_encoded<N: Remote>(
    remote: &N,
    slot: &ServiceSlot,
    (service, method): (&str, &str),
    (body, format): (Vec<u8>, Format),
    options: &CallOptions,
    layers: &[Arc<dyn Interceptor>],
) -> Result<Vec<u8>, Error> {
    let manifest = declared_method(service, method).unwrap_or_else(|| MethodManifest::unchecked(method));
    // Handles made per call: calls by name are for tools, not hot paths.
    let metrics = ClientMethod::new(remote.me().as_str(), service, method);
    let no_metadata = Metadata::new();
    let layered = (!layers.is_empty()).then_some(Layered {
        layers,
        metadata: &no_metadata,
        encoded: &[],
    });
    Call {
        remote,
        slot,
        service: Cow::Owned(service.to_owned()),
        method: &manifest,
        options,
        format,
        metrics: &metrics,
        layered: layered.as_ref(),
    }
    .run(Encoded(body))
    .await
}

/// The method as this binary declares it, if every declaration of the
/// service that has the method agrees on its signature (a binary may hold
/// stubs of several versions of a service).
fn declared_method(service: &str, method: &str) -> Option<MethodManifest> {
    let mut found = declared_services()
        .filter(|m| m.name() == service)
        .filter_map(|m| m.method(method));
    let first = found.next()?;
    found
        .all(|other| other.signature() == first.signature())
        .then(|| first.clone())
}

/// Arguments already encoded; the reply is kept encoded.
struct Encoded(Vec<u8>);

impl CallArgs<Vec<u8>> for Encoded {
    fn call_direct(&mut self, _handle: &LocalHandle) -> Option<LocalFuture<Vec<u8>>> {
        None
    }

    fn encoded(&mut self) -> Result<&[u8], String> {
        Ok(&self.0)
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}
