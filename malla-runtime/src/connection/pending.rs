//! Calls waiting for their reply on one connection, where each receives it,
//! and their deadlines in order, so that the writer task expires them all
//! with one timer per connection instead of one per call.
//!
//! A waiting call's reply slot is its entry in this table: the reader
//! answers it and wakes the caller, and the caller takes the reply out of
//! it. Where a channel per call cost an allocation, its reference counts
//! and its own state machine, a slot costs one more pass through a lock the
//! reader takes anyway.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::ops::Deref;
use std::task::{Poll, Waker};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use tokio::time::Instant;

use crate::wire::Status;

/// Replies up to this size are copied into the reply itself.
pub(super) const INLINE_REPLY: usize = 48;

/// A reply's encoded value. A small one is copied out of the read buffer
/// into the reply itself, which costs no allocation and leaves the buffer
/// unshared; a larger one shares the buffer's memory.
#[derive(Debug)]
pub(crate) enum ReplyBody {
    Inline(SmallVec<[u8; INLINE_REPLY]>),
    Shared(Bytes),
}

impl ReplyBody {
    /// A copy of a small reply.
    pub(crate) fn copied(bytes: &[u8]) -> Self {
        ReplyBody::Inline(SmallVec::from_slice(bytes))
    }
}

impl From<Bytes> for ReplyBody {
    fn from(bytes: Bytes) -> Self {
        ReplyBody::Shared(bytes)
    }
}

impl Deref for ReplyBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReplyBody::Inline(bytes) => bytes,
            ReplyBody::Shared(bytes) => bytes,
        }
    }
}

/// What a waiting caller receives.
pub(super) enum Reply {
    /// The encoded value.
    Value(ReplyBody),
    /// The status the serving node answered instead.
    Status(Status),
    /// The deadline passed first; the writer task sent a cancel.
    Expired,
}

impl Reply {
    pub(super) fn new(status: Status, body: ReplyBody) -> Reply {
        match status {
            Status::Ok => Reply::Value(body),
            other => Reply::Status(other),
        }
    }
}

/// One call's reply slot.
enum Slot {
    /// No reply yet; the caller's task, to wake with it.
    Waiting(Waker),
    /// The reply, until the caller takes it.
    Answered(Reply),
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
    slots: FxHashMap<u64, Slot>,
    /// Slots still waiting for their reply (the others hold one that their
    /// caller has yet to take).
    awaiting: usize,
    /// Deadlines in order, earliest first. Answering a call leaves its entry
    /// here (an id is never reused, so an entry whose call is not waiting is
    /// stale): calls mostly share one timeout and so arrive in order, which
    /// makes inserting a push at the back and answering no work at all,
    /// where an ordered set cost a tree insert and a tree removal per call.
    deadlines: VecDeque<(Instant, u64)>,
    /// When the writer task will next wake on its own.
    armed: Option<Instant>,
}

impl PendingCalls {
    /// Registers call `id`, to be answered by `deadline` at the latest;
    /// `waker` is woken when it is.
    pub(super) fn insert(&mut self, id: u64, waker: Waker, deadline: Instant) -> Inserted {
        self.slots.insert(id, Slot::Waiting(waker));
        self.awaiting += 1;
        if self.deadlines.back().is_none_or(|&(last, _)| last <= deadline) {
            self.deadlines.push_back((deadline, id));
        } else {
            let at = self.deadlines.partition_point(|&(other, _)| other <= deadline);
            self.deadlines.insert(at, (deadline, id));
        }
        if self.deadlines.len() > 2 * self.slots.len() + STALE_SLACK {
            let slots = &self.slots;
            self.deadlines.retain(|(_, id)| is_waiting(slots, *id));
        }
        Inserted {
            alone: self.slots.len() == 1,
            rearm: self.armed.is_none_or(|armed| deadline < armed),
        }
    }

