//! The runtime under `malla`: nodes, the authenticated transport, discovery
//! and failover. Use it through the `malla` crate, which re-exports the
//! public API and adds the `#[malla::service]` macro.
//!
//! # Layers
//!
//! Modules depend on the ones in their own row or the rows before it, never
//! on later ones; each layer reaches the layer above only through a trait it
//! is given or a value it hands up. `tests/layers.rs` checks this table
//! against every `use` in the crate, and that no two files import each
//! other.
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | base | `error`, `node_id`, `rendezvous`, `secret`, `manifest`, `metadata`, `singleton`, `options`, `intercept`, `events`, `sync`, `telemetry`, `wire` | errors, names, rendezvous hashing, secrets (cookies), manifests, call metadata, what a singleton is, call options, the interceptor traits, events, spans, metrics and counters, frames and headers |
//! | handshake | `handshake` | the mutual HMAC proof that opens every connection |
//! | dispatch | `service`, `invoke` | the [`Service`] trait generated servers implement, and `invoke`, the one dispatch path of local and remote calls |
//! | connections | `connection` | one stream per peer: calls out, requests in; runs requests through `Services`, posts what happens to it as `LinkEvent`s |
//! | services | `registry`, `placed` | served services and the routing slot of each name; what peers may call (`Services`); the dispatcher of a service placed somewhere, whose instance exists only while it is the active one |
//! | network | `net` | dialing, accepting, one connection per peer, background dials |
//! | cluster knowledge | `discovery`, `membership` | gossip on chitchat over sealed UDP (reports views through `ViewSink`); the table of nodes and instances, which publishes routes and events |
//! | cluster formation | `cluster` | connect targets resolved by DNS, re-resolved periodically (reaches out through `Reach`) |
//! | calls | `client` | the generated clients' core, the failover rule, one attempt seam for local and remote attempts, and the `Remote` seam to the network |
//! | coordination | `coord` | locks and global names on an embedded Raft group (openraft) over the node's connections; reaches the node through `Cluster` |
//! | node | `node` | the public `Node` API, the builder, and `node/parts.rs`, the one file that wires the layers together and owns their events |
//! | fuzzing | `fuzzing` | with the `fuzzing` feature (and in tests): the fuzz targets' entry points, one per decoder |
//!
//! # The path of a remote call
//!
//! From a generated client to a handler on another node and back, one line
//! per hop; no module calls back into one that called it:
//!
//! ```text
//! …Client::add                generated: encode/decode functions spanned on the user's types
//! client.rs      call         the stub check (one atomic load), then a Call
//! client/call.rs Call::run    the deadline; targets in order (client/failover.rs)
//! client/attempt.rs           Call::attempt, the one seam of every attempt: local or remote
//! client/remote.rs            Remote::call for the network
//! net/network.rs              connection_to: the peer's connection (net/peer.rs), dialing if needed
//! connection/link.rs          Connection::call: a reply slot (connection/pending.rs), the frame
//!                             (wire/message.rs) into the outbox (connection/outbox.rs),
//!                             written at once (connection/writing.rs) or batched
//!   ── the peer ──
//! connection/reader.rs        frames in (wire/frame.rs), the header (wire/message.rs)
//! registry.rs    Services     the served service and method: active, global, same signature
//! invoke.rs      invoke       the generated dispatcher, panics caught
//! connection/reader.rs        the reply, polled inline (or a task), queued by connection/writing.rs
//!   ── back ──
//! connection/reader.rs        the reply to its waiter (connection/pending.rs)
//! client/call.rs              decoded by the generated function
//! ```
//!
//! A call to a service served on the same node goes from `client/attempt.rs`
//! straight to the implementation (same trait), or through `invoke` when the
//! client is a manifest stub or a call by name.

#![deny(missing_docs)]

// Declared in the order of the layer table above.
// base
mod error;
mod events;
mod intercept;
mod manifest;
mod metadata;
mod node_id;
mod options;
mod rendezvous;
mod secret;
mod singleton;
mod sync;
mod telemetry;
mod wire;
// handshake, dispatch and connections
mod connection;
mod handshake;
mod invoke;
mod service;
// services
mod placed;
mod registry;
// the network
mod net;
// what the cluster knows
mod discovery;
mod membership;
// cluster formation
mod cluster;
// the call path
mod client;
// coordination
mod coord;
// the node, on top
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod node;
#[cfg(test)]
mod test_support;

pub use cluster::ConnectTarget;
pub use coord::{
    DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_TTL, FencingToken, GroupStatus, HeldLock, LockGuard, LockRequest, NAME_TTL,
    RegisteredName,
};
pub use discovery::advert::RunningStatus;
pub use discovery::sealed_udp::GossipStats;
pub use error::Error;
pub use events::Event;
pub use intercept::served::{Rejection, ServeInterceptor, ServedCall};
pub use intercept::{
    AfterCall, AttemptInfo, AttemptOutcome, CallInfo, CallOutcome, Decision, Interceptor, OutlierEjection, RetryBudget,
};
pub use manifest::{ArgManifest, MethodManifest, ServiceManifest, declared_service, declared_services};
pub use membership::{Instance, Member, MemberStatus};
pub use metadata::{
    MAX_ENCODED_LEN as MAX_METADATA_LEN, MAX_ENTRIES as MAX_METADATA_ENTRIES, MAX_KEY_LEN as MAX_METADATA_KEY_LEN,
    Metadata,
};
pub use node::{
    COOKIE_ENV, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HANDLERS, DEFAULT_MAX_HANDSHAKES, DEFAULT_RECONNECT_INTERVAL,
    DrainReport, Node, NodeBuilder, NodeConfig, NodeStats, ServiceStats,
};
#[cfg(feature = "tower")]
pub use node::{CallService, NamedCall};
pub use node_id::NodeId;
pub use options::{Balance, CallOptions, DEFAULT_RETRY_INTERVAL, DEFAULT_TIMEOUT, LONGEST_DURATION, ServeOptions};
pub use placed::NamedService;
pub use secret::{MIN_COOKIE_LEN, Secret};
pub use service::{AdminStatus, Service};
pub use singleton::{
    DEFAULT_SINGLETON_LEASE, Deactivation, SINGLETON_METADATA, Singleton, SingletonHooks, SingletonMode,
    SingletonStatus, singleton_lock,
};

/// Not public API: what code generated by `#[malla::service]` calls.
#[doc(hidden)]
pub mod __private {
    pub use crate::client::{ClientCore, call};
    pub use crate::manifest::DeclaredService;
    pub use crate::placed::NamedService;
    pub use crate::service::{
        ArgsDecoder, ArgsEncoder, DispatchError, DispatchFuture, Format, LocalFuture, LocalHandle, NoLocal,
        assert_sendable, decode_reply, encode_reply, no_local,
    };
    pub use crate::singleton::SingletonMode;
    pub use crate::wire::bounded::DecodeError;
}
