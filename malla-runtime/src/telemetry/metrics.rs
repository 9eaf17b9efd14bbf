//! Every metric a node records, through the [`metrics`] facade: the
//! application installs the recorder (`metrics-exporter-prometheus`, …);
//! without one, each recording is a no-op.
//!
//! Handles of the per-call metrics are registered once per method, when a
//! client is made or a service is served, so a call costs a few no-op (or
//! exporter) increments and no allocation. Install the recorder before
//! building nodes: handles registered before it stay no-ops.
//!
//! Every metric has a `node` label, the node's name, so several nodes in one
//! process stay apart.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `malla_client_calls_total` | counter | service, method, outcome | calls made, by how they ended (`ok`, `not_available`, `timeout`, `node_down`, `overloaded`, `signature_mismatch`, `remote_error`, `codec_error`, …) |
//! | `malla_client_call_duration_seconds` | histogram | service, method | time from call to answer, failovers included (timed only when a recorder is installed: see `recorder_installed`) |
//! | `malla_client_attempts_total` | counter | service, method | attempts (one per node tried) |
//! | `malla_client_failovers_total` | counter | service, method, reason | moves to the next node, by why the attempt did not run (same outcome names) |
//! | `malla_server_requests_total` | counter | service, method, outcome | requests served: `ok`, `bad_request`, `failed` (panic or unencodable reply), `dropped` (timed out or cancelled before answering) |
//! | `malla_server_handlers_in_flight` | gauge | service | handlers running now |
//! | `malla_server_requests_refused_total` | counter | service, reason | refused before running: `not_available`, `unknown_method`, `signature_mismatch`, `overloaded` |
//! | `malla_connections` | gauge | | connections to other nodes, open now |
//! | `malla_handshakes_refused_total` | counter | direction (`incoming`, `outgoing`), reason (`unauthorized`, `failed`) | handshakes that did not open a connection |
//! | `malla_gossip_datagrams_total` | counter | direction (`sent`, `received`), result (`ok`, `rejected`, `malformed`, `replayed`, `invalid`, `send_failed`) | gossip datagrams |
//! | `malla_gossip_restarts_total` | counter | | gossip tasks that ended and were started again |
//! | `malla_gossip_bytes_total` | counter | direction | their bytes, sealed, without UDP and IP headers |
//! | `malla_members` | gauge | status (`up`, `leaving`, `down`) | other visible nodes this node knows |
//! | `malla_raft_leader` | gauge | | 1 while this node leads the consensus group, else 0 (members only) |
//! | `malla_raft_term` | gauge | | the group's term as this member knows it |
//! | `malla_raft_commit_index` | gauge | | the last log entry this member applied |
//! | `malla_raft_lease_expiries_total` | counter | kind (`lock`, `name`) | leases the leader saw run out and freed |
//! | `malla_coord_requests_total` | counter | op (`lock`, `unlock`, `renew`, `register`, `unregister`, `whereis`, `admin`), outcome | requests this node made of the group |

use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Metric names, for users' dashboards and for tests.
pub(crate) mod name {
    pub(crate) const CLIENT_CALLS: &str = "malla_client_calls_total";
    pub(crate) const CLIENT_CALL_DURATION: &str = "malla_client_call_duration_seconds";
    pub(crate) const CLIENT_ATTEMPTS: &str = "malla_client_attempts_total";
    pub(crate) const CLIENT_FAILOVERS: &str = "malla_client_failovers_total";
    pub(crate) const SERVER_REQUESTS: &str = "malla_server_requests_total";
    pub(crate) const SERVER_IN_FLIGHT: &str = "malla_server_handlers_in_flight";
    pub(crate) const SERVER_REFUSED: &str = "malla_server_requests_refused_total";
    pub(crate) const CONNECTIONS: &str = "malla_connections";
    pub(crate) const HANDSHAKES_REFUSED: &str = "malla_handshakes_refused_total";
    pub(crate) const GOSSIP_DATAGRAMS: &str = "malla_gossip_datagrams_total";
    pub(crate) const GOSSIP_BYTES: &str = "malla_gossip_bytes_total";
    pub(crate) const GOSSIP_RESTARTS: &str = "malla_gossip_restarts_total";
    pub(crate) const MEMBERS: &str = "malla_members";
    pub(crate) const RAFT_LEADER: &str = "malla_raft_leader";
    pub(crate) const RAFT_TERM: &str = "malla_raft_term";
    pub(crate) const RAFT_COMMIT: &str = "malla_raft_commit_index";
    pub(crate) const LEASE_EXPIRIES: &str = "malla_raft_lease_expiries_total";
    pub(crate) const COORD_REQUESTS: &str = "malla_coord_requests_total";
}

