//! The caller side: the handle generated clients wrap, and the call path that
//! routes a call to the local instance or a remote node and fails over.

mod args;
mod call;
mod deadline;
mod dynamic;

use std::any::Any;
use std::sync::Arc;

use crate::node::Node;
use crate::registry::ServiceSlot;
use crate::service::{ArgsEncoder, LocalFuture};
use crate::{CallOptions, Error, NodeId, ServiceManifest};

pub(crate) use call::{Call, panic_message};
pub(crate) use deadline::with_deadline;

/// What a generated `…Client` holds: the node, the service's routing slot,
/// its manifest and the call options. Cloning it is a few reference-count
/// increments.
#[doc(hidden)]
#[derive(Clone)]
pub struct ClientCore {
    node: Node,
    slot: Arc<ServiceSlot>,
    manifest: &'static ServiceManifest,
    options: Option<Arc<CallOptions>>,
}

static DEFAULT_OPTIONS: CallOptions = CallOptions {
    timeout: None,
    sna_retries: 0,
    retry_interval: None,
    nodes: None,
};

impl ClientCore {
    #[doc(hidden)]
    pub fn new(node: &Node, manifest: &'static ServiceManifest) -> Self {
        ClientCore {
            node: node.clone(),
            slot: node.inner.registry.slot(manifest.name()),
            manifest,
            options: None,
        }
    }

    #[doc(hidden)]
    pub fn with_options(&self, options: CallOptions) -> Self {
        ClientCore {
            options: Some(Arc::new(options)),
            ..self.clone()
        }
    }

    #[doc(hidden)]
    pub fn on_node(&self, node: NodeId) -> Self {
        let options = self.options().clone().nodes([node]);
        self.with_options(options)
    }

    fn options(&self) -> &CallOptions {
        self.options.as_deref().unwrap_or(&DEFAULT_OPTIONS)
    }
}

/// Runs method number `method` of the client's service. `local` calls the
/// implementation directly when this node serves it and its handle has type
/// `L`; otherwise `encode` encodes the arguments once, and `decode` reads the
/// reply. Generated code passes `encode` and `decode` as functions spanned on
/// the user's types, so serde errors point there.
#[doc(hidden)]
pub async fn call<A, R, L, F, E, D>(
    core: &ClientCore,
    method: usize,
    args: A,
    local: F,
    encode: E,
    decode: D,
) -> Result<R, Error>
where
    A: Send,
    R: Send + 'static,
    L: Any + Send + Sync,
    F: FnOnce(&L, A) -> LocalFuture<R> + Send,
    E: FnOnce(&A, &mut ArgsEncoder) -> Result<(), postcard::Error> + Send,
    D: FnOnce(&[u8]) -> Result<R, postcard::Error> + Send,
{
    let options = core.options();
    // The stub: nothing known, nothing to wait for. No allocation, no I/O.
    if options.nodes.is_none() && options.sna_retries == 0 && !core.slot.is_available() {
        return Err(Error::ServiceNotAvailable {
            service: core.manifest.name_cow(),
        });
    }
    let call = Call {
        node: &core.node,
        slot: &core.slot,
        service: core.manifest.name_cow(),
        method: &core.manifest.methods()[method],
        options,
        format: crate::wire::WireFormat::Postcard,
    };
    call.run(args::TypedArgs {
        value: Some(args),
        direct: Some(local),
        encode: Some(encode),
        decode: Some(decode),
        encoded: None,
        handle: std::marker::PhantomData::<fn(&L)>,
    })
    .await
}
