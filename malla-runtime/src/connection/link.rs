//! One authenticated connection to a peer: its parts, the calls it carries
//! out, and how it retires and closes. What it runs for the peer it reaches
//! through [`Services`], and it reports its end as a [`LinkEvent`]: it never
//! sees the registry or the node.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::deadline::Deadline;
use super::errors::{CallError, CloseReason};
use super::events::{LinkEvent, LinkEvents};
use super::lifecycle::Lifecycle;
use super::outbox::{Flush, Room};
use super::output::Output;
use super::pending::{PendingCalls, Reply, ReplyBody};
use super::running::RunningHandlers;
use super::serving::{Request, Services};
use super::transport::WriteHalf;
use crate::handshake::Identity;
use crate::sync::lock;
use crate::wire::{self, Goodbye, Header, RecordSealer};

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Initiator {
    Us,
    Peer,
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
    /// The outbox and the socket it drains into.
    pub(super) out: Output,
    /// Our calls waiting for the peer's replies.
    pub(super) calls: Mutex<PendingCalls>,
    /// Handlers running for the peer's requests.
    pub(super) running: RunningHandlers,
    pub(super) input: InputState,
    life: Lifecycle,
    reader: Mutex<Option<AbortHandle>>,
    pub(super) services: Arc<dyn Services>,
    pub(super) config: ConnectionConfig,
    events: Arc<LinkEvents<Connection>>,
    this: Weak<Connection>,
}

/// What the reader shares with the rest of the connection.
#[derive(Default)]
pub(super) struct InputState {
    /// Bytes received, for the liveness check: a large frame arriving
    /// slowly is a live peer.
    pub(super) bytes_in: AtomicU64,
    /// The reader waits for the outbox to drain (see `wait_for_reply_room`).
    pub(super) paused: AtomicBool,
    /// The reader's last batch of input answered more than one call: the
    /// callers it woke are about to call again, so even the first of them
    /// leaves its request to the writer task, to go out with the others'.
    pub(super) answered_many: AtomicBool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer.name)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
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
        events: Arc<LinkEvents<Connection>>,
        config: ConnectionConfig,
    ) -> Arc<Connection> {
        Arc::new_cyclic(|this| Connection {
            peer,
            initiator,
            out: Output::new(write, sealer),
            calls: Mutex::new(PendingCalls::default()),
            running: RunningHandlers::default(),
            input: InputState::default(),
            life: Lifecycle::default(),
            reader: Mutex::new(None),
            services,
            config,
            events,
            this: this.clone(),
        })
    }

    /// Records the reader task, which `close` aborts.
    pub(super) fn set_reader(&self, reader: AbortHandle) {
        *lock(&self.reader) = Some(reader);
        // The connection may have closed before the handle was stored.
        if self.is_closed()
            && let Some(reader) = lock(&self.reader).take()
        {
            reader.abort();
        }
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        self.life.is_usable()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.life.is_closed()
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
            let drained = self.out.drained.notified();
            // The reply wakes this task: its slot gets the waker at once,
            // and `AwaitReply` is first polled in this same poll.
            let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
            let queued = self.queue_with(Room::Required, |outbox, max| {
                let id = outbox.next_id();
                let inserted = lock(&self.calls).insert(id, waker, deadline.at());
                let header = Header::Request {
                    id,
                    service: request.service,
                    method: request.method,
                    signature: request.signature,
                    deadline_us: deadline.left().as_micros() as u64,
                    format: request.format,
                    trace: request.trace,
                    metadata: request.metadata,
                };
                if let Err(err) = wire::encode(outbox.frames(), max, &header, request.body) {
                    lock(&self.calls).cancel(id);
                    return Err(CallError::TooLarge(err));
                }
                // A lone call leaves at once; concurrent ones are batched.
                let lone = inserted.alone && !self.input.answered_many.load(Ordering::Relaxed);
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
        if alone && self.input.paused.load(Ordering::SeqCst) {
            // The reader stopped reading for want of room, when no call was
            // waiting: it must read this one's reply.
            self.out.drained.notify_waiters();
        }
        if rearm {
            // The writer task sleeps past this deadline: wake it to re-arm.
            self.out.wake_writer.notify_one();
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

    /// Marks the connection as taking no new calls; it closes once both sides
    /// are idle and have said goodbye.
    pub(crate) fn retire(&self, why: Goodbye) {
        if self.life.retire(why) {
            tracing::debug!(peer = %self.peer.name, ?why, "retiring connection");
        }
        self.settle();
    }

    /// The peer said goodbye.
    pub(super) fn goodbye_received(&self, why: Goodbye) {
        self.life.goodbye_received();
        match why {
            // The peer is going: stop calling it now.
            Goodbye::Leaving => self.retire(Goodbye::Leaving),
            // The peer dropped a duplicate; we drop it when we adopt the
            // other connection ourselves, which may not have happened yet.
            Goodbye::Duplicate => self.settle(),
        }
    }

    /// Called whenever the connection may have become idle: a retired one
    /// says goodbye once nothing waits on the peer and nothing runs for it,
    /// and closes once both sides have.
    pub(super) fn settle(&self) {
        let settle = self
            .life
            .settle(|| lock(&self.calls).awaiting() == 0 && self.running.is_empty());
        if let Some(why) = settle.goodbye {
            let _ = self.send(&Header::Goodbye(why), &[]);
        }
        if settle.close {
            self.close(CloseReason::Goodbye);
        }
    }

    /// Closes the connection: pending calls fail with `Lost`, running
    /// handlers are aborted, the writer flushes what is queued and shuts the
    /// stream down, and the close is posted as a [`LinkEvent`].
    pub(crate) fn close(&self, reason: CloseReason) {
        if !self.life.close() {
            return;
        }
        self.out.outbox().close();
        // Every waiting caller wakes to find its slot gone: `Lost`.
        let waiting = lock(&self.calls).close();
        waiting.into_iter().for_each(Waker::wake);
        self.running.abort_all();
        self.out.wake_writer.notify_one();
        self.out.drained.notify_waiters();
        if let Some(reader) = lock(&self.reader).as_ref() {
            reader.abort();
        }
        match &reason {
            CloseReason::Goodbye | CloseReason::Local(_) => {
                tracing::debug!(peer = %self.peer.name, %reason, "connection closed")
            }
            _ => tracing::info!(peer = %self.peer.name, %reason, "connection closed"),
        }
        if let Some(this) = self.this.upgrade() {
            self.events.post(LinkEvent::Closed(this, reason));
        }
    }

    /// Expires the calls whose deadline has passed; returns when the writer
    /// task must wake next for them.
    pub(super) fn expire_calls(&self, now: Instant) -> Option<Instant> {
        let (expired, next) = lock(&self.calls).expire(now);
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
        lock(&self.calls).arm(at);
    }

    /// Calls waiting for a reply on this connection.
    pub(crate) fn pending_calls(&self) -> usize {
        lock(&self.calls).awaiting()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(reader) = lock(&self.reader).take() {
            reader.abort();
        }
        self.out.half.shutdown();
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
        let reply = lock(&self.conn.calls).poll_reply(self.id, cx.waker());
        self.done = reply.is_ready();
        reply
    }
}

impl Drop for AwaitReply<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let was_pending = lock(&self.conn.calls).cancel(self.id);
        if was_pending {
            let _ = self.conn.send(&Header::Cancel { id: self.id }, &[]);
        }
        self.conn.settle();
    }
}
