//! A call's deadline as a request carries it: the peer is told how long it
//! has, counted from a reading of the clock the caller already made.

use std::time::Duration;

use tokio::time::Instant;

/// When a caller stops waiting for its reply, and the reading of the clock
/// from which the time left is counted.
///
/// A call reads the clock once, when it starts; its first request counts
/// from that reading rather than reading the clock again. (A reading takes
/// about 26 ns on the virtual machines this was measured on; without the
/// second one the paired bench's loopback round trip gained half a
/// percent.) Whatever waits on the way (a dial, a full outbox, a failover)
/// takes a fresh reading with [`Deadline::refreshed`]. A stale reading gives the peer more time than
/// the caller waits, never less: the caller still gives up at `at`, and
/// cancels the request on the peer when it does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    read: Instant,
}

impl Deadline {
    /// `at`, counted from `read`, a reading of the clock made since the
    /// caller last waited.
    pub(crate) fn counted_from(read: Instant, at: Instant) -> Self {
        Deadline { at, read }
    }

    /// `at`, counted from a fresh reading of the clock.
    pub(crate) fn from_now(at: Instant) -> Self {
        Deadline::counted_from(Instant::now(), at)
    }

    /// The same deadline, counted from now: after anything that waited.
    pub(crate) fn refreshed(self) -> Self {
        Deadline::from_now(self.at)
    }

    /// The instant the caller gives up.
    pub(crate) fn at(self) -> Instant {
        self.at
    }

    /// The time the peer is given to answer.
    pub(crate) fn left(self) -> Duration {
        self.at.saturating_duration_since(self.read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_counts_from_the_reading_and_never_goes_negative() {
        let read = Instant::now();
        let at = read + Duration::from_millis(250);
        let deadline = Deadline::counted_from(read, at);
        assert_eq!(deadline.left(), Duration::from_millis(250));
        assert_eq!(deadline.at(), at);
        assert!(deadline.refreshed().left() <= Duration::from_millis(250));
        let past = Deadline::counted_from(at + Duration::from_secs(1), at);
        assert_eq!(past.left(), Duration::ZERO);
    }
}
