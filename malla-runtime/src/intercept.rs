//! Call layers: interceptors on the caller's side, around a whole call and
//! around each of its attempts, and on the serving side, before a handler.
//!
//! They see a call's service, method, options, target and [`Metadata`],
//! never its decoded arguments, so one interceptor serves every service.
//! Their hooks are plain functions, as tonic's interceptors are: work that
//! must wait (fetching a token) belongs in a task that refreshes what the
//! hook reads.
//!
//! **Order.** A call runs the node's interceptors
//! ([`NodeBuilder::intercept`](crate::NodeBuilder::intercept)) in the order
//! installed, then the client's (`…Client::with_interceptor`), in the order
//! installed; the `after_*` hooks run in the reverse order, as layers
//! unwind. On the serving side the node's
//! ([`NodeBuilder::intercept_served`](crate::NodeBuilder::intercept_served))
//! run before the service's ([`ServeOptions::intercept`](crate::ServeOptions::intercept)),
//! and the first that refuses ends the request.
//!
//! **Cost.** With none installed nothing runs and nothing is allocated: a
//! stub still answers with one atomic load, a call takes the path it took
//! before interceptors existed.
//!
//! **And the failover rule.** An attempt refused by
//! [`Interceptor::before_attempt`] did not run: the call moves on to the next
//! node. A call refused by [`Interceptor::before_call`] ran nowhere. A
//! request refused by a server interceptor did not run either
//! ([`Error::Refused`], which [`Error::is_not_run`] counts), but the call
//! stops there: a node that refuses a caller is running the same rules as
//! its peers. [`AfterCall::Retry`] sends a call again only if it ran
//! nowhere or its method is idempotent, and never past its deadline.

mod budget;
mod hooks;
mod outliers;
pub(crate) mod served;

pub use budget::RetryBudget;
pub(crate) use hooks::Elapsed;
pub use hooks::{AfterCall, AttemptInfo, AttemptOutcome, CallInfo, CallOutcome, Decision, Interceptor};
pub use outliers::OutlierEjection;
