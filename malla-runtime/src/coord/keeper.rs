//! The holder's side of leases: what this node holds, renewed in one batch
//! before a third of the shortest lease has passed, and how long each is
//! valid as far as this node may claim it.
//!
//! # The clock assumption
//!
//! A lease is valid here until `sent + ttl × (1 − DRIFT)`, where `sent` is
//! when this node sent the request that last granted or renewed it, read
//! on this node's monotonic clock. The leader frees it no earlier than a
//! whole `ttl` after it applied that request, on its own clock; it applied
//! it after this node sent it. So the two never overlap as long as no
//! clock runs more than `DRIFT` (1 %) faster than another over one lease,
//! which monotonic clocks do by far. Wall-clock jumps do not matter; a
//! process stopped (a pause, SIGSTOP) longer than its lease can wake up
//! believing it still holds a lock it lost: that is what the fencing token
//! is for. A resource that only accepts a token at least as high as the
//! highest it has seen refuses the late writer.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::table::Key;
use crate::sync::lock;

/// How much faster than another one clock may run, over one lease.
pub(crate) const DRIFT: f64 = 0.01;

/// How long after `sent` a lease of `ttl` is still ours to claim.
pub(crate) fn valid_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl.mul_f64(1.0 - DRIFT)
}

/// What this node holds.
#[derive(Default)]
pub(crate) struct Keeper {
    held: Mutex<BTreeMap<Key, Held>>,
    /// Something was added: the renewal task looks again.
    pub(crate) wake: Notify,
}

struct Held {
    token: u64,
    ttl: Duration,
    /// Until when this node may claim it.
    valid_until: Instant,
    /// When the request behind `valid_until` was sent.
    sent: Instant,
    /// Set once the lease is lost.
    lost: watch::Sender<bool>,
}

impl Keeper {
    /// Keeps `key`, granted with `token` by a request sent at `sent`;
    /// returns what says when it is lost.
    pub(crate) fn hold(&self, key: Key, token: u64, ttl: Duration, sent: Instant) -> watch::Receiver<bool> {
        let (lost, watch) = watch::channel(false);
        let held = Held {
            token,
            ttl,
            valid_until: valid_until(sent, ttl),
            sent,
            lost,
        };
        if let Some(previous) = lock(&self.held).insert(key, held) {
            let _ = previous.lost.send(true);
        }
        self.wake.notify_one();
        watch
    }

    /// Stops keeping `key`; its token, if it was kept.
    pub(crate) fn drop_lease(&self, key: &Key) -> Option<u64> {
        lock(&self.held).remove(key).map(|held| held.token)
    }

    /// The token `key` is held with, while it is still valid here.
    pub(crate) fn token(&self, key: &Key) -> Option<u64> {
        let held = lock(&self.held);
        held.get(key)
            .filter(|h| Instant::now() < h.valid_until)
            .map(|h| h.token)
    }

    /// Until when `key` is ours to claim, if it is held.
    pub(crate) fn valid_until(&self, key: &Key) -> Option<Instant> {
        lock(&self.held).get(key).map(|h| h.valid_until)
    }

    /// Everything held, with its token.
    pub(crate) fn held(&self) -> Vec<(Key, u64)> {
        lock(&self.held).iter().map(|(k, h)| (k.clone(), h.token)).collect()
    }

    /// Forgets everything (the node leaves); each holder hears it is lost.
    pub(crate) fn clear(&self) {
        for (_, held) in std::mem::take(&mut *lock(&self.held)) {
            let _ = held.lost.send(true);
        }
    }

    /// Marks lost whatever is no longer valid at `now`; when the next one
    /// must be renewed (a third of its lease after it was last sent) or
    /// lapses, whichever is first.
    pub(crate) fn lapse(&self, now: Instant, node: &str) -> Option<Instant> {
        let mut held = lock(&self.held);
        held.retain(|key, h| {
            let valid = now < h.valid_until;
            if !valid {
                tracing::warn!(%node, name = %key.name(), "lost a lease: it could not be renewed in time");
                let _ = h.lost.send(true);
            }
            valid
        });
        held.values().map(|h| (h.sent + h.ttl / 3).min(h.valid_until)).min()
    }

    /// Takes in the answer to a renewal sent at `sent` of `renewed`.
    pub(crate) fn renewed(&self, sent: Instant, renewed: &[(Key, u64)], lost: &[Key], node: &str) {
        let mut held = lock(&self.held);
        for (key, token) in renewed {
            if lost.contains(key) {
                if let Some(h) = held.remove(key).filter(|h| h.token == *token) {
                    tracing::warn!(%node, name = %key.name(), "lost a lease: the group had freed it");
                    let _ = h.lost.send(true);
                }
            } else if let Some(h) = held.get_mut(key).filter(|h| h.token == *token) {
                h.valid_until = h.valid_until.max(valid_until(sent, h.ttl));
                h.sent = h.sent.max(sent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_claimed_a_little_less_long_than_granted() {
        let now = Instant::now();
        let until = valid_until(now, Duration::from_secs(10));
        assert_eq!(until - now, Duration::from_millis(9_900));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrenewed_lease_is_lost_when_its_validity_ends() {
        let keeper = Keeper::default();
        let key = Key::Lock("x".into());
        let mut lost = keeper.hold(key.clone(), 7, Duration::from_secs(1), Instant::now());
        assert_eq!(keeper.token(&key), Some(7));
        let next = keeper.lapse(Instant::now(), "me").expect("one held");
        assert!(
            next - Instant::now() <= Duration::from_millis(334),
            "renewed within a third"
        );
        tokio::time::advance(Duration::from_millis(995)).await;
        assert_eq!(keeper.lapse(Instant::now(), "me"), None);
        assert!(*lost.borrow_and_update(), "told");
        assert_eq!(keeper.token(&key), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_extends_from_when_it_was_sent_and_a_freed_lease_is_lost() {
        let keeper = Keeper::default();
        let (x, y) = (Key::Lock("x".into()), Key::Name("y".into()));
        let ttl = Duration::from_secs(1);
        keeper.hold(x.clone(), 1, ttl, Instant::now());
        let mut y_lost = keeper.hold(y.clone(), 2, ttl, Instant::now());
        tokio::time::advance(Duration::from_millis(500)).await;
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        keeper.renewed(sent, &[(x.clone(), 1), (y.clone(), 2)], std::slice::from_ref(&y), "me");
        assert_eq!(keeper.valid_until(&x), Some(valid_until(sent, ttl)));
        assert!(*y_lost.borrow_and_update());
        assert_eq!(keeper.held(), [(x, 1)]);
    }
}
