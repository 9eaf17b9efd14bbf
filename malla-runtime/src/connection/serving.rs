//! What a connection runs for its peer, through the traits it is given: the
//! node's services as a peer may call them. The connection never sees the
//! registry.

use std::sync::Arc;

use crate::invoke::Invocation;
use crate::telemetry::TraceContext;
use crate::wire::{Format, Status};

/// What a request asks for: a method of a service, with its arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: u32,
    /// The caller's idea of the method's signature; 0 skips the check.
    pub(crate) signature: u64,
    /// Encoding of the arguments and of the reply.
    pub(crate) format: Format,
    /// The encoded arguments.
    pub(crate) body: &'a [u8],
    /// The caller's trace context, if it has one.
    pub(crate) trace: Option<TraceContext>,
}

/// What a connection may run for its peer: the node's services, as a peer
/// may call them.
pub(crate) trait Services: Send + Sync + 'static {
    /// The service named `name`, if a peer may call it, or the status that
    /// answers its requests instead.
    ///
    /// A connection keeps what this returns for the next requests naming the
    /// same service (see `known`): what it returns must stay right as long
    /// as the node runs.
    fn find(&self, name: &str) -> Result<Arc<dyn ServedToPeers>, Status>;
}

/// A service a peer may call.
pub(crate) trait ServedToPeers: Send + Sync + 'static {
    /// Starts the method a request names, or says which status answers it
    /// instead.
    fn start(&self, request: Request<'_>) -> Result<Invocation, Status>;

    /// A request was refused as `Overloaded` before `start`: for the
    /// service's tallies.
    fn overloaded(&self);
}
