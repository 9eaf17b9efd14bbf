//! Calls by name as a `tower::Service` (feature `tower`), so layers written
//! for tower — timeouts, concurrency and rate limits, load shedding,
//! retries, a tonic service's own middleware — wrap malla calls.
//!
//! Typed clients do not go through tower: their layers are
//! [`Interceptor`](crate::Interceptor)s, which cost nothing when none is
//! installed. This adapter is for code that wants one tower stack in front
//! of every call it makes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Node;
use super::api::{DECODE, ENCODE};
use crate::wire::Format;
use crate::{CallOptions, Error};

/// A node's calls by name as a [`tower_service::Service`]: always ready,
/// each request a call routed and failed over like a generated client's
/// (the node's interceptors included).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), malla_runtime::Error> {
/// use malla_runtime::{CallService, NamedCall, Node};
/// use tower_service::Service;
///
/// let node = Node::builder("n1").start().await?;
/// let mut calls = CallService::new(&node);
/// // Wrap it: `tower::ServiceBuilder::new().timeout(..).service(calls)`.
/// let call = NamedCall::new("Calculator", "add", &(1i64, 2i64))?;
/// let reply = calls.call(call).await;
/// assert!(matches!(reply, Err(malla_runtime::Error::ServiceNotAvailable { .. })));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CallService {
    node: Node,
}

impl CallService {
    /// Calls through `node`.
    pub fn new(node: &Node) -> Self {
        CallService { node: node.clone() }
    }
}

impl std::fmt::Debug for CallService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallService").field("node", self.node.id()).finish()
    }
}

/// A call by name: the service's wire name, the method, its arguments
/// encoded (a tuple, one element per argument, as [`Node::remote`] takes
/// them) and its options.
#[derive(Debug, Clone)]
pub struct NamedCall {
    /// The service's wire name.
    pub service: String,
    /// The method's name.
    pub method: String,
    /// The arguments, postcard-encoded.
    pub args: Vec<u8>,
    /// The call's options.
    pub options: CallOptions,
}

impl NamedCall {
    /// A call of `service.method` with `args`, with default options.
    pub fn new<A: Serialize + ?Sized>(service: &str, method: &str, args: &A) -> Result<Self, Error> {
        let args = postcard::to_allocvec(args).map_err(|e| Error::codec(ENCODE, service, method, e))?;
        Ok(NamedCall {
            service: service.to_owned(),
            method: method.to_owned(),
            args,
            options: CallOptions::default(),
        })
    }

    /// The same call with these options.
    pub fn with_options(self, options: CallOptions) -> Self {
        NamedCall { options, ..self }
    }

    /// Decodes a reply to this call.
    pub fn decode<R: DeserializeOwned>(&self, reply: &[u8]) -> Result<R, Error> {
        crate::wire::bounded::from_bytes(reply).map_err(|e| Error::codec(DECODE, &self.service, &self.method, e))
    }
}

impl tower_service::Service<NamedCall> for CallService {
    /// The reply, postcard-encoded ([`NamedCall::decode`]).
    type Response = Vec<u8>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Vec<u8>, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // A node takes calls at any time; its limits answer per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: NamedCall) -> Self::Future {
        let node = self.node.clone();
        Box::pin(async move {
            let NamedCall {
                service,
                method,
                args,
                options,
            } = call;
            node.call_encoded(&service, &method, args, options, Format::Postcard)
                .await
        })
    }
}
