//! Outlier ejection: a node whose attempts keep failing is skipped for a
//! while, so calls stop paying for it (Envoy's consecutive-failure
//! ejection, as an interceptor).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::hooks::{AttemptInfo, AttemptOutcome, Interceptor};
use crate::{Error, NodeId};

/// Skips a node for a while after its attempts fail several times in a row.
///
/// After `consecutive_failures` failed attempts in a row (the node went down
/// mid-call, timed out, was overloaded or unreachable; an error its service
/// answered is not the node's fault) a node is ejected for `base_ejection`,
/// doubled each time it is ejected again (up to `max_ejection`); its
/// attempts are then refused before they run, so calls fail over at once to
/// the next node. A node that stays healthy for `max_ejection` is forgiven
/// its past ejections.
///
/// It never ejects more than `max_ejected_percent` of the nodes it has
/// seen in the last `max_ejection`, and never the last one: skipping every
/// node would turn a slow cluster into no cluster.
///
/// Install one per node (`NodeBuilder::intercept`) to share what all of its
/// clients learn, or per client.
///
/// ```
/// use std::time::Duration;
/// use malla_runtime::OutlierEjection;
///
/// let ejection = OutlierEjection::new()
///     .consecutive_failures(3)
///     .base_ejection(Duration::from_secs(5));
/// # let _ = ejection;
/// // Node::builder("n1").intercept(ejection)
/// ```
#[derive(Debug)]
pub struct OutlierEjection {
    consecutive_failures: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejected_percent: u8,
    nodes: Mutex<HashMap<NodeId, Health>>,
}

#[derive(Debug, Clone, Copy)]
struct Health {
    failures: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
    /// The last attempt (failed or not); nodes not seen for `max_ejection`
    /// are forgotten.
    seen: Instant,
    /// The last failure, for forgiving past ejections.
    failed: Instant,
}

impl Default for OutlierEjection {
    fn default() -> Self {
        Self::new()
    }
}

impl OutlierEjection {
    /// Five failures in a row eject a node for 10 s (at most 5 min), at most
    /// half of the nodes at a time.
    pub fn new() -> Self {
        OutlierEjection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// Failed attempts in a row that eject a node (at least 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n.max(1);
        self
    }

    /// How long a first ejection lasts.
    pub fn base_ejection(mut self, duration: Duration) -> Self {
        self.base_ejection = duration;
        self.max_ejection = self.max_ejection.max(duration);
        self
    }

    /// The longest an ejection lasts, however often a node was ejected.
    pub fn max_ejection(mut self, duration: Duration) -> Self {
        self.max_ejection = duration.max(self.base_ejection);
        self
    }

    /// The largest share of the nodes seen that may be ejected at once
    /// (0 to 100).
    pub fn max_ejected_percent(mut self, percent: u8) -> Self {
        self.max_ejected_percent = percent.min(100);
        self
    }

