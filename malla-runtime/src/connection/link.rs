//! One authenticated connection to a peer: the calls it carries out, the
//! frames it queues, and how it retires and closes. What it runs for the
//! peer it reaches through [`Services`], and it tells its owner that it
//! closed through [`Host`]: it never sees the registry or the node.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::deadline::Deadline;
use super::pending::{PendingCalls, Reply, ReplyBody};
use super::running::RunningHandlers;
use super::transport::WriteHalf;
use crate::handshake::Identity;
use crate::invoke::Invocation;
use crate::sync::lock;
use crate::telemetry::TraceContext;
use crate::wire::{self, Format, FrameError, Goodbye, Header, RecordSealer, Status};

/// Outbox size above which callers wait for the writer before adding more.
pub(super) const HIGH_WATER: usize = 8 * 1024 * 1024;
/// Rounds an inline writer makes before leaving the rest to the writer task,
/// so a caller does not end up writing for everybody else.
const MAX_INLINE_ROUNDS: usize = 4;
/// Batched frames past which a sender writes them itself rather than wait
/// for the writer task.
const BATCH_BYTES: usize = 1024;

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Initiator {
    Us,
    Peer,
}

/// Why a connection closed.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The peer closed it (end of stream).
    PeerClosed,
    /// Reading or writing failed.
    Io(io::Error),
    /// The peer sent a frame we cannot read; we stop trusting the stream.
    BadFrame(String),
    /// Nothing arrived for several ticks: the peer is gone or partitioned.
    Silent(Duration),
    /// Both sides said goodbye: a duplicate retired, or a graceful leave.
    Goodbye,
    /// This node closed it (shutdown, or the peer was declared dead).
    Local(&'static str),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::BadFrame(why) => write!(f, "malformed frame: {why}"),
            CloseReason::Silent(d) => write!(f, "nothing received for {d:?}"),
            CloseReason::Goodbye => f.write_str("both sides said goodbye"),
            CloseReason::Local(why) => f.write_str(why),
        }
    }
}

/// Why a call on this connection has no reply.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The connection was closed or retired before the request was queued:
    /// it did not run.
    NotSent,
    /// The connection was lost while the request was in flight: it may have run.
    Lost,
    /// The deadline passed; a cancel was sent.
    TimedOut,
    /// The serving node answered with an error status.
    Remote(Status),
    /// The request is larger than the peer accepts; it was not sent.
    TooLarge(FrameError),
}

/// What the connection tells its owner about.
pub(crate) trait Host: Send + Sync + 'static {
    /// The connection closed; its pending calls have failed.
    fn connection_closed(&self, conn: &Arc<Connection>, reason: &CloseReason);
}

/// What a request asks for: a method of a service, with its arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: u32,
    /// The caller's idea of the method's signature; 0 skips the check.
    pub(crate) signature: u64,
    /// Encoding of the arguments and of the reply.
    pub(crate) format: Format,
    /// The encoded arguments.
    pub(crate) body: &'a [u8],
    /// The caller's trace context, if it has one.
    pub(crate) trace: Option<TraceContext>,
}

/// What a connection may run for its peer: the node's services, as a peer
/// may call them.
pub(crate) trait Services: Send + Sync + 'static {
    /// The service named `name`, if a peer may call it, or the status that
    /// answers its requests instead.
    ///
    /// A connection keeps what this returns for the next requests naming the
    /// same service (see `known`): what it returns must stay right as long
    /// as the node runs.
    fn find(&self, name: &str) -> Result<Arc<dyn ServedToPeers>, Status>;
}

/// A service a peer may call.
pub(crate) trait ServedToPeers: Send + Sync + 'static {
    /// Starts the method a request names, or says which status answers it
    /// instead.
    fn start(&self, request: Request<'_>) -> Result<Invocation, Status>;

    /// A request was refused as `Overloaded` before `start`: for the
    /// service's tallies.
    fn overloaded(&self);
}

/// Settings of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionConfig {
    /// Largest frame we accept.
    pub(crate) max_frame: usize,
    /// Interval of pings when idle; the peer is dead after `DEAD_TICKS`
    /// silent ticks.
    pub(crate) tick: Duration,
    /// Handlers that may run at once for the peer's requests; past it the
    /// answer is `Overloaded`.
    pub(crate) max_handlers: usize,
}

