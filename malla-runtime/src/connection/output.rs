//! The write side of a connection: the outbox (`outbox.rs`) with the socket
//! it drains into, the sealer, and the two wake-ups.

use std::io;
use std::sync::{Mutex, MutexGuard};

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;

use super::outbox::{Outbox, Wake};
use super::transport::WriteHalf;
use crate::sync::lock;
use crate::wire::RecordSealer;

/// The outbox and where it goes.
pub(super) struct Output {
    outbox: Mutex<Outbox>,
    pub(super) half: Box<dyn WriteHalf>,
    /// Seals what leaves, if the connection is sealed; only the party that
    /// holds the outbox for writing uses it, so it is never contended.
    sealer: Option<Mutex<RecordSealer>>,
    /// The writer task waits on it for work.
    pub(super) wake_writer: Notify,
    /// Callers (and the reader) wait on it for room below the high-water
    /// mark, and the reader for a call to start when it paused.
    pub(super) drained: Notify,
}

impl Output {
    pub(super) fn new(half: Box<dyn WriteHalf>, sealer: Option<RecordSealer>) -> Self {
        Output {
            outbox: Mutex::new(Outbox::new()),
            half,
            sealer: sealer.map(Mutex::new),
            wake_writer: Notify::new(),
            drained: Notify::new(),
        }
    }

    #[inline]
    pub(super) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    /// Wakes whom a change of the outbox asks for.
    #[inline]
    pub(super) fn wake(&self, wake: Wake) {
        if wake.writer {
            self.wake_writer.notify_one();
        }
        if wake.room {
            self.drained.notify_waiters();
        }
    }

    /// Seals a batch of frames just taken from the outbox into records, if
    /// the connection is sealed. Batches are sealed in the order they are
    /// taken, by whoever holds the outbox for writing.
    pub(super) fn seal(&self, batch: &mut BytesMut) -> io::Result<()> {
        match &self.sealer {
            Some(sealer) => lock(sealer).seal(batch).map_err(io::Error::other),
            None => Ok(()),
        }
    }

    /// Records sealed so far (0 if not sealed).
    #[cfg(test)]
    pub(super) fn records_sealed(&self) -> u64 {
        self.sealer.as_ref().map_or(0, |sealer| lock(sealer).sealed())
    }

    /// Writes as much of `batch` as the socket takes now; true if all of it.
    pub(super) fn try_write_all(&self, batch: &mut BytesMut) -> io::Result<bool> {
        while batch.has_remaining() {
            match self.half.try_write(batch) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => batch.advance(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }
}
