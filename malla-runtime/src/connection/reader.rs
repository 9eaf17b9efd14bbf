//! The read half: frames in, replies routed to their callers, requests run.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::errors::{CallError, CloseReason};
use super::known::KnownServices;
use super::link::Connection;
use super::pending::{INLINE_REPLY, Reply, ReplyBody};
use super::serving::{Caller, Request};
use crate::invoke::{InvokeError, InvokeOutput};
use crate::options::bounded;
use crate::sync::lock;
use crate::wire::{self, FrameCodec, Header, LEN_PREFIX, RecordError, RecordOpener, Status, reply_buffers};

/// Free space below which the read buffer grows before the next read.
const MIN_READ_SPACE: usize = 4 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// Reads until the connection closes. `received` holds what the handshake
/// read past its end; with `opener`, the bytes are sealed records.
pub(super) async fn run<R: AsyncRead + Unpin>(
    conn: Arc<Connection>,
    mut io: R,
    received: BytesMut,
    opener: Option<RecordOpener>,
) {
    let mut codec = FrameCodec::new(conn.config.max_frame);
    let mut input = Input {
        received,
        plain: BytesMut::new(),
        opener,
    };
    let mut last_request = 0;
    let mut known = KnownServices::default();
    let reason = loop {
        let mut cork = Cork::Untried;
        let handled = match input.frames() {
            Ok(frames) => {
                let state = ReadState {
                    codec: &mut codec,
                    last_request: &mut last_request,
                    known: &mut known,
                    cork: &mut cork,
                };
                read_frames(&conn, frames, state).await
            }
            Err(err) => Err(CloseReason::BadFrame(err.to_string())),
        };
        if let Ok(1) = handled {
            conn.input.answered_many.store(false, Ordering::Relaxed);
        }
        if cork == Cork::Held {
            conn.write_inline();
        }
        if let Err(reason) = handled {
            break reason;
        }
        // A peer that sends requests but does not read the replies stops
        // being read (unless this node waits for its replies): its replies
        // wait, not pile up. If it never reads, nothing arrives any more and
        // liveness closes the connection.
        if !conn.wait_for_reply_room().await {
            break CloseReason::Local("closed while replies waited");
        }
        input.rewind_emptied();
        let buf = &mut input.received;
        if buf.capacity() - buf.len() < MIN_READ_SPACE {
            buf.reserve(READ_CHUNK);
        }
        match io.read_buf(buf).await {
            Ok(0) => break CloseReason::PeerClosed,
            Ok(n) => {
                conn.input.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(err) => break CloseReason::Io(err),
        }
    };
    conn.close(reason);
}

/// What the reader received: plain frames, or sealed records and the frames
/// opened from them.
struct Input {
    received: BytesMut,
    plain: BytesMut,
    opener: Option<RecordOpener>,
}

impl Input {
    /// Starts the emptied buffers over at the front of their memory, where
    /// the last frames were: still in cache.
    fn rewind_emptied(&mut self) {
        for buf in [&mut self.received, &mut self.plain] {
            if buf.is_empty() {
                wire::rewind(buf);
            }
        }
    }

    /// The frames received so far, opening the complete records first.
    fn frames(&mut self) -> Result<&mut BytesMut, RecordError> {
        match &mut self.opener {
            None => Ok(&mut self.received),
            Some(opener) => {
                opener.open(&mut self.received, &mut self.plain)?;
                Ok(&mut self.plain)
            }
        }
    }
}

/// What the reader keeps from one batch of frames to the next.
struct ReadState<'a> {
    codec: &'a mut FrameCodec,
    /// The id of the last request: each must be greater, so that one id
    /// never names two requests.
    last_request: &'a mut u64,
    known: &'a mut KnownServices,
    cork: &'a mut Cork,
}

/// Whether the reader holds the outbox through a batch of frames, so that
/// the replies to the batch's requests pile up and leave a kilobyte at a
/// time, the rest when the batch is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cork {
    /// No request with frames behind it yet: a batch of replies to our
    /// calls has nothing to hold (and the callers they wake run only once
    /// the reader is done with it), and a lone request's reply is best
    /// written at once.
    Untried,
    /// This task holds the outbox (`Connection::cork`).
    Held,
    /// Someone else writes it: replies leave as they come.
    Refused,
}

/// Handles every complete frame in `buf`; returns how many of our calls it
/// answered. Replies to requests that finish at once accumulate in the
/// outbox; while the reader holds it each kilobyte of them leaves as soon
/// as it is there, and the rest when the batch is done.
async fn read_frames(conn: &Arc<Connection>, buf: &mut BytesMut, state: ReadState<'_>) -> Result<usize, CloseReason> {
    let ReadState {
        codec,
        last_request,
        known,
        cork,
    } = state;
    let mut answered = 0;
    loop {
        let len = match codec.complete(buf) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(answered),
            Err(err) => return Err(CloseReason::BadFrame(err.to_string())),
        };
        // Frames are read where they lie; the buffer moves past each once
        // it is handled.
        let mut consumed = LEN_PREFIX + len;
        let (header, body) = wire::decode(&buf[LEN_PREFIX..consumed])
            .map_err(|e| CloseReason::BadFrame(format!("undecodable header: {e}")))?;
        match header {
            Header::Response { id, status } => {
                answered += 1;
                if answered == 2 {
                    // Before the second caller wakes, so that it sees it.
                    conn.input.answered_many.store(true, Ordering::Relaxed);
                }
                // A small reply is copied out; a large one is split off, so
                // that the caller shares its memory.
                let reply = if body.len() <= INLINE_REPLY {
                    ReplyBody::copied(body)
                } else {
                    let body_len = body.len();
                    buf.advance(consumed - body_len);
                    consumed = 0;
                    buf.split_to(body_len).freeze().into()
                };
                conn.complete(id, status, reply);
            }
            Header::Request {
                id,
                service,
                method,
                signature,
                deadline_us,
                format,
                trace,
                metadata,
            } => {
                if id <= *last_request {
                    let why = format!("request id {id} after {last_request}: ids must grow");
                    return Err(CloseReason::BadFrame(why));
                }
                *last_request = id;
                let deadline = bounded(Duration::from_micros(deadline_us));
                let request = Request {
                    service,
                    method,
                    signature,
                    format,
                    body,
                    trace,
                    metadata,
                };
                // Held only when more frames follow: a lone request's reply
                // leaves as soon as it is queued.
                if *cork == Cork::Untried && buf.len() > consumed {
                    *cork = if conn.cork() { Cork::Held } else { Cork::Refused };
                }
                serve(conn, known, id, request, deadline).await;
                // A batch's worth of replies leaves now, so that the peer
                // works on them while we answer the rest.
                if *cork == Cork::Held && !conn.write_if_batch() {
                    *cork = Cork::Refused;
                }
            }
            Header::Cancel { id } => conn.cancel_handler(id),
            Header::Ping => {}
            Header::Goodbye(why) => conn.goodbye_received(why),
        }
        buf.advance(consumed);
    }
}

