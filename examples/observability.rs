//! Two nodes on loopback with the observability a deployment would install:
//! a Prometheus endpoint (`metrics-exporter-prometheus`) and OpenTelemetry
//! tracing (`tracing-opentelemetry`, here with an in-memory exporter whose
//! spans are printed as a tree). One call from node `a` to `Calculator` on
//! node `b` becomes one trace: the call, its attempt, and the request served
//! on `b`, a child of the attempt, though it ran on another node.
//!
//! ```text
//! cargo run --example observability                # prints the trace, the metrics, the stats; exits
//! cargo run --example observability -- --stay      # then keeps serving http://127.0.0.1:9464/metrics
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use malla::{CallOptions, Node};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[malla::service(global, vsn = "1.0.0")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        tracing::info!(a, b, "adding");
        a + b
    }
}

const COOKIE: &str = "malla-observability-demo";
const METRICS: &str = "127.0.0.1:9464";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stay = std::env::args().any(|a| a == "--stay");
    // Both before any node: metric handles are registered as nodes start.
    let metrics_addr: SocketAddr = METRICS.parse()?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(metrics_addr)
        .install()?;
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("malla-example"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otel))?;

    let a = Node::builder("a")
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let b = Node::builder("b")
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse()?)
        .seeds([a.local_addr().expect("a listens")])
        .start()
        .await?;
    b.serve(CalculatorServer::new(Calc)).await?;
    a.wait_for_services(&["Calculator"], Duration::from_secs(10)).await?;

    // A handful of calls, so the histograms have something; the last one,
    // inside a span of our own, is the trace we print.
    let calc = CalculatorClient::new(&a).with_options(CallOptions::default().timeout(Duration::from_secs(2)));
    for i in 0..9 {
        calc.add(i, i).await?;
    }
    let request = tracing::info_span!("example.request");
    let sum = calc.add(40, 2).instrument(request).await?;
    println!("a called Calculator.add(40, 2) on b: {sum}\n");

    let finished = spans.get_finished_spans()?;
    let root = finished
        .iter()
        .find(|s| s.name == "example.request")
        .expect("our span was exported");
    println!("trace {}:", root.span_context.trace_id());
    print_tree(&finished, root, 1);

    println!("\nfrom http://{METRICS}/metrics (malla's series about Calculator, and connections):");
    let page = scrape(metrics_addr)?;
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.contains("Calculator") || l.starts_with("malla_connections"))
        .filter(|l| !l.contains("quantile"))
    {
        println!("  {line}");
    }

    let stats = a.stats_of(b.id()).await?;
    println!("\nb's own figures, asked by a (what `malla stats` prints):");
    for service in &stats.services {
        println!(
            "  {}: {} served, {} in flight, {} errors; {} connections",
            service.service, service.served, service.in_flight, service.serve_errors, stats.connections
        );
    }

    if stay {
        println!("\nserving http://{METRICS}/metrics; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// `parent` and its descendants, one per line, indented by depth.
fn print_tree(spans: &[SpanData], parent: &SpanData, depth: usize) {
    let attribute = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    let details: Vec<String> = ["rpc.method", "node", "attempt", "outcome", "a", "b"]
        .into_iter()
        .filter_map(|key| attribute(parent, key).map(|v| format!("{key}={v}")))
        .collect();
    let kind = format!("{:?}", parent.span_kind).to_lowercase();
    println!(
        "{:indent$}{} [{kind}] span {} {}",
        "",
        parent.name,
        parent.span_context.span_id(),
        details.join(" "),
        indent = depth * 2
    );
    let mut children: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_context.span_id())
        .collect();
    children.sort_by_key(|s| s.start_time);
    for child in children {
        print_tree(spans, child, depth + 1);
    }
}

/// The Prometheus page, by a plain HTTP/1.0 GET.
fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    Ok(page)
}
