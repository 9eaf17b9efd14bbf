//! Log lines anyone can cause (a datagram that does not open, a handshake
//! with a wrong cookie), said at most once a second each: a flood costs one
//! line a second, and the line says how many it stands for. The events
//! themselves are counted in full elsewhere (`GossipStats`, the
//! `malla_handshakes_refused_total` metric).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How often a line an outsider can cause is said at most.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// One kind of line: said at most once an interval; when it was last said,
/// and how many went unsaid since.
pub(crate) struct LogThrottle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::every(EVERY)
    }
}

impl LogThrottle {
    /// Said at most once each `every`.
    pub(crate) fn every(every: Duration) -> Self {
        LogThrottle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to say this one: `Some(n)` if so, `n` the ones not said
    /// since the last; `None` if it is only counted.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = lock(&self.state);
        let (said, unsaid) = &mut *state;
        if said.is_some_and(|at| now.duration_since(at) < self.every) {
            *unsaid += 1;
            return None;
        }
        *said = Some(now);
        Some(std::mem::take(unsaid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_a_second_that_counts_the_rest() {
        let throttle = LogThrottle::default();
        let start = Instant::now();
        assert_eq!(throttle.admit_at(start), Some(0), "the first is said at once");
        for ms in 1..1000 {
            assert_eq!(throttle.admit_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.admit_at(start + EVERY), Some(999));
        assert_eq!(throttle.admit_at(start + EVERY * 5), Some(0));
    }
}