/// Silent ticks after which a peer is considered gone (Erlang's rule).
pub(crate) const DEAD_TICKS: u32 = 4;

/// A live connection to one peer.
pub(crate) struct Connection {
    pub(crate) peer: Identity,
    pub(crate) initiator: Initiator,
    pub(super) shared: Shared,
    host: Weak<dyn Host>,
    this: Weak<Connection>,
}

pub(super) struct Shared {
    pub(super) outbox: Mutex<Outbox>,
    pub(super) write_half: Box<dyn WriteHalf>,
    /// Seals what leaves, if the connection is sealed; only the party that
    /// holds the outbox for writing uses it, so it is never contended.
    sealer: Option<Mutex<RecordSealer>>,
    pub(super) wake_writer: Notify,
    pub(super) drained: Notify,
    pub(super) calls: Mutex<PendingCalls>,
    pub(super) running: RunningHandlers,
    next_id: AtomicU64,
    /// Bytes received, for the liveness check: a large frame arriving
    /// slowly is a live peer.
    pub(super) bytes_in: AtomicU64,
    /// The reader waits for the outbox to drain (see `wait_for_reply_room`).
    reader_paused: AtomicBool,
    /// The reader's last batch of input answered more than one call: the
    /// callers it woke are about to call again, so even the first of them
    /// leaves its request to the writer task, to go out with the others'.
    pub(super) answered_many: AtomicBool,
    closed: AtomicBool,
    // Set when this connection takes no new calls, with why (a duplicate that
    // lost the tie-break, or a leave); it closes once idle and both sides
    // have said goodbye.
    retired: Mutex<Option<Goodbye>>,
    usable: AtomicBool,
    goodbye_sent: AtomicBool,
    pub(super) goodbye_received: AtomicBool,
    reader: Mutex<Option<AbortHandle>>,
    pub(super) services: Arc<dyn Services>,
    pub(super) config: ConnectionConfig,
}

/// Frames waiting to be written, and who is writing them.
pub(super) struct Outbox {
    /// Queued frames, in order.
    pub(super) buf: BytesMut,
    /// The unwritten rest of an earlier batch; goes out before `buf`.
    pub(super) front: BytesMut,
    /// A cleared buffer kept for reuse.
    pub(super) spare: BytesMut,
    pub(super) writer: Writer,
    pub(super) closed: bool,
    /// Someone found no room and waits for `drained`: writes notify it only
    /// then, as `notify_waiters` takes a lock even when nobody waits.
    room_awaited: bool,
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
        }
    }

    /// The queued frames, for writing; a spare buffer takes their place.
    pub(super) fn take_batch(&mut self) -> BytesMut {
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.buf, spare)
    }

    /// Whether there is room below the high-water mark. If not, the caller
    /// is taken to wait for `drained`, which the next write then notifies.
    pub(super) fn room_or_wait(&mut self) -> bool {
        let room = self.buf.len() + self.front.len() < HIGH_WATER;
        self.room_awaited |= !room;
        room
    }

    /// A batch was written: `batch` is emptied and kept as the spare. True
    /// if someone waits for room, to be woken by `drained`.
    pub(super) fn wrote(&mut self, mut batch: BytesMut) -> bool {
        wire::rewind(&mut batch);
        self.spare = batch;
        std::mem::take(&mut self.room_awaited)
    }
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

/// Whether a frame waits for room below the outbox's high-water mark:
/// requests do, so that a slow peer slows its callers; replies, cancels and
/// pings do not (the reader stops reading instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Required,
    Any,
}

/// What one round of writing did.
enum Round {
    /// Wrote a batch; more was queued meanwhile.
    Wrote,
    /// Nothing is left to write (or the connection closed); with
    /// `Release::WhenEmpty` the outbox is let go.
    Empty,
    /// The outbox is no longer this task's to write.
    HandedOver,
}

/// Whether a round that leaves the outbox empty lets go of it, in the same
/// pass through its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    WhenEmpty,
    Never,
}

