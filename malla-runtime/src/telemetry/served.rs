//! One served request as the outside sees it: its `malla.serve` span, the
//! service's counters and the method's metrics, from the moment it is
//! dispatched until it answers or is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use metrics::Gauge;
use tracing::Span;

use super::TraceContext;
use super::counters::{ServeCounters, bump};
use super::metrics::{self as m, ServerMethod};
use super::spans;
use crate::ServiceManifest;

/// The telemetry of one service served on one node.
pub(crate) struct ServiceTelemetry {
    node: String,
    manifest: &'static ServiceManifest,
    pub(crate) counters: ServeCounters,
    in_flight: Gauge,
    /// By method index.
    methods: Box<[ServerMethod]>,
}

impl ServiceTelemetry {
    pub(crate) fn new(node: &str, manifest: &'static ServiceManifest) -> Self {
        let service = manifest.name();
        ServiceTelemetry {
            node: node.to_owned(),
            manifest,
            counters: ServeCounters::default(),
            in_flight: m::in_flight(node, service),
            methods: manifest
                .methods()
                .iter()
                .map(|method| ServerMethod::new(node, service, method.name()))
                .collect(),
        }
    }

    /// A request refused before any handler ran.
    pub(crate) fn refused(&self, reason: &'static str) {
        bump(&self.counters.refused);
        m::refused(&self.node, self.manifest.name(), reason);
    }

    /// A request to method number `method` starts; its span is a child of
    /// `trace` if the caller sent one, else of the current span.
    pub(crate) fn start(self: &Arc<Self>, method: usize, trace: Option<TraceContext>) -> Serving {
        let name = self.manifest.methods().get(method).map_or("", |m| m.name());
        let span = spans::serve(&self.node, self.manifest.name(), name, trace);
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight.increment(1.0);
        Serving {
            telemetry: Arc::clone(self),
            method,
            started: Instant::now(),
            span,
            done: false,
        }
    }
}

/// A request being served; says how it ended once, when it answers or, if
/// it never does, when it is dropped (timed out or cancelled).
pub(crate) struct Serving {
    telemetry: Arc<ServiceTelemetry>,
    method: usize,
    started: Instant,
    span: Span,
    done: bool,
}

impl Serving {
    /// The request's span: its handler runs inside it.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The request answered: `ok`, `bad_request` or `failed`.
    pub(crate) fn finish(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let telemetry = &*self.telemetry;
        let counters = &telemetry.counters;
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        telemetry.in_flight.decrement(1.0);
        bump(&counters.served);
        if outcome != "ok" {
            bump(&counters.errors);
        }
        self.span.record("outcome", outcome);
        if let Some(method) = telemetry.methods.get(self.method) {
            let name = telemetry.manifest.methods()[self.method].name();
            let service = telemetry.manifest.name();
            method.finished(&telemetry.node, service, name, outcome, self.started.elapsed());
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.finish("dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MethodManifest;
    use crate::telemetry::counters::read;

    static METHODS: [MethodManifest; 1] = [MethodManifest::__new("add", 1, &[], "i64", 2, false, None)];
    static MANIFEST: ServiceManifest = ServiceManifest::__new("Calc", "1.0.0", true, &METHODS);

    fn tallies(telemetry: &ServiceTelemetry) -> [u64; 4] {
        let c = &telemetry.counters;
        [&c.served, &c.errors, &c.refused, &c.in_flight].map(read)
    }

    #[test]
    fn a_request_is_counted_once_however_it_ends() {
        let telemetry = Arc::new(ServiceTelemetry::new("n1", &MANIFEST));
        let mut answered = telemetry.start(0, None);
        let dropped = telemetry.start(0, None);
        assert_eq!(tallies(&telemetry), [0, 0, 0, 2], "two in flight");
        answered.finish("ok");
        answered.finish("failed");
        drop(answered);
        assert_eq!(tallies(&telemetry), [1, 0, 0, 1], "answered once, not again when dropped");
        drop(dropped);
        assert_eq!(tallies(&telemetry), [2, 1, 0, 0], "dropped unanswered: an error");
        telemetry.start(0, None).finish("bad_request");
        telemetry.refused("overloaded");
        // A method index past the manifest (a peer's bad request) is
        // tallied, never a panic.
        telemetry.start(9, None).finish("bad_request");
        assert_eq!(tallies(&telemetry), [4, 3, 1, 0]);
    }
}
