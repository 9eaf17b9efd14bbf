//! Calls waiting for their reply on one connection, and their deadlines in
//! order, so that the writer task expires them all with one timer per
//! connection instead of one per call.

use std::collections::BTreeSet;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::wire::Status;

/// What a waiting caller receives.
pub(super) enum Reply {
    /// The encoded value.
    Value(Bytes),
    /// The status the serving node answered instead.
    Status(Status),
    /// The deadline passed first; the writer task sent a cancel.
    Expired,
}

/// The sending end of one waiting call, taken out of the table so that it
/// is answered after the table's lock is released.
pub(super) struct Waiter(oneshot::Sender<Reply>);

impl Waiter {
    pub(super) fn answer(self, status: Status, body: Bytes) {
        let _ = self.0.send(match status {
            Status::Ok => Reply::Value(body),
            other => Reply::Status(other),
        });
    }

    pub(super) fn expire(self) {
        let _ = self.0.send(Reply::Expired);
    }
}

/// Where a waiting call receives its reply.
pub(super) type ReplySlot = oneshot::Receiver<Reply>;

/// A waiter and its reply slot; made before taking the table's lock, so
/// that the allocation does not hold up the other callers and the reader.
pub(super) fn reply_slot() -> (Waiter, ReplySlot) {
    let (tx, rx) = oneshot::channel();
    (Waiter(tx), rx)
}

/// What inserting a call tells the caller.
pub(super) struct Inserted {
    /// No other call is waiting: the request may leave at once, unbatched.
    pub(super) alone: bool,
    /// The writer task sleeps past this deadline and must be woken to re-arm.
    pub(super) rearm: bool,
}

#[derive(Default)]
pub(super) struct PendingCalls {
    waiting: FxHashMap<u64, (Waiter, Instant)>,
    deadlines: BTreeSet<(Instant, u64)>,
    /// When the writer task will next wake on its own.
    armed: Option<Instant>,
}

impl PendingCalls {
    /// Registers call `id`, answered through `waiter` by `deadline` at the
    /// latest.
    pub(super) fn insert(&mut self, id: u64, waiter: Waiter, deadline: Instant) -> Inserted {
        self.waiting.insert(id, (waiter, deadline));
        self.deadlines.insert((deadline, id));
        Inserted {
            alone: self.waiting.len() == 1,
            rearm: self.armed.is_none_or(|armed| deadline < armed),
        }
    }

    /// Takes the waiter of call `id` to answer it; `None` if the caller gave
    /// up meanwhile (or the id is not ours).
    pub(super) fn complete(&mut self, id: u64) -> Option<Waiter> {
        let (waiter, deadline) = self.waiting.remove(&id)?;
        self.deadlines.remove(&(deadline, id));
        Some(waiter)
    }

    /// Forgets call `id`, whose caller gave up; true if it was still waiting
    /// (the peer may be running it: it deserves a cancel).
    pub(super) fn cancel(&mut self, id: u64) -> bool {
        self.complete(id).is_some()
    }

    /// Takes every call whose deadline is `now` or earlier; returns them and
    /// the next deadline.
    pub(super) fn expire(&mut self, now: Instant) -> (Vec<(u64, Waiter)>, Option<Instant>) {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(waiter) = self.complete(id) {
                expired.push((id, waiter));
            }
        }
        (expired, self.earliest())
    }

    /// The earliest deadline of a waiting call.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Records when the writer task will next wake.
    pub(super) fn arm(&mut self, at: Instant) {
        self.armed = Some(at);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn calls_are_completed_cancelled_or_expired_once() {
        let now = Instant::now();
        let mut calls = PendingCalls::default();
        let first = calls.insert(1, reply_slot().0, now + Duration::from_secs(1));
        assert!(first.alone && first.rearm);
        calls.arm(now + Duration::from_secs(1));
        let second = calls.insert(2, reply_slot().0, now + Duration::from_secs(3));
        assert!(!second.alone && !second.rearm, "a later deadline needs no re-arm");
        let third = calls.insert(3, reply_slot().0, now + Duration::from_millis(10));
        assert!(third.rearm, "an earlier deadline wakes the writer");

        assert!(calls.cancel(2));
        assert!(!calls.cancel(2), "cancelled once");
        assert!(calls.complete(2).is_none(), "a late reply finds no waiter");

        let (expired, next) = calls.expire(now + Duration::from_millis(500));
        assert_eq!(expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3]);
        assert_eq!(next, Some(now + Duration::from_secs(1)));
        calls.complete(1).unwrap().answer(Status::Ok, Bytes::from_static(b"x"));
        assert!(calls.is_empty() && calls.earliest().is_none());
    }
}
