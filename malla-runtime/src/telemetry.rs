//! What a node tells the outside about its work: `tracing` spans for every
//! call, attempt and served request (with the W3C trace context carried in
//! requests), metrics through the `metrics` facade, and the counters behind
//! `Node::stats` and `malla stats`.
//!
//! | file | what it owns |
//! |---|---|
//! | `trace_context` | the trace id, parent span id and flags a request carries |
//! | `spans` | the spans' names and fields, and the trace context of a span (with the `opentelemetry` feature) |
//! | `metrics` | every metric's name and labels, and handles registered once per method |
//! | `counters` | plain atomic counters per service, read by `Node::stats` |
//! | `served` | one served request: its span, counters and metrics from dispatch to answer |
//! | `throttle` | log lines an outsider can cause, said once a second with the count of the rest |
//!
//! Nothing here costs more than an atomic load per call when no `tracing`
//! subscriber is interested and no `metrics` recorder is installed.

pub(crate) mod counters;
pub(crate) mod metrics;
mod served;
pub(crate) mod spans;
pub(crate) mod throttle;
mod trace_context;

pub(crate) use served::{ServiceTelemetry, Serving};

pub(crate) use trace_context::TraceContext;