/// The handles of one method's client metrics.
pub(crate) struct ClientMethod {
    node: String,
    service: String,
    method: String,
    ok: Counter,
    /// Kept apart: a stub answers it without allocating.
    not_available: Counter,
    attempts: Counter,
    duration: Histogram,
    /// Whether a recorder was installed when the handles were made: without
    /// one, calls skip the clock read their duration would need.
    timed: bool,
}

/// Whether a metrics recorder is installed. The facade's stand-in when none
/// is, `NoopRecorder`, is the one zero-sized recorder an application meets;
/// a zero-sized recorder of its own would get every metric but durations.
fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

impl ClientMethod {
    pub(crate) fn new(node: &str, service: &str, method: &str) -> Self {
        let labels = || {
            [
                ("node", node.to_owned()),
                ("service", service.to_owned()),
                ("method", method.to_owned()),
            ]
        };
        let with_outcome = |outcome: &str| {
            let mut labels = labels().to_vec();
            labels.push(("outcome", outcome.to_owned()));
            labels
        };
        ClientMethod {
            node: node.to_owned(),
            service: service.to_owned(),
            method: method.to_owned(),
            ok: counter!(name::CLIENT_CALLS, &with_outcome("ok")),
            not_available: counter!(name::CLIENT_CALLS, &with_outcome("not_available")),
            attempts: counter!(name::CLIENT_ATTEMPTS, &labels()),
            duration: histogram!(name::CLIENT_CALL_DURATION, &labels()),
            timed: recorder_installed(),
        }
    }

    /// A call that started at `started` ended after `attempts` attempts, in
    /// `outcome`.
    #[inline]
    pub(crate) fn finished(&self, outcome: &'static str, attempts: u32, started: Instant) {
        match outcome {
            "ok" => self.ok.increment(1),
            "not_available" => self.not_available.increment(1),
            // Other errors are rare: their handles are looked up when they
            // happen.
            _ => counter!(name::CLIENT_CALLS, &self.labels_with("outcome", outcome)).increment(1),
        }
        self.attempts.increment(u64::from(attempts));
        if self.timed {
            self.duration.record(started.elapsed());
        }
    }

    /// A stub's call: no node to try, answered `ServiceNotAvailable` at once.
    pub(crate) fn not_available(&self) {
        self.not_available.increment(1);
    }

    /// A call moves on from a node where the attempt did not run.
    pub(crate) fn failover(&self, reason: &'static str) {
        counter!(name::CLIENT_FAILOVERS, &self.labels_with("reason", reason)).increment(1);
    }

    fn labels_with(&self, key: &'static str, value: &'static str) -> [(&'static str, String); 4] {
        [
            ("node", self.node.clone()),
            ("service", self.service.clone()),
            ("method", self.method.clone()),
            (key, value.to_owned()),
        ]
    }
}

/// The handle of one method's answered requests (the others are rare).
///
/// Requests have no duration histogram here: the caller's
/// `malla_client_call_duration_seconds` measures what users wait for, and
/// timing every request would cost the server two clock reads.
pub(crate) struct ServerMethod {
    ok: Counter,
}

impl ServerMethod {
    pub(crate) fn new(node: &str, service: &str, method: &str) -> Self {
        let labels = [
            ("node", node.to_owned()),
            ("service", service.to_owned()),
            ("method", method.to_owned()),
            ("outcome", "ok".to_owned()),
        ];
        ServerMethod {
            ok: counter!(name::SERVER_REQUESTS, &labels),
        }
    }

