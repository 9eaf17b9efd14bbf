//! Counters a node keeps for itself, whatever metrics recorder is installed
//! (or none): what `Node::stats` reports and `malla stats` prints. Relaxed
//! atomics: each is a tally, read without ordering against the others.

use std::sync::atomic::{AtomicU64, Ordering};

/// A node's calls of one service, stubs included.
#[derive(Debug, Default)]
pub(crate) struct CallCounters {
    pub(crate) calls: AtomicU64,
    /// Calls that returned an error.
    pub(crate) errors: AtomicU64,
    /// Times a call moved on to another node.
    pub(crate) failovers: AtomicU64,
}

/// A node's requests of one service it serves: from other nodes, and from
/// its own stubs and calls by name (a typed client on the same node calls
/// the implementation directly and is counted only as a call).
#[derive(Debug, Default)]
pub(crate) struct ServeCounters {
    /// Handlers that ran to an answer, or were dropped before one.
    pub(crate) served: AtomicU64,
    /// Of those, the ones that failed: bad arguments, a panic, an
    /// unencodable reply, or dropped (timed out, cancelled).
    pub(crate) errors: AtomicU64,
    /// Requests refused before any handler ran: not available, unknown
    /// method, other signature, overloaded.
    pub(crate) refused: AtomicU64,
    /// Handlers running now.
    pub(crate) in_flight: AtomicU64,
}

/// Adds one to a tally.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A tally's value now.
pub(crate) fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
