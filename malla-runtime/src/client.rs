//! The caller side: the handle generated clients wrap, and the call path that
//! routes a call to the local instance or a remote node and fails over.

mod call;
mod deadline;

use std::any::Any;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::node::Node;
use crate::registry::ServiceSlot;
use crate::service::LocalFuture;
use crate::{CallOptions, Error, NodeId, ServiceManifest};

pub(crate) use call::Call;
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
/// `L`; otherwise the arguments are encoded once and sent.
#[doc(hidden)]
pub async fn call<A, R, L, F>(core: &ClientCore, method: usize, args: A, local: F) -> Result<R, Error>
where
    A: Serialize + Send,
    R: DeserializeOwned + Send + 'static,
    L: Any + Send + Sync,
    F: FnOnce(&L, A) -> LocalFuture<R> + Send,
{
    let options = core.options();
    // The stub: nothing known, nothing to wait for. No allocation, no I/O.
    if options.nodes.is_none() && options.sna_retries == 0 && core.slot.route().is_unavailable() {
        return Err(Error::ServiceNotAvailable {
            service: core.manifest.name_cow(),
        });
    }
    Call {
        node: &core.node,
        slot: &core.slot,
        service: core.manifest.name_cow(),
        method: &core.manifest.methods()[method],
        options,
    }
    .run(args, local)
    .await
}
