//! Calls by service and method name, for code that has no generated client
//! (Malla's `Malla.remote/4`).

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::args::CallArgs;
use super::call::Call;
use crate::service::LocalHandle;
use crate::wire::WireFormat;
use crate::{CallOptions, Error, MethodManifest, Node, declared_services};

impl Node {
    /// Calls `service.method` with `args` (a tuple of the arguments, as the
    /// service declares them), routed and failed over like a generated
    /// client's call.
    ///
    /// If the service is declared in this binary, its manifest supplies the
    /// method's signature hash (checked by the serving node), idempotence and
    /// default timeout; otherwise (or if several declarations disagree) the
    /// call is unchecked: arguments of the wrong types fail to decode on the
    /// serving node.
    ///
    /// ```no_run
    /// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
    /// let sum: i64 = node.remote("Calculator", "add", &(1i64, 2i64), Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn remote<A, R>(&self, service: &str, method: &str, args: &A, options: CallOptions) -> Result<R, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let body = postcard::to_allocvec(args).map_err(|e| Error::Codec {
            what: format!("encode the arguments of `{service}.{method}`"),
            message: e.to_string(),
        })?;
        let bytes: Vec<u8> = self
            .call_encoded(service, method, body, options, WireFormat::Postcard)
            .await?;
        postcard::from_bytes(&bytes).map_err(|e| Error::Codec {
            what: format!("decode the reply of `{service}.{method}`"),
            message: e.to_string(),
        })
    }

    /// Calls `service.method` with JSON arguments (an array, one element per
    /// argument) and returns the JSON reply: for tools such as `malla call`,
    /// which have no Rust types for the service. The serving node decodes the
    /// arguments with the method's own types and reports a mismatch as
    /// [`Error::Remote`].
    pub async fn call_json(
        &self,
        service: &str,
        method: &str,
        args: &serde_json::Value,
        options: CallOptions,
    ) -> Result<serde_json::Value, Error> {
        if !args.is_array() {
            return Err(Error::Codec {
                what: format!("encode the arguments of `{service}.{method}`"),
                message: "JSON arguments are an array, one element per argument: `[1, 2]`".into(),
            });
        }
        let body = serde_json::to_vec(args).map_err(|e| Error::Codec {
            what: format!("encode the arguments of `{service}.{method}`"),
            message: e.to_string(),
        })?;
        let bytes = self
            .call_encoded(service, method, body, options, WireFormat::Json)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Codec {
            what: format!("decode the reply of `{service}.{method}`"),
            message: e.to_string(),
        })
    }

    /// A dynamic call with pre-encoded arguments; returns the encoded reply.
    pub(crate) async fn call_encoded(
        &self,
        service: &str,
        method: &str,
        body: Vec<u8>,
        options: CallOptions,
        format: WireFormat,
    ) -> Result<Vec<u8>, Error> {
        let manifest = declared_method(service, method).unwrap_or_else(|| MethodManifest::unchecked(method));
        let slot = self.inner.registry.slot(service);
        Call {
            node: self,
            slot: &slot,
            service: Cow::Owned(service.to_owned()),
            method: &manifest,
            options: &options,
            format,
        }
        .run(Encoded(body))
        .await
    }
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
    fn call_direct(&mut self, _handle: &LocalHandle) -> Option<crate::service::LocalFuture<Vec<u8>>> {
        None
    }

    fn encoded(&mut self) -> Result<&[u8], String> {
        Ok(&self.0)
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}
