//! # malla
//!
//! Erlang-style service discovery and failover for Rust, with typed clients
//! generated from a trait. A port of the Elixir framework
//! [Malla](https://github.com/netkubes/malla).
//!
//! ```
//! #[malla::service(global, vsn = "1.0.0")]
//! pub trait Calculator {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), malla::Error> {
//! let node = malla::Node::builder("node1").start().await?;
//! let calc = CalculatorClient::new(&node);
//!
//! // Nothing serves `Calculator` yet: the stub answers at once.
//! assert!(matches!(calc.add(1, 2).await, Err(malla::Error::ServiceNotAvailable { .. })));
//!
//! node.serve(CalculatorServer::new(Calc)).await?;
//! assert_eq!(calc.add(1, 2).await?, 3);
//! # Ok(()) }
//! ```

//!
//! # Observability
//!
//! - **Spans** (`tracing`, level info): `malla.call` per call (fields
//!   `rpc.service`, `rpc.method`, and at the end `attempts`, `node` that
//!   answered, `outcome`), a child `malla.attempt` per node tried (`node`,
//!   `attempt`, `outcome`), and `malla.serve` per request on the serving node
//!   (`node`, `outcome`). With the `opentelemetry` feature (default) and
//!   `tracing-opentelemetry`'s layer (0.34) in the subscriber, a request
//!   carries the W3C trace context of its attempt and the serving node's span
//!   joins the caller's trace: one trace across nodes, failovers included.
//!   With no subscriber interested, spans cost an atomic load.
//! - **Metrics** through the `metrics` facade: install a recorder (for
//!   example `metrics-exporter-prometheus`) *before* building nodes. Every
//!   series has a `node` label:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `malla_client_calls_total` | counter | service, method, outcome (`ok`, `not_available`, `timeout`, `node_down`, `overloaded`, `signature_mismatch`, `remote_error`, `codec_error`, …) |
//! | `malla_client_call_duration_seconds` | histogram | service, method (calls past the stub check; timed only if a recorder was installed when the client was made) |
//! | `malla_client_attempts_total` | counter | service, method |
//! | `malla_client_failovers_total` | counter | service, method, reason (why the attempt did not run) |
//! | `malla_server_requests_total` | counter | service, method, outcome (`ok`, `bad_request`, `failed`, `dropped`) |
//! | `malla_server_handlers_in_flight` | gauge | service |
//! | `malla_server_requests_refused_total` | counter | service, reason (`not_available`, `unknown_method`, `signature_mismatch`, `overloaded`) |
//! | `malla_connections` | gauge | |
//! | `malla_handshakes_refused_total` | counter | direction (`incoming`, `outgoing`), reason (`unauthorized`, `failed`) |
//! | `malla_gossip_datagrams_total` | counter | direction (`sent`, `received`), result (`ok`, `rejected`, `malformed`, `replayed`, `invalid`, `send_failed`) |
//! | `malla_gossip_restarts_total` | counter | |
//! | `malla_gossip_bytes_total` | counter | direction |
//! | `malla_members` | gauge | status (`up`, `leaving`, `down`) |
//! | `malla_raft_leader`, `malla_raft_term`, `malla_raft_commit_index` | gauge | (members of the consensus group) |
//! | `malla_raft_lease_expiries_total` | counter | kind (`lock`, `name`) |
//! | `malla_coord_requests_total` | counter | op, outcome |
//!
//! - **Figures without a recorder**: [`Node::stats`] and [`Node::stats_of`]
//!   (any node's, through the built-in `malla.Introspect` service every node
//!   serves), and `malla stats` in the CLI.

//! # Coordination
//!
//! Locks ([`Node::lock`], [`Node::trans`]) and global names
//! ([`Node::register_name`], [`Node::whereis_name`], `…Client::named`) live
//! in a consensus group (openraft) that voters form
//! ([`NodeBuilder::voter`]); nothing is granted without a quorum, so none is
//! held twice, even across a partition.
//!
//! **The clock assumption.** A holder claims a lock until `sent + ttl ×
//! 0.99`, `sent` being when it sent the request that last granted or renewed
//! it, on its own monotonic clock ([`LockGuard::valid_until`]); the leader
//! frees it no sooner than a whole lease after it applied that request, on
//! its clock. The two never overlap while no clock runs more than 1 % faster
//! than another over one lease; wall-clock jumps do not matter. What time
//! cannot guard against (a process paused past its lease) the
//! [`FencingToken`] does: the resource refuses tokens lower than the
//! highest it has seen.

#![deny(missing_docs)]

