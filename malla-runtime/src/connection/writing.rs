//! Driving the outbox on the tasks that queue frames (a lone caller, the
//! reader): a frame that should leave now is written at once by the task
//! that queued it when nobody else is writing; a full socket or a long run
//! of rounds hands the rest to the writer task.

use bytes::BytesMut;

use super::errors::{CallError, CloseReason};
use super::link::Connection;
use super::outbox::{Flush, Outbox, Release, Room, Round, Then};
use crate::wire::{self, Header};

/// Rounds an inline writer makes before leaving the rest to the writer task,
/// so a caller does not end up writing for everybody else.
const MAX_INLINE_ROUNDS: usize = 4;

impl Connection {
    /// Queues a frame that should leave now (replies, cancels, pings).
    pub(super) fn send(&self, header: &Header<'_>, body: &[u8]) -> Result<(), CallError> {
        self.queue_with(Room::Any, |outbox, max| {
            wire::encode(outbox.frames(), max, header, body).map_err(CallError::TooLarge)?;
            Ok((Flush::Now, ()))
        })
        .map(|_| ())
    }

    /// Appends a frame to the outbox with `encode` (given the outbox and the
    /// largest frame the peer takes), under the outbox's lock, and sees that
    /// it leaves as `encode` says; returns what `encode` returned with it.
    /// With `Room::Required`, queues nothing and returns `None` while the
    /// outbox is over its high-water mark.
    pub(super) fn queue_with<T>(
        &self,
        room: Room,
        encode: impl FnOnce(&mut Outbox, usize) -> Result<(Flush, T), CallError>,
    ) -> Result<Option<T>, CallError> {
        let max = self.peer.max_frame as usize;
        let mut outbox = self.out.outbox();
        let Some((queued, then)) = outbox.queue(room, |outbox| encode(outbox, max))? else {
            return Ok(None);
        };
        drop(outbox);
        match then {
            Then::Nothing => {}
            Then::Write(batch) => self.write_inline_from(Some(batch)),
            Then::WriteRounds => self.write_inline(),
            Then::WakeWriter => self.out.wake_writer.notify_one(),
        }
        Ok(Some(queued))
    }

    /// Takes the outbox for writing on this task if nobody is writing it:
    /// frames queued meanwhile just accumulate. Release with `write_inline`.
    pub(super) fn cork(&self) -> bool {
        self.out.outbox().cork()
    }

    /// Writes the outbox on this task, which holds it, until it is empty;
    /// leaves the rest to the writer task if the socket is full or others
    /// keep queueing.
    pub(super) fn write_inline(&self) {
        self.write_inline_from(None);
    }

    /// `write_inline`, starting with a batch already taken from the outbox.
    fn write_inline_from(&self, mut taken: Option<BytesMut>) {
        for _ in 0..MAX_INLINE_ROUNDS {
            let batch = match taken.take() {
                Some(batch) => batch,
                None => match self.out.outbox().next_round(Release::WhenEmpty) {
                    Round::Write(batch) => batch,
                    Round::Done(wake) => return self.out.wake(wake),
                },
            };
            if !self.write_batch(batch, Release::WhenEmpty) {
                return;
            }
        }
        let wake = self.out.outbox().hand_to_task();
        self.out.wake(wake);
    }

    /// For a task that holds the outbox and keeps it: writes what is queued
    /// if that is a batch's worth. False if the outbox went to the writer
    /// task meanwhile (the socket was full or the connection failed): the
    /// task holds it no longer.
    pub(super) fn write_if_batch(&self) -> bool {
        let batch = {
            let mut outbox = self.out.outbox();
            if !outbox.batch_ready() {
                return true;
            }
            match outbox.next_round(Release::Never) {
                Round::Write(batch) => batch,
                Round::Done(_) => return true,
            }
        };
        self.write_batch(batch, Release::Never)
    }

    /// Seals and writes a batch taken from the outbox by the task holding
    /// it; true if the task still holds the outbox afterwards.
    fn write_batch(&self, mut batch: BytesMut, release: Release) -> bool {
        let written = self
            .out
            .seal(&mut batch)
            .and_then(|()| self.out.try_write_all(&mut batch));
        match written {
            Ok(true) => {
                let wrote = self.out.outbox().wrote(batch, release);
                self.out.wake(wrote.wake);
                wrote.holding
            }
            Ok(false) => {
                // The socket is full: the writer task waits for room.
                let wake = self.out.outbox().socket_full(batch);
                self.out.wake(wake);
                false
            }
            Err(err) => {
                self.out.outbox().write_failed();
                self.close(CloseReason::Io(err));
                false
            }
        }
    }
}