/// How a frame should leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Write it now on this task if nobody else is writing.
    Now,
    /// Let the writer task send it with whatever else queues meanwhile.
    Batched,
}

impl Connection {
    /// A connection over `write`, whose reader and writer tasks the caller
    /// starts (see `connection::spawn`).
    pub(super) fn new(
        write: Box<dyn WriteHalf>,
        sealer: Option<RecordSealer>,
        peer: Identity,
        initiator: Initiator,
        services: Arc<dyn Services>,
        host: Weak<dyn Host>,
        config: ConnectionConfig,
    ) -> Arc<Connection> {
        Arc::new_cyclic(|this| Connection {
            peer,
            initiator,
            shared: Shared {
                outbox: Mutex::new(Outbox::new()),
                write_half: write,
                sealer: sealer.map(Mutex::new),
                wake_writer: Notify::new(),
                drained: Notify::new(),
                calls: Mutex::new(PendingCalls::default()),
                running: RunningHandlers::default(),
                next_id: AtomicU64::new(1),
                bytes_in: AtomicU64::new(0),
                reader_paused: AtomicBool::new(false),
                answered_many: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                retired: Mutex::new(None),
                usable: AtomicBool::new(true),
                goodbye_sent: AtomicBool::new(false),
                goodbye_received: AtomicBool::new(false),
                reader: Mutex::new(None),
                services,
                config,
            },
            host,
            this: this.clone(),
        })
    }