    /// Puts `reply` in call `id`'s slot; returns the caller's waker, to wake
    /// once the lock is released. Nothing if the caller gave up meanwhile
    /// (or the id is not ours, or the call was answered already).
    pub(super) fn answer(&mut self, id: u64, reply: Reply) -> Option<Waker> {
        let slot = self.slots.get_mut(&id)?;
        match std::mem::replace(slot, Slot::Answered(reply)) {
            Slot::Waiting(waker) => {
                self.awaiting -= 1;
                Some(waker)
            }
            answered => {
                *slot = answered;
                None
            }
        }
    }

    /// The caller's side of call `id`'s slot: the reply if it came (the
    /// slot is then gone), else `waker` is kept to be woken by it. `None`
    /// when the slot is gone: the connection closed.
    pub(super) fn poll_reply(&mut self, id: u64, waker: &Waker) -> Poll<Option<Reply>> {
        let Entry::Occupied(mut slot) = self.slots.entry(id) else {
            return Poll::Ready(None);
        };
        match slot.get_mut() {
            Slot::Waiting(known) => {
                if !known.will_wake(waker) {
                    *known = waker.clone();
                }
                Poll::Pending
            }
            Slot::Answered(_) => match slot.remove() {
                Slot::Answered(reply) => Poll::Ready(Some(reply)),
                Slot::Waiting(_) => unreachable!("matched as answered"),
            },
        }
    }

    /// Forgets call `id`, whose caller gave up; true if it was still waiting
    /// (the peer may be running it: it deserves a cancel).
    pub(super) fn cancel(&mut self, id: u64) -> bool {
        let waiting = matches!(self.slots.remove(&id), Some(Slot::Waiting(_)));
        self.awaiting -= usize::from(waiting);
        waiting
    }