pub use malla_runtime::{
    AdminStatus, ArgManifest, Balance, COOKIE_ENV, CallOptions, ConnectTarget, DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_TTL,
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HANDLERS, DEFAULT_MAX_HANDSHAKES, DEFAULT_RECONNECT_INTERVAL,
    DEFAULT_RETRY_INTERVAL, DEFAULT_TIMEOUT, DrainReport, Error, Event, FencingToken, GossipStats, GroupStatus,
    HeldLock, Instance, LONGEST_DURATION, LockGuard, LockRequest, Member, MemberStatus, MethodManifest, NAME_TTL, Node,
    NodeBuilder, NodeConfig, NodeId, NodeStats, RegisteredName, RunningStatus, ServeOptions, Service, ServiceManifest,
    ServiceStats, declared_service, declared_services,
};
pub use malla_runtime::{
    AfterCall, AttemptInfo, AttemptOutcome, CallInfo, CallOutcome, Decision, Interceptor, MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY_LEN, MAX_METADATA_LEN, Metadata, OutlierEjection, Rejection, RetryBudget, ServeInterceptor,
    ServedCall,
};
#[cfg(feature = "tower")]
pub use malla_runtime::{CallService, NamedCall};
pub use malla_runtime::{
    DEFAULT_SINGLETON_LEASE, Deactivation, NamedService, SINGLETON_METADATA, Singleton, SingletonHooks, SingletonMode,
    SingletonStatus, singleton_lock,
};

/// Turns a trait into a malla service.
///
/// ```
/// #[malla::service(global, vsn = "1.2.0")]
/// pub trait Calculator {
///     async fn add(&self, a: i64, b: i64) -> i64;
///     #[malla(idempotent, timeout_ms = 500)]
///     async fn get(&self, key: String) -> Option<String>;
/// }
/// ```
///
/// generates, next to the trait (whose `async fn`s become
/// `fn … -> impl Future + Send`, so implementors write plain `async fn`):
///
/// - `CalculatorServer<T: Calculator>`, the dispatcher to pass to
///   [`Node::serve`];
/// - `CalculatorClient`, the typed client: one `async` method per trait
///   method returning `Result<T, malla::Error>`, plus `new(&Node)`,
///   `with_options(CallOptions)` and `on_node(node)`. Before any instance is
///   known its calls return [`Error::ServiceNotAvailable`] at once; once one
///   is discovered, the same handle routes to it;
/// - `CalculatorClient::MANIFEST`, the [`ServiceManifest`], also listed by
///   [`declared_services`].
///
/// Service options: `global` (publish cluster-wide; otherwise served and
/// called on the local node only), `vsn = "…"`, `name = "…"` (wire name,
/// default the trait name), `crate = "…"` (path of this crate if renamed).
/// Method options, in `#[malla(..)]`: `idempotent` (may be re-sent to
/// another node if the first died mid-call) and `timeout_ms = N` (default
/// deadline).
///
/// Arguments and return values must be `Serialize + DeserializeOwned + Send +
/// 'static`; methods take `&self` and are `async`.
pub use malla_macros::service;

/// Includes the stubs `malla-build` generated from a manifest in `build.rs`
/// (`malla_build::precompile("malla.toml")`): the `…Client` types of
/// services whose crate is not a dependency.
///
/// ```ignore
/// malla::include_stubs!();                   // $OUT_DIR/malla_stubs.rs
/// malla::include_stubs!("remote_stubs.rs");  // another `Stubs::out_file`
/// ```
#[macro_export]
macro_rules! include_stubs {
    () => {
        ::core::include!(::core::concat!(::core::env!("OUT_DIR"), "/malla_stubs.rs"));
    };
    ($file:literal) => {
        ::core::include!(::core::concat!(::core::env!("OUT_DIR"), "/", $file));
    };
}

/// Not public API: what code generated by `#[malla::service]` refers to.
#[doc(hidden)]
pub mod __private {
    pub use ::inventory;
    pub use ::serde;
    pub use ::std::any::Any;
    pub use ::std::boxed::Box;
    pub use ::std::sync::Arc;

    pub use malla_runtime::__private::*;
    pub use malla_runtime::ArgManifest;
    pub use malla_runtime::{CallOptions, Error, Interceptor, MethodManifest, Node, NodeId, Service, ServiceManifest};

    /// Encodes a value as it travels on the wire; for tests and tools.
    pub fn postcard_to_vec<T: ::serde::Serialize>(value: &T) -> ::std::vec::Vec<u8> {
        ::postcard::to_allocvec(value).expect("postcard encodes into a Vec without failing")
    }
}