    /// Records the reader task, which `close` aborts.
    pub(super) fn set_reader(&self, reader: AbortHandle) {
        *lock(&self.shared.reader) = Some(reader);
        // The connection may have closed before the handle was stored.
        if self.is_closed()
            && let Some(reader) = lock(&self.shared.reader).take()
        {
            reader.abort();
        }
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        self.shared.usable.load(Ordering::Acquire) && !self.is_closed()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Sends a request and waits for its reply until `deadline`; the peer
    /// is given the time left. Dropping the returned future before the reply
    /// sends a cancel.
    pub(crate) async fn call(&self, request: Request<'_>, mut deadline: Deadline) -> Result<ReplyBody, CallError> {
        if !self.is_usable() {
            return Err(CallError::NotSent);
        }
        let (id, rearm, alone) = loop {
            // Made before looking, so that a drain in between is not missed.
            let drained = self.shared.drained.notified();
            // The reply wakes this task: its slot gets the waker at once,
            // and `AwaitReply` is first polled in this same poll.
            let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
            let queued = self.queue_with(Room::Required, |out, max| {
                // Under the outbox's lock, so that ids leave in the order
                // they are given (the peer refuses one that does not grow).
                let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                let inserted = lock(&self.shared.calls).insert(id, waker, deadline.at());
                let header = Header::Request {
                    id,
                    service: request.service,
                    method: request.method,
                    signature: request.signature,
                    deadline_us: deadline.left().as_micros() as u64,
                    format: request.format,
                    trace: request.trace,
                };
                if let Err(err) = wire::encode(out, max, &header, request.body) {
                    lock(&self.shared.calls).cancel(id);
                    return Err(CallError::TooLarge(err));
                }
                // A lone call leaves at once; concurrent ones are batched.
                let lone = inserted.alone && !self.shared.answered_many.load(Ordering::Relaxed);
                let flush = if lone { Flush::Now } else { Flush::Batched };
                Ok((flush, (id, inserted.rearm, inserted.alone)))
            })?;
            if let Some(queued) = queued {
                break queued;
            }
            // The outbox is over its high-water mark (a slow peer): wait,
            // in a box, since a timer would double the size of every call.
            if Box::pin(tokio::time::timeout_at(deadline.at(), drained)).await.is_err() {
                return Err(CallError::TimedOut);
            }
            deadline = deadline.refreshed();
            if !self.is_usable() {
                return Err(CallError::NotSent);
            }
        };
        if alone && self.shared.reader_paused.load(Ordering::SeqCst) {
            // The reader stopped reading for want of room, when no call was
            // waiting: it must read this one's reply.
            self.shared.drained.notify_waiters();
        }
        if rearm {
            // The writer task sleeps past this deadline: wake it to re-arm.
            self.shared.wake_writer.notify_one();
        }
        let reply = AwaitReply {
            conn: self,
            id,
            first_poll: true,
            done: false,
        };
        match reply.await {
            Some(Reply::Value(bytes)) => Ok(bytes),
            Some(Reply::Status(status)) => Err(CallError::Remote(status)),
            Some(Reply::Expired) => Err(CallError::TimedOut),
            // The slot is gone: the connection closed.
            None => Err(CallError::Lost),
        }
    }

    /// Waits while the outbox is over its high-water mark; false if the
    /// connection closed meanwhile.
    ///
    /// It never waits while this node waits for replies from the peer: those
    /// replies are what the peer is busy sending, and two nodes each waiting
    /// for the other to read would both stall. A peer that only sends
    /// requests and reads nothing gets no call from us to answer, so it is
    /// still cut off.
    pub(super) async fn wait_for_reply_room(&self) -> bool {
        loop {
            let woken = self.shared.drained.notified();
            {
                let mut outbox = lock(&self.shared.outbox);
                if outbox.closed {
                    return false;
                }
                if outbox.room_or_wait() {
                    return true;
                }
            }
            // Said before looking at the calls, so that a call inserted
            // after the look sees it (both sides go through the calls' lock).
            self.shared.reader_paused.store(true, Ordering::SeqCst);
            if !lock(&self.shared.calls).is_empty() {
                self.shared.reader_paused.store(false, Ordering::SeqCst);
                return true;
            }
            // Woken when the outbox drains, or a call starts (see `call`).
            woken.await;
            self.shared.reader_paused.store(false, Ordering::SeqCst);
        }
    }

    /// Queues a frame that should leave now (replies, cancels, pings).
    pub(super) fn send(&self, header: &Header<'_>, body: &[u8]) -> Result<(), CallError> {
        self.queue_with(Room::Any, |out, max| {
            wire::encode(out, max, header, body).map_err(CallError::TooLarge)?;
            Ok((Flush::Now, ()))
        })
        .map(|_| ())
    }

    /// Appends a frame to the outbox with `encode` (given the buffer and the
    /// largest frame the peer takes), under the outbox's lock, and sees that
    /// it leaves as `encode` says; returns what `encode` returned with it.
    /// With `Room::Required`, queues nothing and returns `None` while the
    /// outbox is over its high-water mark.
    fn queue_with<T>(
        &self,
        room: Room,
        encode: impl FnOnce(&mut BytesMut, usize) -> Result<(Flush, T), CallError>,
    ) -> Result<Option<T>, CallError> {
        let max = self.peer.max_frame as usize;
        let mut outbox = lock(&self.shared.outbox);
        if outbox.closed {
            return Err(CallError::NotSent);
        }
        if room == Room::Required && !outbox.room_or_wait() {
            return Ok(None);
        }
        let (flush, queued) = encode(&mut outbox.buf, max)?;
        match (outbox.writer, flush) {
            (Writer::Nobody, Flush::Now) => {
                // Taken in the same pass through the lock that queued it.
                outbox.writer = Writer::Inline;
                let batch = outbox.take_batch();
                drop(outbox);
                self.write_inline_from(Some(batch));
            }
            (Writer::Nobody, Flush::Batched) => {
                outbox.writer = Writer::Soon;
                drop(outbox);
                self.shared.wake_writer.notify_one();
            }
            (Writer::Soon, _) if outbox.buf.len() >= BATCH_BYTES => {
                // Enough for one write: send it now, so that the peer works
                // on these while the rest queue, rather than both sides
                // taking turns with one large batch.
                outbox.writer = Writer::Inline;
                drop(outbox);
                self.write_inline();
            }
            // Whoever is writing picks the frame up before letting go.
            _ => {}
        }
        Ok(Some(queued))
    }

    /// Takes the outbox for writing on this task if nobody is writing it:
    /// frames queued meanwhile just accumulate. Release with `write_inline`.
    pub(super) fn cork(&self) -> bool {
        let mut outbox = lock(&self.shared.outbox);
        if outbox.writer == Writer::Nobody && !outbox.closed {
            outbox.writer = Writer::Inline;
            true
        } else {
            false
        }
    }

    /// Writes the outbox on this task, which holds it (`Writer::Inline`),
    /// until it is empty; leaves the rest to the writer task if the socket is
    /// full or others keep queueing.
    pub(super) fn write_inline(&self) {
        self.write_inline_from(None);
    }

    /// `write_inline`, starting with a batch already taken from the outbox.
    fn write_inline_from(&self, mut taken: Option<BytesMut>) {
        for _ in 0..MAX_INLINE_ROUNDS {
            let round = match taken.take() {
                Some(batch) => self.write_batch(batch, Release::WhenEmpty),
                None => self.write_round(Release::WhenEmpty),
            };
            match round {
                Round::Wrote => {}
                Round::Empty | Round::HandedOver => return,
            }
        }
        lock(&self.shared.outbox).writer = Writer::Soon;
        self.shared.wake_writer.notify_one();
    }

    /// Lets go of the outbox this task held for writing.
    fn let_go(&self, outbox: &mut Outbox) {
        outbox.writer = Writer::Nobody;
        if outbox.closed {
            // The writer task waits for us to finish closing.
            self.shared.wake_writer.notify_one();
        }
    }

    /// For a task that holds the outbox (`Writer::Inline`) and keeps it:
    /// writes what is queued if that is a batch's worth. False if the
    /// outbox went to the writer task meanwhile (the socket was full or the
    /// connection failed): the task holds it no longer.
    pub(super) fn write_if_batch(&self) -> bool {
        if lock(&self.shared.outbox).buf.len() < BATCH_BYTES {
            return true;
        }
        !matches!(self.write_round(Release::Never), Round::HandedOver)
    }

    /// Takes what is queued and writes it, for the task holding the outbox.
    fn write_round(&self, release: Release) -> Round {
        let batch = {
            let mut outbox = lock(&self.shared.outbox);
            if outbox.buf.is_empty() || outbox.closed {
                if release == Release::WhenEmpty {
                    self.let_go(&mut outbox);
                }
                return Round::Empty;
            }
            outbox.take_batch()
        };
        self.write_batch(batch, release)
    }

    /// Seals and writes a batch taken from the outbox by the task holding it.
    fn write_batch(&self, mut batch: BytesMut, release: Release) -> Round {
        let written = self.seal(&mut batch).and_then(|()| self.try_write_all(&mut batch));
        match written {
            Ok(true) => {
                let mut outbox = lock(&self.shared.outbox);
                let awaited = outbox.wrote(batch);
                let round = if release == Release::WhenEmpty && (outbox.buf.is_empty() || outbox.closed) {
                    self.let_go(&mut outbox);
                    Round::Empty
                } else {
                    Round::Wrote
                };
                drop(outbox);
                if awaited {
                    self.shared.drained.notify_waiters();
                }
                round
            }
            Ok(false) => {
                // The socket is full: the writer task waits for room.
                let mut outbox = lock(&self.shared.outbox);
                outbox.front = batch;
                outbox.writer = Writer::Task;
                drop(outbox);
                self.shared.wake_writer.notify_one();
                Round::HandedOver
            }
            Err(err) => {
                lock(&self.shared.outbox).writer = Writer::Nobody;
                self.close(CloseReason::Io(err));
                Round::HandedOver
            }
        }
    }

    /// Seals a batch of frames just taken from the outbox into records, if
    /// the connection is sealed. Batches are sealed in the order they are
    /// taken, by whoever holds the outbox for writing.
    pub(super) fn seal(&self, batch: &mut BytesMut) -> io::Result<()> {
        match &self.shared.sealer {
            Some(sealer) => lock(sealer).seal(batch).map_err(io::Error::other),
            None => Ok(()),
        }
    }

    /// Writes as much of `batch` as the socket takes now; true if all of it.
    pub(super) fn try_write_all(&self, batch: &mut BytesMut) -> io::Result<bool> {
        while batch.has_remaining() {
            match self.shared.write_half.try_write(batch) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => batch.advance(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// Marks the connection as taking no new calls; it closes once both sides
    /// are idle and have said goodbye.
    pub(crate) fn retire(&self, why: Goodbye) {
        {
            let mut retired = lock(&self.shared.retired);
            if retired.is_none() {
                *retired = Some(why);
                self.shared.usable.store(false, Ordering::Release);
                tracing::debug!(peer = %self.peer.name, ?why, "retiring connection");
            }
        }
        self.settle();
    }

    /// Called whenever the connection may have become idle.
    pub(super) fn settle(&self) {
        // Called after every reply: a connection in use is not retired,
        // which one load tells without the lock. (`retire` clears `usable`
        // after setting `retired`, then settles itself.)
        if self.shared.usable.load(Ordering::Acquire) {
            return;
        }
        let Some(why) = *lock(&self.shared.retired) else {
            return;
        };
        if self.is_closed() {
            return;
        }
        let idle = lock(&self.shared.calls).is_empty() && self.shared.running.is_empty();
        if !idle {
            return;
        }
        if !self.shared.goodbye_sent.swap(true, Ordering::AcqRel) {
            let _ = self.send(&Header::Goodbye(why), &[]);
        }
        if self.shared.goodbye_received.load(Ordering::Acquire) {
            self.close(CloseReason::Goodbye);
        }
    }

    /// Closes the connection: pending calls fail with `Lost`, running
    /// handlers are aborted, the writer flushes what is queued and shuts the
    /// stream down, and the host is told.
    pub(crate) fn close(&self, reason: CloseReason) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.shared.outbox).closed = true;
        // Every waiting caller wakes to find its slot gone: `Lost`.
        let waiting = lock(&self.shared.calls).close();
        waiting.into_iter().for_each(Waker::wake);
        self.shared.running.abort_all();
        self.shared.wake_writer.notify_one();
        self.shared.drained.notify_waiters();
        if let Some(reader) = lock(&self.shared.reader).as_ref() {
            reader.abort();
        }
        match &reason {
            CloseReason::Goodbye | CloseReason::Local(_) => {
                tracing::debug!(peer = %self.peer.name, %reason, "connection closed")
            }
            _ => tracing::info!(peer = %self.peer.name, %reason, "connection closed"),
        }
        if let (Some(host), Some(this)) = (self.host.upgrade(), self.this.upgrade()) {
            host.connection_closed(&this, &reason);
        }
    }

    /// Expires the calls whose deadline has passed; returns when the writer
    /// task must wake next for them.
    pub(super) fn expire_calls(&self, now: Instant) -> Option<Instant> {
        let (expired, next) = lock(&self.shared.calls).expire(now);
        for (id, waker) in expired {
            waker.wake();
            let _ = self.send(&Header::Cancel { id }, &[]);
        }
        if !self.is_closed() {
            self.settle();
        }
        next
    }

    /// Records when the writer task will next wake, so callers with an
    /// earlier deadline know to wake it.
    pub(super) fn arm(&self, at: Instant) {
        lock(&self.shared.calls).arm(at);
    }

    /// Number of calls waiting for a reply on this connection.
    pub(crate) fn pending_calls(&self) -> usize {
        lock(&self.shared.calls).len()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(reader) = lock(&self.shared.reader).take() {
            reader.abort();
        }
        self.shared.write_half.shutdown();
    }
}

/// A request waiting for its reply, in its slot of the pending calls;
/// `None` if the connection closed first. Cancels the request on the peer
/// if dropped first.
struct AwaitReply<'a> {
    conn: &'a Connection,
    id: u64,
    /// The slot was given this task's waker in the same poll that first
    /// polls this, so that poll need not look: a reply that came meanwhile
    /// has woken the task already.
    first_poll: bool,
    done: bool,
}

impl Future for AwaitReply<'_> {
    type Output = Option<Reply>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Reply>> {
        if std::mem::take(&mut self.first_poll) {
            return Poll::Pending;
        }
        let reply = lock(&self.conn.shared.calls).poll_reply(self.id, cx.waker());
        self.done = reply.is_ready();
        reply
    }
}

impl Drop for AwaitReply<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let was_pending = lock(&self.conn.shared.calls).cancel(self.id);
        if was_pending {
            let _ = self.conn.send(&Header::Cancel { id: self.id }, &[]);
        }
        self.conn.settle();
    }
}