    /// Answers `Expired` to every call whose deadline is `now` or earlier;
    /// returns their ids and wakers, and the next deadline.
    pub(super) fn expire(&mut self, now: Instant) -> (Vec<(u64, Waker)>, Option<Instant>) {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            // Nothing for a call answered or cancelled meanwhile.
            if let Some(waker) = self.answer(id, Reply::Expired) {
                expired.push((id, waker));
            }
        }
        (expired, self.earliest())
    }

    /// The earliest deadline of a waiting call.
    pub(super) fn earliest(&mut self) -> Option<Instant> {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if is_waiting(&self.slots, id) {
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

    /// Calls not yet returned to their caller, answered or not.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Calls still waiting for the peer's reply. A call whose reply is in
    /// its slot, not yet taken, needs nothing more from the peer: it does
    /// not keep a retiring connection open, nor count as in flight.
    pub(super) fn awaiting(&self) -> usize {
        self.awaiting
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Fails every waiting call of a connection that closed: returns their
    /// wakers, and they find their slot gone. Replies that came before stay
    /// for their callers to take.
    pub(super) fn close(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        self.slots.retain(|_, slot| match slot {
            Slot::Waiting(waker) => {
                wakers.push(waker.clone());
                false
            }
            Slot::Answered(_) => true,
        });
        self.deadlines.clear();
        self.awaiting = 0;
        wakers
    }
}

fn is_waiting(slots: &FxHashMap<u64, Slot>, id: u64) -> bool {
    matches!(slots.get(&id), Some(Slot::Waiting(_)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counting() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (Arc::clone(&wakes), Waker::from(wakes))
    }

    fn value(reply: Poll<Option<Reply>>) -> Option<ReplyBody> {
        match reply {
            Poll::Ready(Some(Reply::Value(bytes))) => Some(bytes),
            _ => None,
        }
    }

    #[test]
    fn a_reply_wakes_its_caller_once_and_is_taken_once() {
        let now = Instant::now();
        let mut calls = PendingCalls::default();
        let (wakes, waker) = counting();
        calls.insert(1, waker.clone(), now + Duration::from_secs(1));
        assert!(calls.poll_reply(1, &waker).is_pending());
        let woken = calls.answer(1, Reply::new(Status::Ok, ReplyBody::copied(b"x")));
        woken.expect("the caller's waker").wake();
        assert!(calls.answer(1, Reply::Expired).is_none(), "a second answer is dropped");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert_eq!(value(calls.poll_reply(1, &waker)).as_deref(), Some(&b"x"[..]));
        assert!(calls.is_empty(), "the caller took its slot");
        assert!(matches!(calls.poll_reply(1, &waker), Poll::Ready(None)));
    }

    #[test]
    fn a_caller_polled_with_another_waker_is_woken_through_it() {
        let mut calls = PendingCalls::default();
        calls.insert(1, Waker::noop().clone(), Instant::now() + Duration::from_secs(1));
        let (first, first_waker) = counting();
        let (second, second_waker) = counting();
        assert!(calls.poll_reply(1, &first_waker).is_pending());
        assert!(calls.poll_reply(1, &second_waker).is_pending());
        calls.answer(1, Reply::Expired).unwrap().wake();
        assert_eq!(
            [first.0.load(Ordering::Relaxed), second.0.load(Ordering::Relaxed)],
            [0, 1]
        );
    }

    #[test]
    fn calls_are_answered_cancelled_or_expired_once() {
        let now = Instant::now();
        let mut calls = PendingCalls::default();
        let first = calls.insert(1, Waker::noop().clone(), now + Duration::from_secs(1));
        assert!(first.alone && first.rearm);
        calls.arm(now + Duration::from_secs(1));
        let second = calls.insert(2, Waker::noop().clone(), now + Duration::from_secs(3));
        assert!(!second.alone && !second.rearm, "a later deadline needs no re-arm");
        let third = calls.insert(3, Waker::noop().clone(), now + Duration::from_millis(10));
        assert!(third.rearm, "an earlier deadline wakes the writer");

        assert!(calls.cancel(2));
        assert!(!calls.cancel(2), "cancelled once");
        assert!(
            calls.answer(2, Reply::Expired).is_none(),
            "a late reply finds no caller"
        );
        assert!(!calls.slots.contains_key(&2), "nor keeps a slot");

        let (expired, next) = calls.expire(now + Duration::from_millis(500));
        assert_eq!(expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3]);
        assert_eq!(next, Some(now + Duration::from_secs(1)));
        let waker = Waker::noop();
        assert!(matches!(calls.poll_reply(3, waker), Poll::Ready(Some(Reply::Expired))));
        calls.answer(1, Reply::new(Status::Ok, ReplyBody::copied(b"x")));
        assert!(calls.earliest().is_none(), "an answered call has no deadline");
        assert!(!calls.cancel(1), "an answered call needs no cancel");
        assert!(calls.is_empty());
    }

    #[test]
    fn closing_fails_the_waiting_calls_and_keeps_the_answered_ones() {
        let now = Instant::now();
        let mut calls = PendingCalls::default();
        let (wakes, waker) = counting();
        for id in 1..=3 {
            calls.insert(id, waker.clone(), now + Duration::from_secs(1));
        }
        calls.answer(2, Reply::new(Status::Ok, Bytes::from_static(b"two").into()));
        let waiting = calls.close();
        assert_eq!(waiting.len(), 2);
        waiting.into_iter().for_each(Waker::wake);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
        assert!(matches!(calls.poll_reply(1, &waker), Poll::Ready(None)), "lost");
        assert_eq!(value(calls.poll_reply(2, &waker)).as_deref(), Some(&b"two"[..]));
        assert!(calls.is_empty() && calls.earliest().is_none());
    }

    #[test]
    fn deadlines_out_of_order_expire_in_order() {
        let now = Instant::now();
        let mut calls = PendingCalls::default();
        for (id, ms) in [(1, 30), (2, 10), (3, 50), (4, 20), (5, 40)] {
            calls.insert(id, Waker::noop().clone(), now + Duration::from_millis(ms));
        }
        calls.cancel(4);
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
        calls.insert(0, Waker::noop().clone(), now + Duration::from_secs(1));
        for id in 1..100_000 {
            calls.insert(id, Waker::noop().clone(), now + Duration::from_secs(2));
            calls.answer(id, Reply::Expired);
            let _ = calls.poll_reply(id, Waker::noop());
            assert!(calls.deadlines.len() <= 2 * (calls.len() + 1) + STALE_SLACK);
        }
        assert_eq!(calls.earliest(), Some(now + Duration::from_secs(1)));
    }
}
