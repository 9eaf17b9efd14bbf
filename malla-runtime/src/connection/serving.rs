//! What a connection runs for its peer, through the traits it is given: the
//! node's services as a peer may call them. The connection never sees the
//! registry.

use std::sync::Arc;

use crate::NodeId;
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
    /// The call's metadata, encoded; empty: none.
    pub(crate) metadata: &'a [u8],
}

/// Who sent a request: the peer its connection's handshake proved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) node: &'a NodeId,
    pub(crate) hidden: bool,
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
    /// Starts the method a request from `caller` names, or says which
    /// status answers it instead.
    fn start(&self, caller: Caller<'_>, request: Request<'_>) -> Result<Invocation, Status>;

    /// A request was refused as `Overloaded` before `start`: for the
    /// service's tallies.
    fn overloaded(&self);
}
