//! What a user running a cluster sees of it, across real nodes on loopback
//! (each on its own runtime): one OpenTelemetry trace per call, the server's
//! span a child of the caller's attempt on another node, failover included;
//! the metrics recorder's counters moving with calls, failovers and refused
//! handshakes; and every node's figures through `Node::stats_of`.
//!
//! One process-wide `tracing` subscriber (with `tracing-opentelemetry` and
//! an in-memory exporter) and one metrics recorder serve every test here;
//! each test's nodes have their own names, and the tests look only at them.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use malla::{CallOptions, Error, NodeId};
use malla_test_support::{
    nodes::{NodeRuntime, cluster, listening},
    wait::wait_until_blocking,
};
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use opentelemetry::trace::{SpanId, TracerProvider};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const COOKIE: &str = "observability-test-cookie";

struct Collectors {
    spans: InMemorySpanExporter,
    metrics: &'static Recorded,
}

/// Installs the subscriber and the recorder once, before any node exists
/// (metric handles registered before the recorder stay no-ops).
fn collectors() -> &'static Collectors {
    static COLLECTORS: OnceLock<Collectors> = OnceLock::new();
    COLLECTORS.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("observability-test"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only subscriber");
        let metrics: &'static Recorded = Box::leak(Box::default());
        metrics::set_global_recorder(metrics).expect("the only recorder");
        Collectors { spans, metrics }
    })
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv: &KeyValue| &kv.value)
}

/// The spans of the trace of `root`, by name.
fn in_trace(root: &SpanData, name: &str) -> Vec<SpanData> {
    let trace = root.span_context.trace_id();
    let finished = collectors().spans.get_finished_spans().unwrap();
    finished
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace && s.name == name)
        .collect()
}

/// With the collectors installed: three nodes named `{prefix}0..2`, the
/// last serving `Geometry`, the middle one serving nothing.
fn caller_empty_server(prefix: &str) -> Vec<NodeRuntime> {
    collectors();
    let nodes = cluster(prefix, 3, COOKIE);
    let server = &nodes[2];
    server
        .run(server.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    nodes
}

#[test]
fn a_remote_call_is_one_trace_across_nodes_even_after_a_failover() {
    // node 1 does not serve Geometry: a call sent there first fails over.
    let nodes = caller_empty_server("trace");
    let (caller, empty, server) = (&nodes[0], &nodes[1], &nodes[2]);
    let geo = GeometryClient::new(&caller.node);

    // Straight to the server.
    let direct = tracing::info_span!("test.direct");
    let options = CallOptions::default().nodes([server.node.id().clone()]);
    let sum = caller.run(geo.with_options(options).add(2, 3).instrument(direct));
    assert_eq!(sum.unwrap(), 5);

    // The empty node first: it answers `ServiceNotAvailable`, the call moves on.
    let failover = tracing::info_span!("test.failover");
    let options = CallOptions::default().nodes([empty.node.id().clone(), server.node.id().clone()]);
    let sum = caller.run(geo.with_options(options).add(20, 22).instrument(failover));
    assert_eq!(sum.unwrap(), 42);

    for (root, attempts) in [("test.direct", 1), ("test.failover", 2)] {
        let finished = collectors().spans.get_finished_spans().unwrap();
        let root = &finished
            .into_iter()
            .find(|s| s.name == root)
            .expect("the test's own span");
        let calls = in_trace(root, "malla.call");
        assert_eq!(calls.len(), 1, "{calls:#?}");
        let call = &calls[0];
        assert_eq!(call.parent_span_id, root.span_context.span_id());
        assert_eq!(
            attribute(call, "rpc.service").map(Value::as_str).as_deref(),
            Some("Geometry")
        );
        assert_eq!(attribute(call, "rpc.method").map(Value::as_str).as_deref(), Some("add"));
        assert_eq!(attribute(call, "outcome").map(Value::as_str).as_deref(), Some("ok"));
        assert_eq!(attribute(call, "attempts"), Some(&Value::I64(attempts)));
        assert_eq!(attribute(call, "node").map(Value::as_str).as_deref(), Some("trace2"));

        let mut tries = in_trace(root, "malla.attempt");
        tries.sort_by_key(|s| match attribute(s, "attempt") {
            Some(Value::I64(n)) => *n,
            _ => 0,
        });
        assert_eq!(tries.len(), attempts as usize, "{tries:#?}");
        assert!(tries.iter().all(|t| t.parent_span_id == call.span_context.span_id()));
        let last = tries.last().unwrap();
        assert_eq!(attribute(last, "node").map(Value::as_str).as_deref(), Some("trace2"));
        if attempts == 2 {
            let first = &tries[0];
            assert_eq!(attribute(first, "node").map(Value::as_str).as_deref(), Some("trace1"));
            assert_eq!(
                attribute(first, "outcome").map(Value::as_str).as_deref(),
                Some("not_available")
            );
        }

        // On the other node, in the same trace: the server's span, a child
        // of the attempt that reached it.
        let served = in_trace(root, "malla.serve");
        assert_eq!(served.len(), 1, "{served:#?}");
        let serve = &served[0];
        assert_eq!(serve.parent_span_id, last.span_context.span_id());
        assert_ne!(serve.parent_span_id, SpanId::INVALID);
        assert_eq!(serve.span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(attribute(serve, "outcome").map(Value::as_str).as_deref(), Some("ok"));
        assert_eq!(attribute(serve, "node").map(Value::as_str).as_deref(), Some("trace2"));
        println!(
            "{root}: trace {} — call, {attempts} attempt(s), served on trace2 as a child of attempt {attempts}",
            root.span_context.trace_id(),
            root = root.name
        );
    }
}

/// A metrics recorder that keeps every series, readable at any time
/// without resetting it (the test waits on a counter, then reads them all).
#[derive(Default)]
struct Recorded {
    series: Mutex<Vec<(Key, Series)>>,
}

#[derive(Clone)]
enum Series {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Samples>),
}

/// How many values a histogram recorded.
#[derive(Default)]
struct Samples(AtomicU64);

impl HistogramFn for Samples {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Recorded {
    fn series(&self, key: &Key, make: impl FnOnce() -> Series) -> Series {
        let mut all = self.series.lock().unwrap();
        if let Some((_, series)) = all.iter().find(|(k, _)| k == key) {
            return series.clone();
        }
        let series = make();
        all.push((key.clone(), series.clone()));
        series
    }

    /// The sum over the series of `name` whose labels include `labels`:
    /// counts for counters and histograms, values for gauges.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let all = self.series.lock().unwrap();
        all.iter()
            .filter(|(key, _)| {
                key.name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, series)| match series {
                Series::Counter(n) => n.load(Ordering::Relaxed) as f64,
                Series::Gauge(bits) => f64::from_bits(bits.load(Ordering::Relaxed)),
                Series::Histogram(samples) => samples.0.load(Ordering::Relaxed) as f64,
            })
            .sum()
    }
}

impl Recorder for &'static Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.series(key, || Series::Counter(Arc::default())) {
            Series::Counter(n) => Counter::from_arc(n),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.series(key, || Series::Gauge(Arc::default())) {
            Series::Gauge(bits) => Gauge::from_arc(bits),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.series(key, || Series::Histogram(Arc::default())) {
            Series::Histogram(samples) => Histogram::from_arc(samples),
            _ => Histogram::noop(),
        }
    }
}

