//! The writer task: writes the outbox when the socket was full or calls are
//! batched; on its one timer, expires calls past their deadline, pings when
//! idle and closes the connection when the peer has been silent for
//! `DEAD_TICKS` ticks; shuts the stream down at the end.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::time::{Instant, Sleep};

use super::errors::CloseReason;
use super::link::{Connection, DEAD_TICKS};
use super::outbox::TaskNext;
use crate::sync::lock;
use crate::wire::Header;

/// How long a closing connection may take to flush its last frames.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

pub(super) async fn run(conn: Arc<Connection>) {
    // If the runtime drops this task (the node's runtime shut down, as in a
    // crash), hang up at once so the peer sees the end of the stream.
    let _hang_up = HangUpOnDrop(&conn);
    let mut clock = Clock::new(&conn);
    let timer = tokio::time::sleep_until(clock.next_wake());
    tokio::pin!(timer);

    loop {
        let next = conn.out.outbox().next_for_task();
        match next {
            TaskNext::Write { mut batch, sealed } => {
                if !sealed && let Err(err) = conn.out.seal(&mut batch) {
                    conn.close(CloseReason::Io(err));
                    return;
                }
                if write(&conn, &mut batch, &mut clock, timer.as_mut()).await.is_err() {
                    return;
                }
                if conn.out.outbox().task_wrote(batch) {
                    conn.out.drained.notify_waiters();
                }
                clock.wrote = true;
            }
            TaskNext::Wait => {
                clock.arm(&conn, timer.as_mut());
                tokio::select! {
                    () = conn.out.wake_writer.notified() => {
                        // Whoever woke us runs among other callers woken by the
                        // same burst of replies; tokio would run this task
                        // right after it (the LIFO slot) and send one request
                        // per write. Going to the back of the queue lets the
                        // whole burst queue first and leave in one write.
                        tokio::task::yield_now().await;
                    }
                    () = &mut timer => clock.fire(&conn),
                }
            }
            TaskNext::Finish { rest, fresh } => return finish(&conn, rest, fresh).await,
        }
    }
}

/// Writes `batch`, waiting for room in the socket; the timer keeps running
/// meanwhile, so deadlines expire and a partitioned peer is still noticed.
async fn write(
    conn: &Connection,
    batch: &mut BytesMut,
    clock: &mut Clock,
    mut timer: Pin<&mut Sleep>,
) -> Result<(), ()> {
    let half = &conn.out.half;
    while batch.has_remaining() {
        clock.arm(conn, timer.as_mut());
        tokio::select! {
            ready = poll_fn(|cx| half.poll_writable(cx)) => {
                let written = ready.and_then(|()| conn.out.try_write_all(batch));
                if let Err(err) = written {
                    conn.close(CloseReason::Io(err));
                    return Err(());
                }
            }
            () = &mut timer => {
                clock.fire(conn);
                if conn.is_closed() {
                    return Err(());
                }
            }
        }
    }
    Ok(())
}

/// Flushes the last bytes (replies, a goodbye) within a grace period, then
/// shuts the stream down.
async fn finish(conn: &Connection, mut last: BytesMut, mut fresh: BytesMut) {
    if conn.out.seal(&mut fresh).is_ok() {
        last.extend_from_slice(&fresh);
    }
    let half = &conn.out.half;
    let _ = tokio::time::timeout(FLUSH_GRACE, async {
        while last.has_remaining() {
            poll_fn(|cx| half.poll_writable(cx)).await?;
            conn.out.try_write_all(&mut last)?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    half.shutdown();
}

struct HangUpOnDrop<'a>(&'a Connection);

impl Drop for HangUpOnDrop<'_> {
    fn drop(&mut self) {
        self.0.out.half.shutdown();
    }
}

/// The writer's one timer: the next liveness tick, or the earliest call
/// deadline if that comes first.
struct Clock {
    tick: Duration,
    next_tick: Instant,
    next_deadline: Option<Instant>,
    bytes_seen: u64,
    silent_ticks: u32,
    wrote: bool,
}

impl Clock {
    fn new(conn: &Connection) -> Self {
        let tick = conn.config.tick;
        Clock {
            tick,
            next_tick: on_the_grid(Instant::now(), tick),
            next_deadline: None,
            bytes_seen: 0,
            silent_ticks: 0,
            wrote: false,
        }
    }

    fn next_wake(&self) -> Instant {
        self.next_deadline.map_or(self.next_tick, |d| d.min(self.next_tick))
    }

    /// Points the timer at the next wake-up, including calls queued since.
    fn arm(&mut self, conn: &Connection, timer: Pin<&mut Sleep>) {
        self.next_deadline = lock(&conn.calls).earliest();
        let at = self.next_wake();
        if timer.deadline() != at {
            timer.reset(at);
        }
        conn.arm(at);
    }

    fn fire(&mut self, conn: &Connection) {
        let now = Instant::now();
        self.next_deadline = conn.expire_calls(now);
        if now >= self.next_tick {
            self.next_tick = on_the_grid(now, self.tick);
            self.liveness(conn);
        }
    }

    fn liveness(&mut self, conn: &Connection) {
        let bytes = conn.input.bytes_in.load(Ordering::Relaxed);
        if bytes == self.bytes_seen {
            self.silent_ticks += 1;
            if self.silent_ticks >= DEAD_TICKS {
                conn.close(CloseReason::Silent(self.tick * DEAD_TICKS));
                return;
            }
        } else {
            self.bytes_seen = bytes;
            self.silent_ticks = 0;
        }
        if !self.wrote {
            let _ = conn.send(&Header::Ping, &[]);
        }
        self.wrote = false;
    }
}

/// The next instant after `now` at which the wall clock is a whole number of
/// `tick`s since the Unix epoch.
///
/// Every connection of every node ticks on the same grid, so a node's pings
/// leave together and its peers' arrive together: a node with a hundred
/// idle connections wakes a few times per tick instead of twice per
/// connection, which is most of what an idle node otherwise spends. Nodes
/// whose clocks disagree only batch less; liveness is unaffected, since a
/// tick still comes every `tick`.
fn on_the_grid(now: Instant, tick: Duration) -> Instant {
    let tick_ns = tick.as_nanos().max(1);
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let to_next = tick_ns - since_epoch % tick_ns;
    now + Duration::from_nanos(u64::try_from(to_next).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    /// Ticks land on the wall clock's grid, whenever they are asked for.
    #[test]
    fn ticks_fall_on_the_wall_clock_grid() {
        let tick = Duration::from_millis(100);
        for _ in 0..5 {
            let now = Instant::now();
            let next = on_the_grid(now, tick);
            assert!(next > now && next <= now + tick, "{:?}", next - now);
            let wall = SystemTime::now() + (next - Instant::now());
            let phase = wall.duration_since(UNIX_EPOCH).unwrap().as_nanos() % tick.as_nanos();
            let off = phase.min(tick.as_nanos() - phase);
            assert!(off < Duration::from_millis(2).as_nanos(), "{off} ns off the grid");
            std::thread::sleep(Duration::from_millis(37));
        }
    }
}
