//! One served request as the outside sees it: its `malla.serve` span, the
//! service's counters and the method's metrics, from the moment it is
//! dispatched until it answers or is dropped.

use std::sync::Arc;

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

    /// A request to method number `method` that did not answer `ok`.
    #[cold]
    fn failed(&self, method: usize, outcome: &'static str) {
        bump(&self.counters.errors);
        let name = self.manifest.methods().get(method).map_or("", |m| m.name());
        m::request_failed(&self.node, self.manifest.name(), name, outcome);
    }

    /// A request refused before any handler ran.
    #[cold]
    pub(crate) fn refused(&self, reason: &'static str) {
        bump(&self.counters.refused);
        m::refused(&self.node, self.manifest.name(), reason);
    }
}

/// A request being served; says how it ended once, when it answers or, if
/// it never does, when it is dropped (timed out or cancelled).
pub(crate) struct Serving {
    telemetry: Arc<ServiceTelemetry>,
    method: usize,
    done: bool,
    /// Only when a subscriber may want it, and boxed: a request nobody
    /// traces carries a pointer's worth of span.
    span: Option<Box<Span>>,
}

impl Serving {
    /// A request to method number `method` of the service whose telemetry
    /// this is starts; its span is a child of `trace` if the caller sent
    /// one, else of the current span.
    pub(crate) fn start(telemetry: &Arc<ServiceTelemetry>, method: usize, trace: Option<TraceContext>) -> Serving {
        let span = spans::wanted()
            .then(|| {
                let name = telemetry.manifest.methods().get(method).map_or("", |m| m.name());
                spans::serve(&telemetry.node, telemetry.manifest.name(), name, trace)
            })
            .filter(|span| !span.is_disabled())
            .map(Box::new);
        telemetry.counters.started.bump();
        telemetry.in_flight.increment(1.0);
        Serving {
            telemetry: Arc::clone(telemetry),
            method,
            done: false,
            span,
        }
    }

    /// The request's span, if anyone looks: its handler runs inside it.
    pub(crate) fn span(&self) -> Option<&Span> {
        self.span.as_deref()
    }

    /// The request answered: `ok`, `bad_request` or `failed`. Its span
    /// ends here, before the reply leaves: whoever receives the reply finds
    /// the span finished (exported, for a tracer that exports on close).
    pub(crate) fn finish(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let telemetry = &self.telemetry;
        telemetry.counters.served.bump();
        telemetry.in_flight.decrement(1.0);
        if let Some(span) = self.span.take() {
            span.record("outcome", outcome);
        }
        match telemetry.methods.get(self.method) {
            Some(method) if outcome == "ok" => method.ok(),
            _ => telemetry.failed(self.method, outcome),
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
        [c.served.read(), read(&c.errors), read(&c.refused), c.in_flight()]
    }

    #[test]
    fn a_request_is_counted_once_however_it_ends() {
        let telemetry = Arc::new(ServiceTelemetry::new("n1", &MANIFEST));
        let start = |method| Serving::start(&telemetry, method, None);
        let mut answered = start(0);
        let dropped = start(0);
        assert_eq!(tallies(&telemetry), [0, 0, 0, 2], "two in flight");
        answered.finish("ok");
        answered.finish("failed");
        drop(answered);
        assert_eq!(
            tallies(&telemetry),
            [1, 0, 0, 1],
            "answered once, not again when dropped"
        );
        drop(dropped);
        assert_eq!(tallies(&telemetry), [2, 1, 0, 0], "dropped unanswered: an error");
        start(0).finish("bad_request");
        telemetry.refused("overloaded");
        // A method index past the manifest (a peer's bad request) is
        // tallied, never a panic.
        start(9).finish("bad_request");
        assert_eq!(tallies(&telemetry), [4, 3, 1, 0]);
    }
}
