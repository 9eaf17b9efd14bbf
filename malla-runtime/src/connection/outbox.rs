//! The outbox as a state machine without I/O: frames go in, batches come
//! out, and every decision (who writes next, whether there is room, whom to
//! wake) is returned as a value for the task that holds its lock to carry
//! out. The link, the reader and the writer task drive it; its rules are
//! tested here without a socket.
//!
//! At most one party writes at a time ([`Writer`]). A frame that should
//! leave now is written by the task that queued it when nobody else is
//! writing; batched frames go to the writer task, unless a kilobyte of them
//! has piled up before it woke, in which case the next sender writes them
//! ("the 1 KiB rule"). Past the high-water mark, requests wait for room;
//! replies, cancels and pings never do.

use bytes::BytesMut;

use super::errors::CallError;
use crate::wire;

/// Outbox size above which requests wait for the writer before adding more.
pub(super) const HIGH_WATER: usize = 8 * 1024 * 1024;
/// Batched frames past which a sender writes them itself rather than wait
/// for the writer task.
pub(super) const BATCH_BYTES: usize = 1024;

/// Frames waiting to be written, and who is writing them.
pub(super) struct Outbox {
    /// Queued frames, in order.
    buf: BytesMut,
    /// The unwritten rest of an earlier batch, sealed; goes out before `buf`.
    front: BytesMut,
    /// A cleared buffer kept for reuse.
    spare: BytesMut,
    writer: Writer,
    closed: bool,
    /// Someone found no room and waits for the drained wake-up: writes
    /// report it only then, as waking waiters takes a lock even when nobody
    /// waits.
    room_awaited: bool,
    /// The next request id: given under the outbox's lock, so ids leave in
    /// the order they are given (the peer refuses one that does not grow).
    next_id: u64,
}

/// Who may write the outbox to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writer {
    /// Nobody is writing: the next sender may.
    Nobody,
    /// A caller or the reader is writing on its own task.
    Inline,
    /// The writer task is (the socket was full, or it has taken a batch).
    Task,
    /// The writer task was woken to write batched frames and has taken none
    /// yet: a sender that finds enough queued may write them itself.
    Soon,
}

/// Whether a frame waits for room below the high-water mark: requests do,
/// so that a slow peer slows its callers; replies, cancels and pings do not
/// (the reader stops reading instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    Required,
    Any,
}

/// How a frame should leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flush {
    /// Write it now on this task if nobody else is writing.
    Now,
    /// Let the writer task send it with whatever else queues meanwhile.
    Batched,
}

/// Whether a round that leaves the outbox empty lets go of it, in the same
/// pass through its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    WhenEmpty,
    Never,
}

/// What queueing a frame asks of the task that queued it.
#[derive(Debug)]
#[must_use]
pub(super) enum Then {
    /// Nothing: whoever writes picks the frame up before letting go.
    Nothing,
    /// This task holds the outbox now: write this batch, then the rounds
    /// that follow it.
    Write(BytesMut),
    /// This task holds the outbox now: write rounds until it is empty.
    WriteRounds,
    /// Wake the writer task.
    WakeWriter,
}

/// The next step of the task holding the outbox for writing.
#[derive(Debug)]
#[must_use]
pub(super) enum Round {
    /// Seal and write this batch.
    Write(BytesMut),
    /// Nothing is left (or the connection closed); wake as said.
    Done(Wake),
}

/// Whom to wake after a change, once the lock is released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) struct Wake {
    /// The writer task: it has a batch to send, or waits for a closing
    /// writer to finish.
    pub(super) writer: bool,
    /// Those waiting for room below the high-water mark.
    pub(super) room: bool,
}

/// What a complete write of a batch leaves.
#[derive(Debug)]
#[must_use]
pub(super) struct Wrote {
    /// Whether this task still holds the outbox (more was queued meanwhile,
    /// or it keeps it with `Release::Never`).
    pub(super) holding: bool,
    pub(super) wake: Wake,
}

