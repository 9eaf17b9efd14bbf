//! The caller side: the handle generated clients wrap, and the call path that
//! routes a call to the local instance or a remote node and fails over.
//!
//! | file | what it owns |
//! |---|---|
//! | `call` | one call: its deadline, its attempts in turn, its errors |
//! | `attempt` | one attempt, local or remote: the seam every attempt goes through |
//! | `intercepted` | a call and its attempts through the client interceptors |
//! | `failover` | the rule: targets in order, when to move on, which error wins |
//! | `remote` | the seam to the network: one request to one node |
//! | `args` | a call's arguments: by value to a direct call, or encoded once |
//! | `dynamic` | calls by name, with encoded arguments |
//! | `deadline` | deadlines that cost nothing when the work is done at once |
//! | `boxed` | the rare branches' futures, boxed out of line |

mod args;
mod attempt;
mod boxed;
mod call;
mod deadline;
mod dynamic;
mod failover;
mod intercepted;
mod remote;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use self::boxed::boxed;
use crate::net::Network;
use crate::registry::ServiceSlot;
use crate::service::{ArgsEncoder, LocalFuture};
use crate::telemetry::metrics::ClientMethod;
use crate::wire::bounded::DecodeError;
use crate::{CallOptions, Error, Interceptor, Metadata, NodeId, ServiceManifest};

pub(crate) use dynamic::call_encoded;
pub(crate) use failover::Filter;

/// What a generated `…Client` holds: the network it calls through, the
/// service's routing slot, its manifest and the call options. Cloning it is
/// one reference-count increment (two with options), so a client may be
/// cloned per task or per call.
#[doc(hidden)]
#[derive(Clone)]
pub struct ClientCore {
    service: Arc<ServiceClient>,
    options: Option<Arc<CallOptions>>,
    /// The node's interceptors and this client's, outermost first.
    layers: Layers,
}

/// Client interceptors, outermost first.
pub(crate) type Layers = Arc<[Arc<dyn Interceptor>]>;

/// Where a client bound to a global name finds the node that holds it.
pub(crate) trait NameResolver: Send + Sync + 'static {
    /// The name.
    fn name(&self) -> &str;

    /// The node holding the name, or `None`: as last found, or read from
    /// the group again when `fresh` or nothing was found yet.
    fn holder(&self, fresh: bool) -> Pin<Box<dyn Future<Output = Result<Option<NodeId>, Error>> + Send + '_>>;
}

/// What every clone of a client shares, with or without options.
struct ServiceClient {
    network: Arc<Network>,
    /// The node the client was made from: a client keeps it running, as a
    /// `Node` handle would.
    _node: Arc<dyn Any + Send + Sync>,
    slot: Arc<ServiceSlot>,
    manifest: &'static ServiceManifest,
    /// Metric handles of each method, in manifest order.
    metrics: Arc<[ClientMethod]>,
    /// The global name calls go to, for a client bound to one.
    bound: Option<Arc<dyn NameResolver>>,
}

static NO_METADATA: Metadata = Metadata::new();

static DEFAULT_OPTIONS: CallOptions = CallOptions {
    timeout: None,
    sna_retries: 0,
    retry_interval: None,
    nodes: None,
    vsn: None,
    balance: crate::Balance::LocalFirst,
    key: None,
};