fn recorded(name: &str, labels: &[(&str, &str)]) -> f64 {
    collectors().metrics.sum(name, labels)
}

#[test]
fn metrics_move_with_calls_failovers_and_refused_handshakes() {
    let nodes = caller_empty_server("metric");
    let (caller, empty, server) = (&nodes[0], &nodes[1], &nodes[2]);
    caller
        .run(caller.node.wait_for_services(&["Geometry"], Duration::from_secs(5)))
        .unwrap();
    let geo = GeometryClient::new(&caller.node);
    for i in 0..10 {
        assert_eq!(caller.run(geo.add(i, 1)).unwrap(), i + 1);
    }
    let failing_over = CallOptions::default().nodes([empty.node.id().clone(), server.node.id().clone()]);
    for _ in 0..3 {
        caller.run(geo.with_options(failing_over.clone()).ping()).unwrap();
    }
    let boom = caller.run(geo.boom("on purpose".into()));
    assert!(matches!(boom, Err(Error::Remote { .. })), "{boom:?}");
    // A stub of a service nobody serves.
    let nowhere = caller.run(malla::Node::remote::<_, ()>(
        &caller.node,
        "Nowhere",
        "x",
        &(),
        Default::default(),
    ));
    assert!(matches!(nowhere, Err(Error::ServiceNotAvailable { .. })), "{nowhere:?}");
    // A stranger with another cookie knocks.
    let intruder = NodeRuntime::start(listening("metric-intruder", "not-the-cluster-cookie"));
    let refused = intruder.run(intruder.node.connect(server.addr()));
    assert!(matches!(refused, Err(Error::Unauthorized { .. })), "{refused:?}");
    // The server counts it once its side of the handshake has ended, which
    // may be just after the intruder heard no.
    let refusal_counted = wait_until_blocking(Duration::from_secs(5), || {
        recorded("malla_handshakes_refused_total", &[("node", "metric2")]) > 0.0
    });
    assert!(refusal_counted);

    let (me, there) = (("node", "metric0"), ("node", "metric2"));
    let geometry = ("service", "Geometry");
    let count = |name: &str, labels: &[(&str, &str)]| recorded(name, labels) as u64;
    let client_ok = count(
        "malla_client_calls_total",
        &[me, geometry, ("method", "add"), ("outcome", "ok")],
    );
    let client_failed = count("malla_client_calls_total", &[me, geometry, ("outcome", "remote_error")]);
    let not_available = count(
        "malla_client_calls_total",
        &[me, ("service", "Nowhere"), ("outcome", "not_available")],
    );
    let attempts = count("malla_client_attempts_total", &[me, geometry, ("method", "ping")]);
    let failovers = count(
        "malla_client_failovers_total",
        &[me, geometry, ("reason", "not_available")],
    );
    let durations = count("malla_client_call_duration_seconds", &[me, geometry]);
    let served = count("malla_server_requests_total", &[there, geometry, ("outcome", "ok")]);
    let served_failed = count("malla_server_requests_total", &[there, geometry, ("outcome", "failed")]);
    let refused_there = count("malla_server_requests_refused_total", &[("node", "metric1")]);
    let handshakes_in = count(
        "malla_handshakes_refused_total",
        &[there, ("direction", "incoming"), ("reason", "unauthorized")],
    );
    let handshakes_out = count(
        "malla_handshakes_refused_total",
        &[
            ("node", "metric-intruder"),
            ("direction", "outgoing"),
            ("reason", "unauthorized"),
        ],
    );
    let gossip_sent = count(
        "malla_gossip_datagrams_total",
        &[me, ("direction", "sent"), ("result", "ok")],
    );
    let gossip_received = count(
        "malla_gossip_datagrams_total",
        &[me, ("direction", "received"), ("result", "ok")],
    );
    let connections = recorded("malla_connections", &[me]);
    let members_up = recorded("malla_members", &[me, ("status", "up")]);
    let in_flight = recorded("malla_server_handlers_in_flight", &[there, geometry]);
    println!(
        "caller: {client_ok} ok, {client_failed} failed, {not_available} not available, {attempts} ping attempts, \
         {failovers} failovers, {connections} connections, {members_up} members up, gossip {gossip_sent} sent / \
         {gossip_received} received; server: {served} served, {served_failed} failed, {in_flight} in flight, \
         {handshakes_in} handshakes refused; empty node: {refused_there} refused; intruder: {handshakes_out} refused"
    );
    assert_eq!(client_ok, 10);
    assert_eq!(client_failed, 1);
    assert_eq!(not_available, 1);
    assert_eq!(attempts, 6, "two per ping");
    assert_eq!(failovers, 3);
    assert_eq!(served, 10 + 3);
    assert_eq!(served_failed, 1);
    assert_eq!(in_flight, 0.0);
    assert_eq!(handshakes_in, 1);
    assert_eq!(handshakes_out, 1);
    assert!(gossip_sent > 0 && gossip_received > 0);
    assert_eq!(connections, 2.0);
    assert_eq!(members_up, 2.0);
    assert_eq!(durations, 10 + 3 + 1, "one duration per call that tried a node");
    // The empty node does not serve Geometry: no service there to count a
    // refusal against.
    assert_eq!(refused_there, 0);
}

