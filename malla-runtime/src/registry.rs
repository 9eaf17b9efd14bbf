//! Where a node keeps its services: what it serves itself, and for every
//! service any client has asked about, a routing snapshot that the call path
//! reads without locking.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use crate::connection::{Caller, Request, ServedToPeers, Services};
use crate::intercept::served::{self, Rejection, ServeInterceptor, ServedCall};
use crate::invoke::{Invocation, InvokeError, invoke};
use crate::service::{LocalHandle, Service};
use crate::singleton::{Singleton, SingletonState};
use crate::sync::lock;
use crate::telemetry::counters::CallCounters;
use crate::telemetry::metrics::ClientMethod;
use crate::telemetry::{ServiceTelemetry, Serving, TraceContext};
use crate::wire::{Format, Status};
use crate::{AdminStatus, Metadata, NodeId, ServiceManifest};

/// A service served by this node.
pub(crate) struct LocalService {
    pub(crate) service: Box<dyn Service>,
    pub(crate) manifest: &'static ServiceManifest,
    pub(crate) typed: Option<LocalHandle>,
    pub(crate) metadata: BTreeMap<String, String>,
    method_index: FxHashMap<u32, usize>,
    admin: AtomicU8,
    /// The manifest's version, if it is semver.
    pub(crate) vsn: Option<semver::Version>,
    pub(crate) telemetry: Arc<ServiceTelemetry>,
    /// Server interceptors, the node's then the service's: every request
    /// passes them, from a peer or from this node.
    interceptors: Arc<[Arc<dyn ServeInterceptor>]>,
    /// Set for a singleton: only its active instance takes requests.
    pub(crate) singleton: Option<Arc<SingletonState>>,
}

/// Why a served service does not take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Paused or inactive (or, for another node, not global).
    NotAvailable,
    /// No method has this id.
    UnknownMethod,
    /// The method exists with another signature.
    SignatureMismatch,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::NotAvailable => "not_available",
            Refusal::UnknownMethod => "unknown_method",
            Refusal::SignatureMismatch => "signature_mismatch",
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        match refusal {
            Refusal::NotAvailable => Status::NotAvailable,
            Refusal::UnknownMethod => Status::UnknownMethod,
            Refusal::SignatureMismatch => Status::SignatureMismatch,
        }
    }
}

impl LocalService {
    /// `service`, served on `node`.
    pub(crate) fn new(
        node: &NodeId,
        service: Box<dyn Service>,
        metadata: BTreeMap<String, String>,
        admin: AdminStatus,
    ) -> Self {
        let manifest = service.manifest();
        let typed = service.local_handle();
        let method_index = manifest
            .methods()
            .iter()
            .enumerate()
            .map(|(index, m)| (m.id(), index))
            .collect();
        LocalService {
            service,
            manifest,
            typed,
            metadata,
            method_index,
            admin: AtomicU8::new(admin.to_u8()),
            vsn: manifest.vsn().parse().ok(),
            telemetry: Arc::new(ServiceTelemetry::new(node.as_str(), manifest)),
            interceptors: Arc::new([]),
            singleton: None,
        }
    }

    /// The same service, served as a singleton: it stands by until its
    /// node makes it the active instance.
    pub(crate) fn into_singleton(mut self, config: Singleton) -> Self {
        self.singleton = Some(Arc::new(SingletonState::new(self.name(), config)));
        self
    }

    /// The same service, its requests passing `interceptors` first.
    pub(crate) fn intercepted(mut self, interceptors: Arc<[Arc<dyn ServeInterceptor>]>) -> Self {
        self.interceptors = interceptors;
        self
    }

