//! The spans of a call, named and fielded after OpenTelemetry's RPC
//! conventions (`rpc.system`, `rpc.service`, `rpc.method`, `otel.kind`), so
//! `tracing-opentelemetry` exports them as client and server spans:
//!
//! | span | level | fields |
//! |---|---|---|
//! | `malla.call` | info | service, method; recorded at the end: `attempts`, `node` (the one that answered), `outcome` |
//! | `malla.attempt` (child of the call) | info | `node`, `attempt` (1, 2, …), `outcome` |
//! | `malla.serve` (on the serving node) | info | service, method, `node` (the serving one), `outcome`; `trace_id` when the request carried one |
//!
//! A request carries the attempt span's trace context (see
//! [`TraceContext`]); the serving node makes it the parent of its
//! `malla.serve` span. Taking a span's context needs
//! `tracing-opentelemetry`'s layer: with the `opentelemetry` feature (on by
//! default) a subscriber that has it sees one trace across nodes; without
//! the feature, or without the layer, requests carry no context and the
//! serving node records none.
//!
//! When no subscriber wants info-level spans, making one is a relaxed atomic
//! load and it is `Span::none()`: entering, recording and dropping it do
//! nothing. (That also keeps `tracing`'s `log` feature, which another crate
//! may turn on, from turning every call's spans into `log` records.)

use tracing::Span;
use tracing::field::Empty;
use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};

use super::TraceContext;

/// Whether some subscriber may want info-level spans.
#[inline]
pub(crate) fn wanted() -> bool {
    STATIC_MAX_LEVEL >= LevelFilter::INFO && LevelFilter::current() >= LevelFilter::INFO
}

/// The span of one call, around all its attempts.
pub(crate) fn call(service: &str, method: &str) -> Span {
    if !wanted() {
        return Span::none();
    }
    tracing::info_span!(
        "malla.call",
        otel.kind = "internal",
        rpc.system = "malla",
        rpc.service = service,
        rpc.method = method,
        attempts = Empty,
        node = Empty,
        outcome = Empty,
    )
}

/// The span of attempt number `attempt` of the call `call`, on `node`.
pub(crate) fn attempt(call: &Span, node: &str, attempt: u32) -> Span {
    if call.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(
        parent: call,
        "malla.attempt",
        otel.kind = "client",
        node = node,
        attempt = i64::from(attempt),
        outcome = Empty,
    )
}

/// The span of one request served here; a child of the caller's attempt
/// when the request carries its trace context.
pub(crate) fn serve(node: &str, service: &str, method: &str, parent: Option<TraceContext>) -> Span {
    if !wanted() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "malla.serve",
        otel.kind = "server",
        rpc.system = "malla",
        rpc.service = service,
        rpc.method = method,
        node = node,
        outcome = Empty,
        trace_id = Empty,
    );
    if let Some(parent) = parent.filter(|_| !span.is_disabled()) {
        span.record("trace_id", parent.trace_id_hex());
        adopt_parent(&span, parent);
    }
    span
}

/// The trace context a request made inside `span` carries, if the span has
/// one (a subscriber with `tracing-opentelemetry`'s layer gave it ids).
#[cfg(feature = "opentelemetry")]
pub(crate) fn context_of(span: &Span) -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let otel = context.span();
    let ids = otel.span_context();
    if !ids.is_valid() {
        return None;
    }
    TraceContext::new(
        ids.trace_id().to_bytes(),
        ids.span_id().to_bytes(),
        ids.trace_flags().to_u8(),
    )
}

/// Without `tracing-opentelemetry` there are no ids to carry.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn context_of(_span: &Span) -> Option<TraceContext> {
    None
}

#[cfg(feature = "opentelemetry")]
fn adopt_parent(span: &Span, parent: TraceContext) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    // Fails only when the span has already started in the exporter's eyes,
    // which a span made just now has not.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

#[cfg(not(feature = "opentelemetry"))]
fn adopt_parent(_span: &Span, _parent: TraceContext) {}