#[test]
fn every_node_reports_its_figures_to_any_other() {
    collectors();
    let nodes = cluster("stats", 2, COOKIE);
    let (caller, server) = (&nodes[0], &nodes[1]);
    server
        .run(server.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    caller
        .run(caller.node.wait_for_services(&["Geometry"], Duration::from_secs(5)))
        .unwrap();
    let geo = GeometryClient::new(&caller.node);
    for _ in 0..5 {
        caller.run(geo.count()).unwrap();
    }
    let _ = caller.run(geo.boom("x".into()));

    let theirs = caller.run(caller.node.stats_of(server.node.id())).unwrap();
    let mine = caller.run(caller.node.stats_of(caller.node.id())).unwrap();
    println!("{theirs:#?}\n{mine:#?}");
    assert_eq!(theirs.node, *server.node.id());
    let served = theirs
        .services
        .iter()
        .find(|s| s.service == "Geometry")
        .expect("Geometry served");
    assert_eq!((served.served, served.serve_errors, served.in_flight), (6, 1, 0));
    assert_eq!(theirs.connections, 1);
    assert!(theirs.gossip.is_some_and(|g| g.sent > 0));
    assert!(
        theirs.services.iter().all(|s| !s.service.starts_with("malla.")),
        "the runtime's own service is not listed"
    );
    let called = mine
        .services
        .iter()
        .find(|s| s.service == "Geometry")
        .expect("Geometry called");
    assert_eq!((called.calls, called.call_errors, called.failovers), (6, 1, 0));
    assert_eq!(
        mine.services,
        caller.node.stats().services,
        "the same figures, asked or read"
    );

    // A hidden node (what `malla stats` runs) may ask too.
    let hidden = NodeRuntime::start(malla::Node::builder("stats-cli").cookie(COOKIE).hidden());
    let id: NodeId = hidden.run(hidden.node.connect(server.addr())).unwrap();
    assert_eq!(id, *server.node.id());
    let asked = hidden.run(hidden.node.stats_of(server.node.id())).unwrap();
    assert!(asked.services.iter().any(|s| s.service == "Geometry" && s.served == 6));

    // The runtime's own names are reserved.
    let reserved = server.run(server.node.serve(ReservedServer::new(Mine)));
    assert!(
        matches!(&reserved, Err(Error::Config(why)) if why.contains("malla.")),
        "{reserved:?}"
    );
}

#[malla::service(global, name = "malla.Mine")]
pub trait Reserved {
    async fn x(&self);
}

struct Mine;

impl Reserved for Mine {
    async fn x(&self) {}
}