    /// Whether a request for method number `index` from `caller` passes the
    /// service's interceptors; `metadata` is read only if there are any.
    #[inline]
    pub(crate) fn admit(
        &self,
        caller: Caller<'_>,
        local: bool,
        index: usize,
        metadata: impl FnOnce() -> Metadata,
    ) -> Result<(), Rejection> {
        if self.interceptors.is_empty() {
            return Ok(());
        }
        let metadata = metadata();
        let call = ServedCall {
            caller: caller.node,
            hidden: caller.hidden,
            local,
            service: self.name(),
            method: self.manifest.methods()[index].name(),
            metadata: &metadata,
        };
        served::admit(&self.interceptors, &call).inspect_err(|_| self.telemetry.refused("refused"))
    }

    pub(crate) fn name(&self) -> &str {
        self.manifest.name()
    }

    pub(crate) fn admin_status(&self) -> AdminStatus {
        AdminStatus::from_u8(self.admin.load(Ordering::Acquire))
    }

    pub(crate) fn set_admin_status(&self, status: AdminStatus) -> AdminStatus {
        AdminStatus::from_u8(self.admin.swap(status.to_u8(), Ordering::AcqRel))
    }

    pub(crate) fn is_active(&self) -> bool {
        self.admin_status() == AdminStatus::Active
    }

    /// The index of the method a call names, if this instance takes it now.
    /// A signature of 0 is an unchecked dynamic call.
    #[inline]
    pub(crate) fn accept(&self, id: u32, signature: u64) -> Result<usize, Refusal> {
        self.method_to_run(id, signature)
            .inspect_err(|refusal| self.telemetry.refused(refusal.label()))
    }

    fn method_to_run(&self, id: u32, signature: u64) -> Result<usize, Refusal> {
        if !self.is_active() || self.singleton.as_ref().is_some_and(|s| !s.is_active()) {
            return Err(Refusal::NotAvailable);
        }
        let &index = self.method_index.get(&id).ok_or(Refusal::UnknownMethod)?;
        let declared = self.manifest.methods()[index].signature();
        if signature == 0 || signature == declared {
            Ok(index)
        } else {
            Err(Refusal::SignatureMismatch)
        }
    }

    /// Starts method number `index` on arguments encoded in `format`; its
    /// span is a child of `trace` if the caller sent one.
    pub(crate) fn invoke(
        &self,
        index: usize,
        format: Format,
        body: &[u8],
        trace: Option<TraceContext>,
    ) -> Result<Invocation, InvokeError> {
        let serving = Serving::start(&self.telemetry, index, trace);
        invoke(&*self.service, index, format, body, serving)
    }
}

/// What the call path needs to route one service: the local instance if this
/// node serves it, then the remote instances in `get_nodes` order.
#[derive(Default, Clone)]
pub(crate) struct Route {
    /// Set once, when the node serves the service, and then never replaced
    /// or removed: connections keep it for their peer's requests.
    pub(crate) local: Option<Arc<LocalService>>,
    pub(crate) remote: Arc<[RemoteInstance]>,
}

/// A running instance of a service on another node, as its gossip says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteInstance {
    pub(crate) node: NodeId,
    /// Its version, if it is semver.
    pub(crate) vsn: Option<semver::Version>,
    /// `(method id, signature)`, sorted by id; empty when not published.
    pub(crate) signatures: Arc<[(u32, u64)]>,
}

impl RemoteInstance {
    /// An instance of which nothing but the node is known.
    #[cfg(test)]
    pub(crate) fn bare(node: NodeId) -> Self {
        RemoteInstance {
            node,
            vsn: None,
            signatures: Arc::new([]),
        }
    }

    /// Whether the instance has the method `id` with `signature` (0: not
    /// checked). Unknown signatures pass: the serving node checks anyway.
    pub(crate) fn has_method(&self, id: u32, signature: u64) -> bool {
        if signature == 0 || self.signatures.is_empty() {
            return true;
        }
        self.signatures
            .binary_search_by_key(&id, |(id, _)| *id)
            .is_ok_and(|at| self.signatures[at].1 == signature)
    }
}

