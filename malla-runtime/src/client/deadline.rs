//! Deadlines that cost nothing when the work is already done.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use tokio::time::{Instant, error::Elapsed};

/// Runs `fut` until `deadline`. The first poll happens before any timer is
/// armed, so a future that is ready at once (most local calls) never touches
/// the timer wheel and needs no tokio runtime. The timer is boxed: it is
/// only for the local calls that wait, and inline it would make every
/// call's future larger.
pub(crate) async fn with_deadline<F: Future>(fut: F, deadline: Instant) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut);
    if let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(out);
    }
    Box::pin(tokio::time::timeout_at(deadline, fut)).await
}