    /// Whether `node` is ejected now, and until when.
    pub fn ejected_until(&self, node: &NodeId) -> Option<Instant> {
        let now = Instant::now();
        let nodes = self.lock();
        nodes.get(node)?.ejected_until.filter(|until| *until > now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Health>> {
        // Counts only: a map left half-updated by a panic is still usable.
        self.nodes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an attempt to `node` is to be skipped, at `now`.
    fn skips(&self, node: &NodeId, now: Instant) -> Option<Instant> {
        let mut nodes = self.lock();
        let health = nodes.entry(node.clone()).or_insert_with(|| Health::new(now));
        health.seen = now;
        health.ejected_until.filter(|until| *until > now)
    }

    /// Counts an attempt's outcome at `now`; may eject its node.
    fn record(&self, node: &NodeId, failed: bool, now: Instant) {
        let mut nodes = self.lock();
        let forget_before = now.checked_sub(self.max_ejection).unwrap_or(now);
        nodes.retain(|n, h| n == node || h.seen >= forget_before || h.ejected_until.is_some_and(|u| u > now));
        let health = nodes.entry(node.clone()).or_insert_with(|| Health::new(now));
        health.seen = now;
        if !failed {
            health.failures = 0;
            if health.failed < forget_before {
                health.ejections = 0;
            }
            return;
        }
        health.failures += 1;
        health.failed = now;
        let ejected_now = health.ejected_until.is_some_and(|until| until > now);
        if health.failures < self.consecutive_failures || ejected_now {
            return;
        }
        let seen = nodes.len();
        let ejected = nodes
            .values()
            .filter(|h| h.ejected_until.is_some_and(|until| until > now))
            .count();
        let allowed = (seen * usize::from(self.max_ejected_percent) / 100).min(seen.saturating_sub(1));
        if ejected >= allowed {
            return;
        }
        let Some(health) = nodes.get_mut(node) else { return };
        let doubling = health.ejections.min(16);
        let ejection = self.base_ejection.saturating_mul(1 << doubling).min(self.max_ejection);
        health.ejections += 1;
        health.failures = 0;
        health.ejected_until = Some(now + ejection);
        tracing::info!(node = %node, ?ejection, "ejected as an outlier");
    }
}

impl Health {
    fn new(now: Instant) -> Self {
        Health {
            failures: 0,
            ejected_until: None,
            ejections: 0,
            seen: now,
            failed: now,
        }
    }
}

impl Interceptor for OutlierEjection {
    fn before_attempt(&self, attempt: &mut AttemptInfo<'_>) -> Result<(), Error> {
        let now = Instant::now();
        match self.skips(attempt.node(), now) {
            None => Ok(()),
            Some(until) => Err(Error::Refused {
                service: attempt.service().to_owned().into(),
                method: attempt.method().name().to_owned().into(),
                node: attempt.node().clone(),
                reason: format!(
                    "ejected as an outlier by this caller for another {:?}",
                    until.saturating_duration_since(now)
                ),
            }),
        }
    }

    fn after_attempt(&self, attempt: &AttemptInfo<'_>, outcome: &AttemptOutcome<'_>) {
        let failed = outcome.error().is_some_and(is_node_failure);
        self.record(attempt.node(), failed, Instant::now());
    }
}

/// A failure that says something about the node rather than the call.
fn is_node_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::NodeDown { .. }
            | Error::Timeout { .. }
            | Error::Overloaded { .. }
            | Error::Connect { .. }
            | Error::Handshake { .. }
            | Error::Io(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::from(name)
    }

    fn fail(ejection: &OutlierEjection, name: &str, times: u32, now: Instant) {
        for _ in 0..times {
            ejection.record(&node(name), true, now);
        }
    }

    #[test]
    fn consecutive_failures_eject_a_node() {
        let ejection = OutlierEjection::new().consecutive_failures(3);
        let now = Instant::now();
        ejection.record(&node("b"), false, now);
        fail(&ejection, "a", 2, now);
        assert_eq!(ejection.skips(&node("a"), now), None, "two failures are not three");
        fail(&ejection, "a", 1, now);
        assert_eq!(ejection.skips(&node("a"), now), Some(now + Duration::from_secs(10)));
        assert_eq!(ejection.skips(&node("b"), now), None);
        let later = now + Duration::from_secs(10);
        assert_eq!(ejection.skips(&node("a"), later), None, "the ejection ends");
    }

    #[test]
    fn a_success_resets_the_count() {
        let ejection = OutlierEjection::new().consecutive_failures(3);
        let now = Instant::now();
        ejection.record(&node("b"), false, now);
        for _ in 0..10 {
            fail(&ejection, "a", 2, now);
            ejection.record(&node("a"), false, now);
        }
        assert_eq!(ejection.skips(&node("a"), now), None);
    }

    #[test]
    fn ejections_double_up_to_the_maximum_and_are_forgiven() {
        let ejection = OutlierEjection::new()
            .consecutive_failures(1)
            .base_ejection(Duration::from_secs(10))
            .max_ejection(Duration::from_secs(35));
        let mut now = Instant::now();
        ejection.record(&node("b"), false, now);
        for expected in [10, 20, 35, 35] {
            fail(&ejection, "a", 1, now);
            let until = ejection.skips(&node("a"), now).expect("ejected");
            assert_eq!(until - now, Duration::from_secs(expected));
            now = until;
            ejection.record(&node("b"), false, now);
        }
        // Healthy for the longest ejection: the next ejection is a first one.
        now += Duration::from_secs(36);
        ejection.record(&node("a"), false, now);
        ejection.record(&node("b"), false, now);
        fail(&ejection, "a", 1, now);
        assert_eq!(ejection.skips(&node("a"), now), Some(now + Duration::from_secs(10)));
    }

    #[test]
    fn never_the_last_node_nor_past_the_share() {
        let ejection = OutlierEjection::new().consecutive_failures(1);
        let now = Instant::now();
        fail(&ejection, "a", 1, now);
        assert_eq!(ejection.skips(&node("a"), now), None, "a lone node is never ejected");

        let ejection = OutlierEjection::new().consecutive_failures(1).max_ejected_percent(50);
        for name in ["a", "b", "c", "d"] {
            ejection.record(&node(name), false, now);
        }
        for name in ["a", "b", "c", "d"] {
            fail(&ejection, name, 1, now);
        }
        let ejected = ["a", "b", "c", "d"]
            .iter()
            .filter(|n| ejection.skips(&node(n), now).is_some())
            .count();
        assert_eq!(ejected, 2, "half of four");
    }

    #[test]
    fn answers_of_the_service_are_not_the_nodes_fault() {
        assert!(!is_node_failure(&Error::Remote {
            service: "S".into(),
            method: "m".into(),
            node: node("a"),
            message: "bad input".into(),
        }));
        assert!(is_node_failure(&Error::NodeDown { node: node("a") }));
    }
}