/// What the writer task does next.
#[derive(Debug)]
#[must_use]
pub(super) enum TaskNext {
    /// The task holds the outbox: write this; `sealed` if it is the rest of
    /// an earlier batch.
    Write { batch: BytesMut, sealed: bool },
    /// Nothing for the task to write now.
    Wait,
    /// The connection is closed and nobody is writing: the rest of a batch
    /// (sealed) and the frames queued since are the last bytes.
    Finish { rest: BytesMut, fresh: BytesMut },
}

impl Outbox {
    pub(super) fn new() -> Self {
        Outbox {
            buf: BytesMut::with_capacity(8 * 1024),
            front: BytesMut::new(),
            spare: BytesMut::with_capacity(8 * 1024),
            writer: Writer::Nobody,
            closed: false,
            room_awaited: false,
            next_id: 1,
        }
    }

    #[inline]
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// No frame is queued from now on; what is queued is the last to go.
    pub(super) fn close(&mut self) {
        self.closed = true;
    }

    /// A fresh request id, greater than every one given before.
    #[inline]
    pub(super) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether there is room below the high-water mark. If not, the caller
    /// is taken to wait for room, which the next write then reports.
    #[inline]
    pub(super) fn room_or_wait(&mut self) -> bool {
        let room = self.buf.len() + self.front.len() < HIGH_WATER;
        self.room_awaited |= !room;
        room
    }

    /// Appends a frame with `encode` (given the buffer, returning how the
    /// frame should leave) and says what the queuing task does next.
    /// `Ok(None)`: `Room::Required` found the outbox over its high-water
    /// mark, and nothing was queued.
    #[inline]
    pub(super) fn queue<T>(
        &mut self,
        room: Room,
        encode: impl FnOnce(&mut Self) -> Result<(Flush, T), CallError>,
    ) -> Result<Option<(T, Then)>, CallError> {
        if self.closed {
            return Err(CallError::NotSent);
        }
        if room == Room::Required && !self.room_or_wait() {
            return Ok(None);
        }
        let (flush, queued) = encode(self)?;
        let then = match (self.writer, flush) {
            (Writer::Nobody, Flush::Now) => {
                // Taken in the same pass through the lock that queued it.
                self.writer = Writer::Inline;
                Then::Write(self.take_batch())
            }
            (Writer::Nobody, Flush::Batched) => {
                self.writer = Writer::Soon;
                Then::WakeWriter
            }
            (Writer::Soon, _) if self.buf.len() >= BATCH_BYTES => {
                // Enough for one write: send it now, so that the peer works
                // on these while the rest queue, rather than both sides
                // taking turns with one large batch.
                self.writer = Writer::Inline;
                Then::WriteRounds
            }
            _ => Then::Nothing,
        };
        Ok(Some((queued, then)))
    }