impl ClientCore {
    /// A client of the service `slot` routes, calling through `network`,
    /// keeping `node` alive.
    pub(crate) fn from_parts(
        network: Arc<Network>,
        node: Arc<dyn Any + Send + Sync>,
        slot: Arc<ServiceSlot>,
        manifest: &'static ServiceManifest,
        bound: Option<Arc<dyn NameResolver>>,
        layers: Layers,
    ) -> Self {
        let metrics = slot.client_metrics(manifest, || {
            manifest
                .methods()
                .iter()
                .map(|method| ClientMethod::new(network.me().as_str(), manifest.name(), method.name()))
                .collect()
        });
        ClientCore {
            service: Arc::new(ServiceClient {
                network,
                _node: node,
                slot,
                manifest,
                metrics,
                bound,
            }),
            options: None,
            layers,
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
    pub fn with_interceptor(&self, interceptor: impl Interceptor) -> Self {
        let layers = self.layers.iter().cloned();
        let layers = layers.chain([Arc::new(interceptor) as Arc<dyn Interceptor>]).collect();
        ClientCore { layers, ..self.clone() }
    }

    #[doc(hidden)]
    pub fn on_node(&self, node: NodeId) -> Self {
        let options = self.options().clone().nodes([node]);
        self.with_options(options)
    }

    /// The client's interceptors, if it has any.
    fn layered(&self) -> Option<call::Layered<'_>> {
        (!self.layers.is_empty()).then(|| call::Layered {
            layers: &self.layers,
            metadata: &NO_METADATA,
            encoded: &[],
        })
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
    D: FnOnce(&[u8]) -> Result<R, DecodeError> + Send,
{
    let options = core.options();
    let service = &*core.service;
    if let Some(bound) = &service.bound {
        let args = typed_args(args, local, encode, decode);
        return boxed(move || call_named(core, &**bound, method, args)).await;
    }
    if !core.layers.is_empty() {
        // They see the call before the stub would refuse it (they may
        // answer it themselves). `run` boxes what only layers need.
        let layered = core.layered();
        let args = typed_args(args, local, encode, decode);
        return core.call_of(method, options, layered.as_ref()).run(args).await;
    }
    // The stub: nothing known, nothing to wait for. No allocation, no I/O.
    if options.nodes.is_none() && options.sna_retries == 0 && !service.slot.is_available() {
        service.metrics[method].not_available();
        service.slot.counters.unavailable.bump();
        return Err(Error::ServiceNotAvailable {
            service: service.manifest.name_cow(),
            requirement: options.vsn.as_ref().map(|r| r.text().to_owned()),
        });
    }
    core.call_of(method, options, None)
        .run(typed_args(args, local, encode, decode))
        .await
}

impl ClientCore {
    /// A call of method number `method` with `options`.
    #[inline]
    fn call_of<'a>(
        &'a self,
        method: usize,
        options: &'a CallOptions,
        layered: Option<&'a call::Layered<'a>>,
    ) -> call::Call<'a, Arc<Network>> {
        let service = &*self.service;
        call::Call {
            remote: &service.network,
            slot: &service.slot,
            service: service.manifest.name_cow(),
            method: &service.manifest.methods()[method],
            options,
            format: crate::wire::Format::Postcard,
            metrics: &service.metrics[method],
            layered,
        }
    }
}

fn typed_args<A, L, F, E, D>(args: A, local: F, encode: E, decode: D) -> args::TypedArgs<A, L, F, E, D> {
    args::TypedArgs {
        value: Some(args),
        direct: Some(local),
        encode: Some(encode),
        decode: Some(decode),
        encoded: None,
        handle: std::marker::PhantomData::<fn(&L)>,
    }
}

/// A call of a client bound to a global name: to the node that holds the
/// name; if no node ran it there (the node is gone, or no longer serves
/// it), the name is looked up again and, if it moved, the call goes to its
/// new holder. A call that may have run is not sent again.
async fn call_named<R: Send + 'static, A: args::CallArgs<R>>(
    core: &ClientCore,
    bound: &dyn NameResolver,
    method: usize,
    mut args: A,
) -> Result<R, Error> {
    let service = &*core.service;
    let not_registered = || Error::ServiceNotAvailable {
        service: format!(
            "{} (the name `{}` is not registered)",
            service.manifest.name(),
            bound.name()
        )
        .into(),
        requirement: None,
    };
    let mut holder = bound.holder(false).await?.ok_or_else(not_registered)?;
    let mut fresh = false;
    let layered = core.layered();
    loop {
        let options = core.options().clone().nodes([holder.clone()]);
        let call = core.call_of(method, &options, layered.as_ref());
        let (result, ran_nowhere) = call.run_again(&mut args).await;
        if result.is_ok() || !ran_nowhere || fresh {
            return result;
        }
        fresh = true;
        match bound.holder(true).await? {
            Some(moved) if moved != holder => holder = moved,
            _ => return result,
        }
    }
}
