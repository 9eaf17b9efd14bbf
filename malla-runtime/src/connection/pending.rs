//! Calls waiting for their reply on one connection, and their deadlines in
//! order, so that the writer task expires them all with one timer per
//! connection instead of one per call.

use std::collections::VecDeque;

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

/// Entries of answered calls the deadline queue may hold, beyond twice the
/// waiting calls, before it is swept.
const STALE_SLACK: usize = 64;

#[derive(Default)]
pub(super) struct PendingCalls {
    waiting: FxHashMap<u64, Waiter>,
    /// Deadlines in order, earliest first. Answering a call leaves its entry
    /// here (an id is never reused, so an entry whose id is not waiting is
    /// stale): calls mostly share one timeout and so arrive in order, which
    /// makes inserting a push at the back and answering no work at all,
    /// where an ordered set cost a tree insert and a tree removal per call.
    deadlines: VecDeque<(Instant, u64)>,
    /// When the writer task will next wake on its own.
    armed: Option<Instant>,
}

impl PendingCalls {
    /// Registers call `id`, answered through `waiter` by `deadline` at the
    /// latest.
    pub(super) fn insert(&mut self, id: u64, waiter: Waiter, deadline: Instant) -> Inserted {
        self.waiting.insert(id, waiter);
        if self.deadlines.back().is_none_or(|&(last, _)| last <= deadline) {
            self.deadlines.push_back((deadline, id));
        } else {
            let at = self.deadlines.partition_point(|&(other, _)| other <= deadline);
            self.deadlines.insert(at, (deadline, id));
        }
        if self.deadlines.len() > 2 * self.waiting.len() + STALE_SLACK {
            let waiting = &self.waiting;
            self.deadlines.retain(|(_, id)| waiting.contains_key(id));
        }
        Inserted {
            alone: self.waiting.len() == 1,
            rearm: self.armed.is_none_or(|armed| deadline < armed),
        }
    }

    /// Takes the waiter of call `id` to answer it; `None` if the caller gave
    /// up meanwhile (or the id is not ours).
    pub(super) fn complete(&mut self, id: u64) -> Option<Waiter> {
        self.waiting.remove(&id)
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
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(waiter) = self.complete(id) {
                expired.push((id, waiter));
            }
        }
        (expired, self.earliest())
    }

    /// The earliest deadline of a waiting call.
    pub(super) fn earliest(&mut self) -> Option<Instant> {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if self.waiting.contains_key(&id) {
                return Some(deadline);
            }
            self.deadlines.pop_front();
        }
        None
    }

    /// Records when the writer task will next wake.
    pub(super) fn arm(&mut self, at: Instant) {
        self.armed = Some(at);
    }

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

    #[test]
    fn deadlines_out_of_order_expire_in_order() {
        let now = Instant::now();
        let mut calls = PendingCalls::default();
        for (id, ms) in [(1, 30), (2, 10), (3, 50), (4, 20), (5, 40)] {
            calls.insert(id, reply_slot().0, now + Duration::from_millis(ms));
        }
        calls.complete(4);
        assert_eq!(calls.earliest(), Some(now + Duration::from_millis(10)));
        let (expired, next) = calls.expire(now + Duration::from_millis(35));
        assert_eq!(expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(next, Some(now + Duration::from_millis(40)));
    }

    /// One slow call at the front does not let the entries of the many
    /// answered behind it pile up.
    #[test]
    fn answered_calls_do_not_accumulate() {
        let now = Instant::now();
        let mut calls = PendingCalls::default();
        calls.insert(0, reply_slot().0, now + Duration::from_secs(1));
        for id in 1..100_000 {
            calls.insert(id, reply_slot().0, now + Duration::from_secs(2));
            calls.complete(id);
            assert!(calls.deadlines.len() <= 2 * (calls.len() + 1) + STALE_SLACK);
        }
        assert_eq!(calls.earliest(), Some(now + Duration::from_secs(1)));
    }
}