impl Route {
    /// True when a call can only answer `ServiceNotAvailable`: the stub case.
    pub(crate) fn is_unavailable(&self) -> bool {
        self.remote.is_empty() && self.local.as_ref().is_none_or(|l| !l.is_active())
    }
}

/// Names of the runtime's own services (`malla.Introspect`) start with
/// this; an application cannot serve one.
pub(crate) const INTERNAL_PREFIX: &str = "malla.";

/// Whether `name` is one of the runtime's own services: served on every
/// node, published nowhere.
pub(crate) fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// A manifest, and the metric handles of its methods in manifest order.
type ClientMetrics = (&'static ServiceManifest, Arc<[ClientMethod]>);

/// The routing snapshot of one service name, shared by every client of it.
pub(crate) struct ServiceSlot {
    route: ArcSwap<Route>,
    // `!route.is_unavailable()`, kept beside the snapshot so the stub path is
    // one atomic load instead of a snapshot guard.
    available: AtomicBool,
    // Serializes writers (serve, discovery, admin status); readers never take it.
    write: Mutex<()>,
    /// The next call's turn, for `Balance::RoundRobin`.
    turn: AtomicUsize,
    /// Metric handles of each manifest this node's clients of the service
    /// were made from (usually one): a client is a cheap handle, and
    /// registering a method's handles allocates its labels.
    client_metrics: Mutex<Vec<ClientMetrics>>,
    /// This node's calls of the service, for `Node::stats`.
    pub(crate) counters: CallCounters,
}

impl ServiceSlot {
    fn new() -> Self {
        ServiceSlot {
            route: ArcSwap::from_pointee(Route::default()),
            available: AtomicBool::new(false),
            write: Mutex::new(()),
            turn: AtomicUsize::new(0),
            client_metrics: Mutex::new(Vec::new()),
            counters: CallCounters::default(),
        }
    }

    /// The metric handles of clients made from `manifest`, registered by
    /// `register` the first time.
    pub(crate) fn client_metrics(
        &self,
        manifest: &'static ServiceManifest,
        register: impl FnOnce() -> Arc<[ClientMethod]>,
    ) -> Arc<[ClientMethod]> {
        let mut known = lock(&self.client_metrics);
        if let Some((_, metrics)) = known.iter().find(|(m, _)| std::ptr::eq(*m, manifest)) {
            return Arc::clone(metrics);
        }
        let metrics = register();
        known.push((manifest, Arc::clone(&metrics)));
        metrics
    }

    /// A new turn, for a call that goes round the instances.
    pub(crate) fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether any instance might take a call. `false` is the stub case.
    pub(crate) fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    /// Recomputes availability after a local instance changed admin status.
    pub(crate) fn refresh(&self) {
        self.update(Route::clone);
    }

    pub(crate) fn route(&self) -> arc_swap::Guard<Arc<Route>> {
        self.route.load()
    }

    #[inline]
    pub(crate) fn route_full(&self) -> Arc<Route> {
        self.route.load_full()
    }

    pub(crate) fn update(&self, change: impl FnOnce(&Route) -> Route) {
        let _guard = lock(&self.write);
        let next = change(&self.route.load());
        self.available.store(!next.is_unavailable(), Ordering::Release);
        self.route.store(Arc::new(next));
    }
}

type Slots = FxHashMap<Arc<str>, Arc<ServiceSlot>>;

/// Every service slot of a node, by wire name.
///
/// Read by every request a peer sends, written when a name is first served
/// or asked about: the map is a snapshot readers load without a lock (a
/// read lock is a write to a cache line every core shares), and a writer
/// copies it.
#[derive(Default)]
pub(crate) struct Registry {
    slots: ArcSwap<Slots>,
    /// Serializes writers.
    write: Mutex<()>,
}

impl Registry {
    /// The slot of `name`, created empty (a stub) the first time.
    pub(crate) fn slot(&self, name: &str) -> Arc<ServiceSlot> {
        if let Some(slot) = self.read().get(name) {
            return Arc::clone(slot);
        }
        let _writer = lock(&self.write);
        let mut slots = Slots::clone(&self.read());
        let slot = Arc::clone(
            slots
                .entry(Arc::from(name))
                .or_insert_with(|| Arc::new(ServiceSlot::new())),
        );
        self.slots.store(Arc::new(slots));
        slot
    }

    /// The service this node serves under `name`, if any.
    pub(crate) fn local(&self, name: &str) -> Option<Arc<LocalService>> {
        self.read().get(name)?.route().local.clone()
    }

    /// Every service this node serves, but the runtime's own.
    pub(crate) fn locals(&self) -> Vec<Arc<LocalService>> {
        self.read()
            .iter()
            .filter(|(name, _)| !is_internal(name))
            .filter_map(|(_, slot)| slot.route().local.clone())
            .collect()
    }

    /// Every slot, by name, sorted: what the node serves or has called.
    pub(crate) fn slots(&self) -> Vec<(Arc<str>, Arc<ServiceSlot>)> {
        let mut slots: Vec<_> = self
            .read()
            .iter()
            .map(|(name, slot)| (Arc::clone(name), Arc::clone(slot)))
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        slots
    }

    fn read(&self) -> arc_swap::Guard<Arc<Slots>> {
        self.slots.load()
    }
}

/// What another node may call: the global services served here.
impl Services for Registry {
    fn find(&self, name: &str) -> Result<Arc<dyn ServedToPeers>, Status> {
        let local = self.local(name).ok_or(Status::NotAvailable)?;
        // Services that are not global are served to their own node only.
        if !local.manifest.is_global() {
            local.telemetry.refused(Refusal::NotAvailable.label());
            return Err(Status::NotAvailable);
        }
        // Connections keep it: a service, once served, is never replaced
        // or removed (`Route::local`), and pausing it is checked per request.
        Ok(local)
    }
}

/// A request from another node takes the same [`invoke`] as local calls.
impl ServedToPeers for LocalService {
    fn start(&self, caller: Caller<'_>, request: Request<'_>) -> Result<Invocation, Status> {
        let index = self.accept(request.method, request.signature)?;
        // The connection checked the metadata's encoding when it read the frame.
        self.admit(caller, false, index, || {
            Metadata::decode(request.metadata).unwrap_or_default()
        })
        .map_err(|rejection| Status::Refused(rejection.into_reason()))?;
        self.invoke(index, request.format, request.body, request.trace)
            .map_err(|err| match err {
                InvokeError::BadRequest(message) => Status::BadRequest(message),
                InvokeError::Failed(message) => Status::Failed(message),
                InvokeError::NotAvailable => Status::NotAvailable,
            })
    }

    fn overloaded(&self) {
        self.telemetry.refused("overloaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::method_id;
    use crate::test_support::{ADD_SIGNATURE, AdderService, add_args};

    fn served(global: bool, admin: AdminStatus) -> Arc<LocalService> {
        let service = Box::new(AdderService { global });
        Arc::new(LocalService::new(&NodeId::from("me"), service, BTreeMap::new(), admin))
    }

    fn serve(registry: &Registry, local: &Arc<LocalService>) {
        registry.slot(local.name()).update(|route| Route {
            local: Some(Arc::clone(local)),
            remote: Arc::clone(&route.remote),
        });
    }

    #[test]
    fn a_name_has_one_slot_shared_by_everyone_who_asks() {
        let registry = Registry::default();
        let first = registry.slot("Adder");
        let second = registry.slot("Adder");
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!first.is_available(), "nothing known yet: the stub case");
        assert_eq!(registry.slots().len(), 1);
    }

    #[test]
    fn availability_follows_the_route() {
        let registry = Registry::default();
        let slot = registry.slot("Adder");
        slot.update(|_| Route {
            local: None,
            remote: Arc::from([RemoteInstance::bare("other".into())]),
        });
        assert!(slot.is_available(), "a remote instance");
        slot.update(|_| Route::default());
        assert!(!slot.is_available());
        let local = served(true, AdminStatus::Paused);
        serve(&registry, &local);
        assert!(!slot.is_available(), "a paused local instance takes nothing");
        local.set_admin_status(AdminStatus::Active);
        assert!(!slot.is_available(), "not until the slot is refreshed");
        slot.refresh();
        assert!(slot.is_available());
    }

    #[test]
    fn a_served_instance_takes_only_the_methods_and_signatures_it_declares() {
        let local = served(true, AdminStatus::Active);
        let add = method_id("add");
        assert_eq!(local.accept(add, ADD_SIGNATURE), Ok(0));
        assert_eq!(local.accept(add, 0), Ok(0), "an unchecked call by name");
        assert_eq!(local.accept(add, 1), Err(Refusal::SignatureMismatch));
        assert_eq!(local.accept(method_id("sub"), 0), Err(Refusal::UnknownMethod));
        local.set_admin_status(AdminStatus::Inactive);
        assert_eq!(local.accept(add, ADD_SIGNATURE), Err(Refusal::NotAvailable));
        assert_eq!(crate::telemetry::counters::read(&local.telemetry.counters.refused), 3);
    }

    #[test]
    fn peers_may_call_global_services_only() {
        let registry = Registry::default();
        assert_eq!(registry.find("Adder").err(), Some(Status::NotAvailable), "not served");
        serve(&registry, &served(false, AdminStatus::Active));
        assert_eq!(registry.find("Adder").err(), Some(Status::NotAvailable), "local only");
        let registry = Registry::default();
        serve(&registry, &served(true, AdminStatus::Active));
        let service = registry.find("Adder").expect("global");
        let request = Request {
            service: "Adder",
            method: method_id("add"),
            signature: ADD_SIGNATURE,
            format: Format::Postcard,
            body: &add_args(2, 3),
            trace: None,
            metadata: &[],
        };
        let caller = Caller {
            node: &NodeId::from("peer"),
            hidden: false,
        };
        assert!(service.start(caller, request).is_ok());
        let wrong = Request {
            signature: 9,
            ..request
        };
        assert_eq!(service.start(caller, wrong).err(), Some(Status::SignatureMismatch));
    }

    #[test]
    fn the_runtime_s_own_services_are_not_listed_as_the_node_s() {
        let registry = Registry::default();
        serve(&registry, &served(true, AdminStatus::Active));
        assert!(is_internal("malla.Introspect") && !is_internal("Adder"));
        assert_eq!(registry.locals().len(), 1);
        assert!(registry.local("Adder").is_some() && registry.local("Other").is_none());
    }

    #[test]
    fn a_remote_instance_is_skipped_only_for_a_signature_it_publishes_otherwise() {
        let instance = RemoteInstance {
            node: "other".into(),
            vsn: None,
            signatures: Arc::from([(1, 10), (3, 30)]),
        };
        assert!(instance.has_method(1, 10) && instance.has_method(3, 30));
        assert!(!instance.has_method(1, 11), "another signature");
        assert!(!instance.has_method(2, 20), "a method it does not have");
        assert!(instance.has_method(2, 0), "an unchecked call");
        assert!(
            RemoteInstance::bare("old".into()).has_method(2, 20),
            "nothing published: unknown, not none"
        );
    }

    #[test]
    fn round_robin_turns_and_client_metrics_are_per_slot() {
        let registry = Registry::default();
        let slot = registry.slot("Adder");
        let turns: Vec<usize> = (0..3).map(|_| slot.next_turn()).collect();
        assert_eq!(turns, [0, 1, 2]);
        let manifest = crate::test_support::Adder::manifest(true);
        let mut registered = 0;
        for _ in 0..3 {
            slot.client_metrics(manifest, || {
                registered += 1;
                Arc::from([])
            });
        }
        assert_eq!(
            registered, 1,
            "a client's metric handles are registered once per manifest"
        );
    }
}
