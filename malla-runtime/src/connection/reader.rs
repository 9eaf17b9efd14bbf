//! The read half: frames in, replies routed to their callers, requests run.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::{CallError, CloseReason, Connection, Reply, lock};
use crate::client::panic_message;
use crate::registry::MethodLookup;
use crate::service::{DispatchError, DispatchFuture, Format};
use crate::wire::{self, FrameCodec, Goodbye, Header, Status, WireFormat};

/// Free space below which the read buffer grows before the next read.
const MIN_READ_SPACE: usize = 4 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Longest deadline a peer may ask for; bounds the arithmetic on its value.
const MAX_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

type HandlerOutput = std::thread::Result<Result<Vec<u8>, DispatchError>>;

pub(super) async fn run<R: AsyncRead + Unpin>(conn: Arc<Connection>, mut io: R, mut buf: BytesMut) {
    let mut codec = FrameCodec::new(conn.shared.config.max_frame);
    let reason = loop {
        // Hold the outbox while working through the batch: replies pile up
        // and leave in one write.
        let corked = conn.cork();
        let handled = read_frames(&conn, &mut codec, &mut buf).await;
        if corked {
            conn.write_inline();
        }
        if let Err(reason) = handled {
            break reason;
        }
        if buf.capacity() - buf.len() < MIN_READ_SPACE {
            buf.reserve(READ_CHUNK);
        }
        match io.read_buf(&mut buf).await {
            Ok(0) => break CloseReason::PeerClosed,
            Ok(_) => {}
            Err(err) => break CloseReason::Io(err),
        }
    };
    conn.close(reason);
}

/// Handles every complete frame in `buf`. Replies to requests that finish at
/// once accumulate in the outbox and leave in one write when the reader next
/// waits for input.
async fn read_frames(conn: &Arc<Connection>, codec: &mut FrameCodec, buf: &mut BytesMut) -> Result<(), CloseReason> {
    loop {
        let frame = match codec.decode(buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(err) => return Err(CloseReason::BadFrame(err.to_string())),
        };
        conn.shared.frames_in.fetch_add(1, Ordering::Relaxed);
        let (header, body) =
            wire::decode(&frame).map_err(|e| CloseReason::BadFrame(format!("undecodable header: {e}")))?;
        match header {
            Header::Response { id, status } => conn.complete(id, status, body),
            Header::Request {
                id,
                service,
                method,
                signature,
                deadline_us,
                format,
            } => {
                let deadline = Duration::from_micros(deadline_us).min(MAX_DEADLINE);
                serve(conn, id, service, method, signature, deadline, format, body).await;
            }
            Header::Cancel { id } => conn.cancel_handler(id),
            Header::Ping => {}
            Header::Goodbye(why) => conn.goodbye_received(why),
        }
    }
}

/// Runs one request. The handler is polled once right here: most finish
/// at once and need no task; the others get one, bounded by the deadline.
#[allow(clippy::too_many_arguments)] // the fields of one request header
async fn serve(
    conn: &Arc<Connection>,
    id: u64,
    service: &str,
    method: u32,
    signature: u64,
    deadline: Duration,
    format: WireFormat,
    body: Bytes,
) {
    let handler = match conn.dispatch(service, method, signature, format, &body) {
        Ok(handler) => handler,
        Err(status) => return conn.respond(id, status),
    };
    let mut handler = AssertUnwindSafe(handler).catch_unwind();
    match poll_fn(|cx| Poll::Ready(Pin::new(&mut handler).poll(cx))).await {
        Poll::Ready(output) => conn.reply(id, output),
        Poll::Pending => conn.spawn_handler(id, handler, deadline),
    }
}

impl Connection {
    /// Finds and starts the handler a request names, or the status that
    /// answers it instead.
    fn dispatch(
        &self,
        service: &str,
        method: u32,
        signature: u64,
        format: WireFormat,
        body: &[u8],
    ) -> Result<DispatchFuture, Status> {
        let local = self.shared.registry.local(service).ok_or(Status::NotAvailable)?;
        // Services that are not global are served to their own node only.
        if !local.manifest.is_global() || !local.is_active() {
            return Err(Status::NotAvailable);
        }
        let index = match local.lookup(method, signature) {
            MethodLookup::Found(index) => index,
            MethodLookup::Unknown => return Err(Status::UnknownMethod),
            MethodLookup::Mismatch => return Err(Status::SignatureMismatch),
        };
        let format = match format {
            WireFormat::Postcard => Format::Postcard,
            WireFormat::Json => Format::Json,
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| local.service.dispatch(index, format, body))) {
            Ok(Ok(handler)) => Ok(handler),
            Ok(Err(err)) => Err(Status::BadRequest(err.to_string())),
            Err(panic) => Err(Status::Failed(panic_message(&*panic))),
        }
    }

    fn spawn_handler(
        self: &Arc<Self>,
        id: u64,
        handler: impl Future<Output = HandlerOutput> + Send + 'static,
        deadline: Duration,
    ) {
        let deadline = Instant::now().checked_add(deadline).unwrap_or_else(Instant::now);
        let conn = Arc::clone(self);
        // Held across the spawn so the task cannot remove its entry before
        // it is inserted.
        let mut running = lock(&self.shared.running);
        let task = tokio::spawn(async move {
            let outcome = tokio::time::timeout_at(deadline, handler).await;
            lock(&conn.shared.running).remove(&id);
            match outcome {
                Ok(output) => conn.reply(id, output),
                Err(_) => conn.respond(id, Status::Timeout),
            }
            conn.settle();
        });
        running.insert(id, task.abort_handle());
    }

    fn reply(&self, id: u64, output: HandlerOutput) {
        match output {
            Ok(Ok(bytes)) => {
                if let Err(CallError::TooLarge(err)) = self.send(&Header::Response { id, status: Status::Ok }, &bytes) {
                    self.respond(id, Status::Failed(format!("the reply does not fit in a frame: {err}")));
                }
            }
            Ok(Err(err)) => self.respond(id, Status::Failed(err.to_string())),
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::warn!(peer = %self.peer.name, %message, "request handler panicked");
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

    fn complete(&self, id: u64, status: Status, body: Bytes) {
        let waiter = lock(&self.shared.calls).take(id);
        // No waiter: the caller gave up (timeout or drop) before the reply.
        if let Some(waiter) = waiter {
            let _ = waiter.send(match status {
                Status::Ok => Reply::Value(body),
                other => Reply::Status(other),
            });
        }
        self.settle();
    }

    fn cancel_handler(&self, id: u64) {
        if let Some(handler) = lock(&self.shared.running).remove(&id) {
            handler.abort();
        }
        self.settle();
    }

    fn goodbye_received(&self, why: Goodbye) {
        self.shared.goodbye_received.store(true, Ordering::Release);
        match why {
            // The peer is going: stop calling it now.
            Goodbye::Leaving => self.retire(Goodbye::Leaving),
            // The peer dropped a duplicate; we drop it when we adopt the
            // other connection ourselves, which may not have happened yet.
            Goodbye::Duplicate => self.settle(),
        }
    }
}