    /// Where frames are encoded, for `queue`'s `encode`.
    #[inline]
    pub(super) fn frames(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Takes the outbox for writing on this task if nobody is writing it:
    /// frames queued meanwhile just accumulate.
    #[inline]
    pub(super) fn cork(&mut self) -> bool {
        if self.writer == Writer::Nobody && !self.closed {
            self.writer = Writer::Inline;
            true
        } else {
            false
        }
    }

    /// Whether a batch's worth of frames is queued.
    #[inline]
    pub(super) fn batch_ready(&self) -> bool {
        self.buf.len() >= BATCH_BYTES
    }

    /// For the task holding the outbox: the next batch to write, or, when
    /// nothing is left, done (letting go with `Release::WhenEmpty`).
    #[inline]
    pub(super) fn next_round(&mut self, release: Release) -> Round {
        if self.buf.is_empty() || self.closed {
            let wake = match release {
                Release::WhenEmpty => self.let_go(),
                Release::Never => Wake::default(),
            };
            return Round::Done(wake);
        }
        Round::Write(self.take_batch())
    }

    /// The task holding the outbox wrote all of `batch`.
    #[inline]
    pub(super) fn wrote(&mut self, batch: BytesMut, release: Release) -> Wrote {
        let mut wake = Wake {
            room: self.recycle(batch),
            writer: false,
        };
        let holding = if release == Release::WhenEmpty && (self.buf.is_empty() || self.closed) {
            wake.writer = self.let_go().writer;
            false
        } else {
            true
        };
        Wrote { holding, wake }
    }

    /// The socket took only part of a batch: the writer task finishes it
    /// when the socket has room, and holds the outbox from now on.
    pub(super) fn socket_full(&mut self, rest: BytesMut) -> Wake {
        self.front = rest;
        self.writer = Writer::Task;
        Wake {
            writer: true,
            room: false,
        }
    }

    /// Writing failed: nobody holds the outbox (the connection closes).
    pub(super) fn write_failed(&mut self) {
        self.writer = Writer::Nobody;
    }

    /// An inline writer made its rounds and others keep queueing: the
    /// writer task takes over, so a caller does not write for everybody.
    pub(super) fn hand_to_task(&mut self) -> Wake {
        self.writer = Writer::Soon;
        Wake {
            writer: true,
            room: false,
        }
    }

    /// The writer task's next step.
    pub(super) fn next_for_task(&mut self) -> TaskNext {
        if self.writer == Writer::Soon {
            self.writer = Writer::Task;
        }
        match self.writer {
            Writer::Inline => TaskNext::Wait,
            Writer::Nobody if self.closed => {
                self.writer = Writer::Task;
                TaskNext::Finish {
                    rest: std::mem::take(&mut self.front),
                    fresh: std::mem::take(&mut self.buf),
                }
            }
            Writer::Nobody => TaskNext::Wait,
            Writer::Task if !self.front.is_empty() => TaskNext::Write {
                batch: std::mem::take(&mut self.front),
                sealed: true,
            },
            Writer::Task if !self.buf.is_empty() => TaskNext::Write {
                batch: self.take_batch(),
                sealed: false,
            },
            Writer::Task | Writer::Soon => {
                self.writer = Writer::Nobody;
                if self.closed {
                    TaskNext::Finish {
                        rest: BytesMut::new(),
                        fresh: BytesMut::new(),
                    }
                } else {
                    TaskNext::Wait
                }
            }
        }
    }

    /// The writer task wrote all of `batch`; true if someone waits for room.
    pub(super) fn task_wrote(&mut self, batch: BytesMut) -> bool {
        self.recycle(batch)
    }

    /// The queued frames, for writing; a spare buffer takes their place.
    #[inline]
    fn take_batch(&mut self) -> BytesMut {
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.buf, spare)
    }

    /// Keeps a written batch, emptied, as the spare; true if someone waits
    /// for room.
    #[inline]
    fn recycle(&mut self, mut batch: BytesMut) -> bool {
        wire::rewind(&mut batch);
        self.spare = batch;
        std::mem::take(&mut self.room_awaited)
    }

    /// Lets go of the outbox the calling task held for writing.
    #[inline]
    fn let_go(&mut self) -> Wake {
        self.writer = Writer::Nobody;
        // A closing writer task waits for us to finish.
        Wake {
            writer: self.closed,
            room: false,
        }
    }