    /// A request answered.
    pub(crate) fn ok(&self) {
        self.ok.increment(1);
    }
}

/// A request that did not answer `ok`: `bad_request`, `failed`, `dropped`.
#[cold]
pub(crate) fn request_failed(node: &str, service: &str, method: &str, outcome: &'static str) {
    counter!(
        name::SERVER_REQUESTS,
        "node" => node.to_owned(),
        "service" => service.to_owned(),
        "method" => method.to_owned(),
        "outcome" => outcome,
    )
    .increment(1);
}

/// Handlers of a service running now.
pub(crate) fn in_flight(node: &str, service: &str) -> Gauge {
    gauge!(name::SERVER_IN_FLIGHT, "node" => node.to_owned(), "service" => service.to_owned())
}

/// A request refused before it ran.
pub(crate) fn refused(node: &str, service: &str, reason: &'static str) {
    counter!(name::SERVER_REFUSED, "node" => node.to_owned(), "service" => service.to_owned(), "reason" => reason)
        .increment(1);
}

/// A connection opened (+1) or closed (−1).
pub(crate) fn connections(node: &str, change: f64) {
    gauge!(name::CONNECTIONS, "node" => node.to_owned()).increment(change);
}

/// A handshake that opened no connection.
pub(crate) fn handshake_refused(node: &str, incoming: bool, unauthorized: bool) {
    counter!(
        name::HANDSHAKES_REFUSED,
        "node" => node.to_owned(),
        "direction" => if incoming { "incoming" } else { "outgoing" },
        "reason" => if unauthorized { "unauthorized" } else { "failed" },
    )
    .increment(1);
}

/// A gossip datagram sent or received (`direction`), and what became of it.
pub(crate) fn gossip_datagram(node: &str, direction: &'static str, result: &'static str) {
    counter!(name::GOSSIP_DATAGRAMS, "node" => node.to_owned(), "direction" => direction, "result" => result)
        .increment(1);
}

/// Bytes of gossip sent or received.
pub(crate) fn gossip_bytes(node: &str, direction: &'static str, bytes: usize) {
    counter!(name::GOSSIP_BYTES, "node" => node.to_owned(), "direction" => direction).increment(bytes as u64);
}

/// A gossip task that ended and was started again.
pub(crate) fn gossip_restarted(node: &str) {
    counter!(name::GOSSIP_RESTARTS, "node" => node.to_owned()).increment(1);
}

/// How many other visible nodes are up, leaving and down.
pub(crate) fn members(node: &str, [up, leaving, down]: [usize; 3]) {
    for (status, count) in [("up", up), ("leaving", leaving), ("down", down)] {
        gauge!(name::MEMBERS, "node" => node.to_owned(), "status" => status).set(count as f64);
    }
}

/// How the consensus group stands, as a member sees it.
pub(crate) fn raft(node: &str, leader: bool, term: u64, commit: u64) {
    let node = node.to_owned();
    gauge!(name::RAFT_LEADER, "node" => node.clone()).set(if leader { 1.0 } else { 0.0 });
    gauge!(name::RAFT_TERM, "node" => node.clone()).set(term as f64);
    gauge!(name::RAFT_COMMIT, "node" => node).set(commit as f64);
}

/// The leader freed a lease that ran out.
pub(crate) fn lease_expired(node: &str, kind: &'static str) {
    counter!(name::LEASE_EXPIRIES, "node" => node.to_owned(), "kind" => kind).increment(1);
}

/// A request this node made of the consensus group, by how it ended.
pub(crate) fn coord_request(node: &str, op: &'static str, outcome: &'static str) {
    counter!(name::COORD_REQUESTS, "node" => node.to_owned(), "op" => op, "outcome" => outcome).increment(1);
}
