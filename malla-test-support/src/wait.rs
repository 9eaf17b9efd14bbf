//! Waiting for a condition, polled every 5 ms, without a timed assertion:
//! each returns whether (or how fast) it held, for the test to assert on.

use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(5);

/// Polls `done` until it holds or `limit` passes; returns whether it held.
/// For code outside async contexts.
pub fn wait_until_blocking(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    done()
}

/// Polls `done` until it holds or `limit` passes; returns how long it
/// took, or `None`.
pub async fn time_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    done().then(|| start.elapsed())
}

/// Whether `done` holds within `limit`.
pub async fn eventually(limit: Duration, done: impl FnMut() -> bool) -> bool {
    time_until(limit, done).await.is_some()
}