    #[cfg(test)]
    pub(super) fn writer(&self) -> Writer {
        self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `len` bytes leaving as `flush`.
    fn queue(outbox: &mut Outbox, room: Room, flush: Flush, len: usize) -> Option<Then> {
        outbox
            .queue(room, |o| {
                o.frames().extend_from_slice(&vec![7; len]);
                Ok((flush, ()))
            })
            .expect("open")
            .map(|((), then)| then)
    }

    fn written(then: Option<Then>) -> BytesMut {
        match then {
            Some(Then::Write(batch)) => batch,
            other => panic!("expected a batch to write, got {other:?}"),
        }
    }

    #[test]
    fn a_lone_frame_is_written_by_the_task_that_queued_it() {
        let mut outbox = Outbox::new();
        let batch = written(queue(&mut outbox, Room::Required, Flush::Now, 10));
        assert_eq!(batch.len(), 10);
        assert_eq!(outbox.writer(), Writer::Inline);
        // Others queue while it writes; they are picked up in its next round.
        assert!(matches!(
            queue(&mut outbox, Room::Any, Flush::Now, 5),
            Some(Then::Nothing)
        ));
        let wrote = outbox.wrote(batch, Release::WhenEmpty);
        assert!(wrote.holding, "more was queued meanwhile");
        assert!(matches!(outbox.next_round(Release::WhenEmpty), Round::Write(b) if b.len() == 5));
        let wrote = outbox.wrote(BytesMut::new(), Release::WhenEmpty);
        assert!(!wrote.holding && wrote.wake == Wake::default());
        assert_eq!(outbox.writer(), Writer::Nobody);
    }

    #[test]
    fn batched_frames_go_to_the_writer_task_in_one_batch() {
        let mut outbox = Outbox::new();
        assert!(matches!(
            queue(&mut outbox, Room::Required, Flush::Batched, 10),
            Some(Then::WakeWriter)
        ));
        assert_eq!(outbox.writer(), Writer::Soon);
        for _ in 0..3 {
            assert!(matches!(
                queue(&mut outbox, Room::Required, Flush::Now, 10),
                Some(Then::Nothing)
            ));
        }
        match outbox.next_for_task() {
            TaskNext::Write { batch, sealed } => assert_eq!((batch.len(), sealed), (40, false)),
            other => panic!("{other:?}"),
        }
        assert_eq!(outbox.writer(), Writer::Task);
        assert!(!outbox.task_wrote(BytesMut::new()));
        assert!(matches!(outbox.next_for_task(), TaskNext::Wait));
        assert_eq!(outbox.writer(), Writer::Nobody, "the task lets go once empty");
    }

    #[test]
    fn a_kilobyte_queued_before_the_writer_task_wakes_is_written_by_the_next_sender() {
        let mut outbox = Outbox::new();
        let _ = queue(&mut outbox, Room::Required, Flush::Batched, 100);
        assert!(matches!(
            queue(&mut outbox, Room::Required, Flush::Batched, BATCH_BYTES - 200),
            Some(Then::Nothing)
        ));
        // Past the kilobyte: this sender writes.
        assert!(matches!(
            queue(&mut outbox, Room::Required, Flush::Batched, 100),
            Some(Then::WriteRounds)
        ));
        assert_eq!(outbox.writer(), Writer::Inline);
        assert!(
            matches!(outbox.next_for_task(), TaskNext::Wait),
            "the task stands aside"
        );
        assert!(matches!(outbox.next_round(Release::WhenEmpty), Round::Write(b) if b.len() == BATCH_BYTES));
    }

    #[test]
    fn a_full_socket_hands_the_rest_to_the_writer_task_which_sends_it_first() {
        let mut outbox = Outbox::new();
        let batch = written(queue(&mut outbox, Room::Required, Flush::Now, 10));
        let wake = outbox.socket_full(batch.clone());
        assert!(wake.writer);
        let _ = queue(&mut outbox, Room::Required, Flush::Now, 3);
        match outbox.next_for_task() {
            TaskNext::Write { batch, sealed } => assert_eq!((batch.len(), sealed), (10, true)),
            other => panic!("{other:?}"),
        }
        match outbox.next_for_task() {
            TaskNext::Write { batch, sealed } => assert_eq!((batch.len(), sealed), (3, false)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_wait_past_the_high_water_mark_and_replies_do_not() {
        let mut outbox = Outbox::new();
        assert!(outbox.cork(), "the reader holds it through a batch");
        let _ = queue(&mut outbox, Room::Any, Flush::Now, HIGH_WATER);
        assert!(
            queue(&mut outbox, Room::Required, Flush::Now, 10).is_none(),
            "a request waits"
        );
        assert!(
            queue(&mut outbox, Room::Any, Flush::Now, 10).is_some(),
            "a reply does not"
        );
        // The batch is taken: room again, and the waiter is told once.
        let Round::Write(batch) = outbox.next_round(Release::WhenEmpty) else {
            panic!("a batch")
        };
        assert!(outbox.room_or_wait());
        let wrote = outbox.wrote(batch, Release::WhenEmpty);
        assert!(wrote.wake.room, "someone waits for room");
        assert!(!outbox.task_wrote(BytesMut::new()), "told once");
    }

    #[test]
    fn room_is_reported_only_after_someone_found_none() {
        let mut outbox = Outbox::new();
        let batch = written(queue(&mut outbox, Room::Required, Flush::Now, 100));
        assert_eq!(outbox.wrote(batch, Release::WhenEmpty).wake, Wake::default());
        let _ = queue(&mut outbox, Room::Required, Flush::Batched, HIGH_WATER);
        assert!(!outbox.room_or_wait(), "full");
        let TaskNext::Write { batch, .. } = outbox.next_for_task() else {
            panic!("a batch")
        };
        assert!(outbox.task_wrote(batch));
    }

    #[test]
    fn an_inline_writer_that_keeps_the_outbox_writes_only_whole_batches() {
        let mut outbox = Outbox::new();
        assert!(outbox.cork());
        assert!(!outbox.cork(), "held once");
        let _ = queue(&mut outbox, Room::Any, Flush::Now, 10);
        assert!(!outbox.batch_ready());
        let _ = queue(&mut outbox, Room::Any, Flush::Now, BATCH_BYTES);
        assert!(outbox.batch_ready());
        let Round::Write(batch) = outbox.next_round(Release::Never) else {
            panic!("a batch")
        };
        assert!(outbox.wrote(batch, Release::Never).holding, "kept");
        assert!(matches!(outbox.next_round(Release::Never), Round::Done(_)));
        assert_eq!(outbox.writer(), Writer::Inline, "still held");
        assert!(matches!(outbox.next_round(Release::WhenEmpty), Round::Done(_)));
        assert_eq!(outbox.writer(), Writer::Nobody);
    }

    #[test]
    fn after_its_rounds_an_inline_writer_hands_over() {
        let mut outbox = Outbox::new();
        let _ = written(queue(&mut outbox, Room::Required, Flush::Now, 10));
        assert!(outbox.hand_to_task().writer);
        let _ = queue(&mut outbox, Room::Required, Flush::Now, 10);
        assert!(matches!(outbox.next_for_task(), TaskNext::Write { .. }));
    }

    #[test]
    fn a_closed_outbox_takes_nothing_and_its_last_frames_are_flushed_by_the_task() {
        let mut outbox = Outbox::new();
        let batch = written(queue(&mut outbox, Room::Required, Flush::Now, 10));
        let _ = queue(&mut outbox, Room::Any, Flush::Now, 4);
        outbox.close();
        assert!(matches!(
            outbox.queue(Room::Any, |_| Ok((Flush::Now, ()))),
            Err(CallError::NotSent)
        ));
        assert!(
            matches!(outbox.next_for_task(), TaskNext::Wait),
            "an inline writer holds it"
        );
        let wrote = outbox.wrote(batch, Release::WhenEmpty);
        assert!(!wrote.holding && wrote.wake.writer, "the closing writer task is woken");
        match outbox.next_for_task() {
            TaskNext::Finish { rest, fresh } => assert_eq!((rest.len(), fresh.len()), (0, 4)),
            other => panic!("{other:?}"),
        }
        assert!(!outbox.cork(), "nobody writes a closed outbox");
    }

    #[test]
    fn request_ids_grow() {
        let mut outbox = Outbox::new();
        let ids: Vec<u64> = (0..3).map(|_| outbox.next_id()).collect();
        assert_eq!(ids, [1, 2, 3]);
    }
}
