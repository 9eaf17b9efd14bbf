//! Counters a node keeps for itself, whatever metrics recorder is installed
//! (or none): what `Node::stats` reports and `malla stats` prints.
//!
//! The ones every call or request bumps are [`Tally`]s, striped per thread,
//! so that callers on different cores do not pass one cache line back and
//! forth (a contended increment costs more than the rest of the tally's
//! work); the rare ones (errors, refusals) are plain atomics.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes of a [`Tally`]; threads share them round-robin.
const STRIPES: usize = 8;

/// A count bumped from many threads, read rarely: one cache line per stripe.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    stripes: [Stripe; STRIPES],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

impl Tally {
    /// Adds one, on this thread's stripe.
    pub(crate) fn bump(&self) {
        self.stripes[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count now: the sum of the stripes, each read once.
    pub(crate) fn read(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// This thread's stripe, given on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        stripe.get()
    })
}

/// A node's calls of one service, stubs included.
#[derive(Debug, Default)]
pub(crate) struct CallCounters {
    /// Calls past the stub check.
    pub(crate) calls: Tally,
    /// Of those, the ones that returned an error.
    pub(crate) errors: AtomicU64,
    /// Calls a stub answered `ServiceNotAvailable` at once: calls and
    /// errors both, kept apart so that a stub's call is one increment.
    pub(crate) unavailable: Tally,
    /// Times a call moved on to another node.
    pub(crate) failovers: AtomicU64,
}

impl CallCounters {
    /// Every call, stubs' included.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.read().wrapping_add(self.unavailable.read())
    }

    /// Every call that returned an error, stubs' included.
    pub(crate) fn errors(&self) -> u64 {
        read(&self.errors).wrapping_add(self.unavailable.read())
    }
}

/// A node's requests of one service it serves: from other nodes, and from
/// its own stubs and calls by name (a typed client on the same node calls
/// the implementation directly and is counted only as a call).
#[derive(Debug, Default)]
pub(crate) struct ServeCounters {
    /// Handlers started.
    pub(crate) started: Tally,
    /// Handlers that ran to an answer, or were dropped before one.
    pub(crate) served: Tally,
    /// Of those, the ones that failed: bad arguments, a panic, an
    /// unencodable reply, or dropped (timed out, cancelled).
    pub(crate) errors: AtomicU64,
    /// Requests refused before any handler ran: not available, unknown
    /// method, other signature, overloaded.
    pub(crate) refused: AtomicU64,
}

impl ServeCounters {
    /// Handlers running now. Read apart, the two tallies may disagree by
    /// the handlers that started or ended in between; never below zero.
    pub(crate) fn in_flight(&self) -> u64 {
        let served = self.served.read();
        self.started.read().saturating_sub(served)
    }
}

/// Adds one to a rare count.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A rare count's value now.
pub(crate) fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_across_threads() {
        let tally = Tally::default();
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| (0..1000).for_each(|_| tally.bump()));
            }
        });
        assert_eq!(tally.read(), 12_000);
        assert_eq!(std::mem::align_of::<Stripe>(), 128, "one cache line (pair) per stripe");
    }
}