/// Runs request `id`. The handler is polled once right here: most finish
/// at once and need no task; the others get one, bounded by the deadline.
async fn serve(conn: &Arc<Connection>, known: &mut KnownServices, id: u64, request: Request<'_>, deadline: Duration) {
    let service = match known.get(&*conn.services, request.service) {
        Ok(service) => service,
        Err(status) => return conn.respond(id, status),
    };
    // Past the limit, refuse before running anything: the caller fails over.
    if conn.running.len() >= conn.config.max_handlers {
        service.overloaded();
        return conn.respond(id, Status::Overloaded);
    }
    let caller = Caller {
        node: &conn.peer.name,
        hidden: conn.peer.hidden,
    };
    let mut handler = match service.start(caller, request) {
        Ok(handler) => handler,
        Err(status) => return conn.respond(id, status),
    };
    match poll_fn(|cx| Poll::Ready(Pin::new(&mut handler).poll(cx))).await {
        Poll::Ready(output) => conn.reply(id, output),
        Poll::Pending => conn.spawn_handler(id, handler, deadline),
    }
}

impl Connection {
    fn spawn_handler(
        self: &Arc<Self>,
        id: u64,
        handler: impl Future<Output = InvokeOutput> + Send + 'static,
        deadline: Duration,
    ) {
        let deadline = Instant::now().checked_add(deadline).unwrap_or_else(Instant::now);
        let conn = Arc::clone(self);
        self.running.start(id, || {
            let task = tokio::spawn(async move {
                let outcome = tokio::time::timeout_at(deadline, handler).await;
                conn.running.finish(id);
                match outcome {
                    Ok(output) => conn.reply(id, output),
                    Err(_) => conn.respond(id, Status::Timeout),
                }
                conn.settle();
            });
            task.abort_handle()
        });
    }

    fn reply(&self, id: u64, output: InvokeOutput) {
        match output {
            Ok(bytes) => {
                let sent = self.send(&Header::Response { id, status: Status::Ok }, &bytes);
                reply_buffers::give_back(bytes);
                if let Err(CallError::TooLarge(err)) = sent {
                    self.respond(id, Status::Failed(format!("the reply does not fit in a frame: {err}")));
                }
            }
            Err(InvokeError::BadRequest(message)) => self.respond(id, Status::BadRequest(message)),
            Err(InvokeError::NotAvailable) => self.respond(id, Status::NotAvailable),
            Err(InvokeError::Failed(message)) => {
                tracing::warn!(peer = %self.peer.name, %message, "request handler failed");
                self.respond(id, Status::Failed(message));
            }
        }
    }

    fn respond(&self, id: u64, status: Status) {
        if let Err(CallError::TooLarge(_)) = self.send(&Header::Response { id, status }, &[]) {
            // The message itself is too long for the peer: say less.
            let _ = self.send(
                &Header::Response {
                    id,
                    status: Status::Failed("reply too large".into()),
                },
                &[],
            );
        }
    }

    fn complete(&self, id: u64, status: Status, body: ReplyBody) {
        let waker = lock(&self.calls).answer(id, Reply::new(status, body));
        // None: the caller gave up (timeout or drop) before the reply.
        if let Some(waker) = waker {
            waker.wake();
        }
        self.settle();
    }

    fn cancel_handler(&self, id: u64) {
        self.running.cancel(id);
        self.settle();
    }

    /// Waits while the outbox is over its high-water mark; false if the
    /// connection closed meanwhile.
    ///
    /// It never waits while this node waits for replies from the peer: those
    /// replies are what the peer is busy sending, and two nodes each waiting
    /// for the other to read would both stall. A peer that only sends
    /// requests and reads nothing gets no call from us to answer, so it is
    /// still cut off.
    async fn wait_for_reply_room(&self) -> bool {
        loop {
            let woken = self.out.drained.notified();
            {
                let mut outbox = self.out.outbox();
                if outbox.is_closed() {
                    return false;
                }
                if outbox.room_or_wait() {
                    return true;
                }
            }
            // Said before looking at the calls, so that a call inserted
            // after the look sees it (both sides go through the calls' lock).
            self.input.paused.store(true, Ordering::SeqCst);
            if lock(&self.calls).awaiting() > 0 {
                self.input.paused.store(false, Ordering::SeqCst);
                return true;
            }
            // Woken when the outbox drains, or a call starts (see `call`).
            woken.await;
            self.input.paused.store(false, Ordering::SeqCst);
        }
    }
}
