//! The rare branches of the call path, boxed out of line so that the common
//! path's future and stack frame do not carry them.

use std::future::Future;
use std::pin::Pin;

/// A boxed future of the call path's.
pub(super) type Boxed<'s, T> = Pin<Box<dyn Future<Output = T> + Send + 's>>;

/// The future `build` makes, built straight into its box, out of line. The
/// call path's rare branches (layers, spans, remote and dispatched attempts,
/// named calls) go through it: built inline, each would be laid out on the
/// stack of the common path's function and copied into its box, and keep
/// that function from being inlined.
#[inline(never)]
pub(super) fn boxed<'s, F: Future + Send + 's>(build: impl FnOnce() -> F) -> Boxed<'s, F::Output> {
    Box::pin(build())
}
