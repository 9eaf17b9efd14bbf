//! One call from start to finish: walk the targets in `get_nodes` order, try
//! each, and move on only as the failover rule allows (Malla's `remote/4`,
//! made safer).

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::args::CallArgs;
use super::deadline::with_deadline;
use super::failover::{Filter, Target, Targets, least_loaded, may_try_next, no_node_ran, pick_failure};
use super::remote::{Remote, RemoteError};
use crate::connection::{CallError, Deadline, Request};
use crate::invoke::{InvokeError, panic_message};
use crate::registry::{LocalService, Refusal, ServiceSlot};
use crate::telemetry::TraceContext;
use crate::telemetry::counters;
use crate::telemetry::metrics::ClientMethod;
use crate::telemetry::spans;
use crate::wire::{Format, Status};
use crate::{Balance, CallOptions, Error, MethodManifest, NodeId};

pub(crate) struct Call<'a, N> {
    pub(crate) remote: &'a N,
    pub(crate) slot: &'a ServiceSlot,
    pub(crate) service: Cow<'static, str>,
    pub(crate) method: &'a MethodManifest,
    pub(crate) options: &'a CallOptions,
    /// Encoding of arguments and reply (JSON for tools only).
    pub(crate) format: Format,
    /// The method's metric handles.
    pub(crate) metrics: &'a ClientMethod,
}

/// What a call did, for its span and metrics.
#[derive(Default)]
struct Tally {
    attempts: u32,
    /// Why the last attempt did not run, until the next one starts.
    not_run: Option<&'static str>,
}

/// The result of one attempt.
enum Attempt<R> {
    /// The call ran (or may have run): this is its answer.
    Done(Result<R, Error>),
    /// The call did not run there; the next node may be tried.
    NotRun(Error),
}

impl<N: Remote> Call<'_, N> {
    pub(crate) async fn run<R, A: CallArgs<R>>(self, mut args: A) -> Result<R, Error> {
        if spans::wanted() {
            // Spans live across the call's awaits: boxed, so that a call
            // nobody traces keeps the small future it had without them.
            return Box::pin(self.run_traced(args)).await;
        }
        let started = Instant::now();
        let mut tally = Tally::default();
        let result = self.attempts(&mut args, None, &mut tally, started).await;
        self.finish(None, &tally, &result, started);
        result
    }

    async fn run_traced<R, A: CallArgs<R>>(&self, mut args: A) -> Result<R, Error> {
        let span = spans::call(&self.service, self.method.name());
        let span = (!span.is_disabled()).then_some(&span);
        let started = Instant::now();
        let mut tally = Tally::default();
        let result = self.attempts(&mut args, span, &mut tally, started).await;
        self.finish(span, &tally, &result, started);
        result
    }

    /// The call's span, metrics and counters, once it has its answer.
    fn finish<R>(&self, span: Option<&Span>, tally: &Tally, result: &Result<R, Error>, started: Instant) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) => {
                counters::bump(&self.slot.counters.errors);
                err.outcome()
            }
        };
        if let Some(span) = span {
            span.record("attempts", i64::from(tally.attempts));
            span.record("outcome", outcome);
        }
        self.metrics.finished(outcome, tally.attempts, started.into_std());
        self.slot.counters.calls.bump();
    }

    async fn attempts<R, A: CallArgs<R>>(
        &self,
        args: &mut A,
        span: Option<&Span>,
        tally: &mut Tally,
        started: Instant,
    ) -> Result<R, Error> {
        let timeout = self.options.effective_timeout(self.method.timeout_ms());
        let deadline = started + timeout;
        let mut failure: Option<Error> = None;
        let vsn = self.options.vsn.as_deref();
        if let Some(requirement) = vsn {
            requirement.parsed()?;
        }
        let filter = Filter {
            vsn,
            method: self.method.id(),
            signature: self.method.signature(),
        };

        // The call's first attempt counts the time its request is given from
        // the call's start; later ones read the clock again.
        let mut clock = Some(started);
        for round in 0..=self.options.sna_retries {
            if round > 0 {
                let wake = (Instant::now() + self.options.effective_retry_interval()).min(deadline);
                // Boxed: a timer in every call's future would make it larger
                // for the sake of calls that retry.
                Box::pin(tokio::time::sleep_until(wake)).await;
                if Instant::now() >= deadline {
                    return Err(self.timeout_error(timeout));
                }
            }
            let route = self.slot.route_full();
            let start = match self.options.balance {
                Balance::LocalFirst => 0,
                Balance::RoundRobin => self.slot.next_turn(),
                Balance::LeastLoaded => least_loaded(&route, filter, |node| self.remote.in_flight(node)),
            };
            let mut targets =
                Targets::new(self.remote.me(), &route, self.options.nodes.as_deref(), filter).starting_at(start);
            for target in targets.by_ref() {
                if let Some(reason) = tally.not_run.take() {
                    self.metrics.failover(reason);
                    counters::bump(&self.slot.counters.failovers);
                }
                tally.attempts += 1;
                let deadline = Deadline::counted_from(clock.take().unwrap_or_else(Instant::now), deadline);
                let attempt = match (target, span) {
                    (Target::Local(local), None) => self.attempt_local(&local, args, deadline.at(), timeout).await,
                    (Target::Remote(node), None) => self.attempt_remote(node, args, deadline, timeout, None).await,
                    (target, Some(span)) => {
                        let attempt = self.attempt_traced(target, span, tally.attempts, args, deadline, timeout);
                        Box::pin(attempt).await
                    }
                };
                match attempt {
                    Attempt::Done(result) => return result,
                    Attempt::NotRun(err) => {
                        tally.not_run = Some(err.outcome());
                        failure = Some(pick_failure(failure, err));
                    }
                }
            }
            // Skipped before sending, it still says more than "not
            // available": the caller was built from another version.
            if let Some(node) = targets.mismatched() {
                failure = Some(pick_failure(failure, self.signature_mismatch(node.clone())));
            }
        }
        Err(no_node_ran(failure, self.options.nodes.is_some(), || {
            self.not_available()
        }))
    }

    /// An attempt inside its span, a child of the call's `span`; a remote
    /// one carries the span's trace context.
    async fn attempt_traced<R, A: CallArgs<R>>(
        &self,
        target: Target,
        span: &Span,
        number: u32,
        args: &mut A,
        deadline: Deadline,
        timeout: Duration,
    ) -> Attempt<R> {
        let node = match &target {
            Target::Local(_) => self.remote.me().clone(),
            Target::Remote(node) => node.clone(),
        };
        let attempt_span = spans::attempt(span, node.as_str(), number);
        let attempt = match target {
            Target::Local(local) => {
                self.attempt_local(&local, args, deadline.at(), timeout)
                    .instrument(attempt_span.clone())
                    .await
            }
            Target::Remote(node) => {
                let trace = spans::context_of(&attempt_span);
                self.attempt_remote(node, args, deadline, timeout, trace)
                    .instrument(attempt_span.clone())
                    .await
            }
        };
        let outcome = match &attempt {
            Attempt::Done(Ok(_)) => "ok",
            Attempt::Done(Err(err)) | Attempt::NotRun(err) => err.outcome(),
        };
        attempt_span.record("outcome", outcome);
        if let Attempt::Done(_) = attempt {
            span.record("node", node.as_str());
        }
        attempt
    }

    async fn attempt_local<R, A: CallArgs<R>>(
        &self,
        local: &Arc<LocalService>,
        args: &mut A,
        deadline: Instant,
        timeout: Duration,
    ) -> Attempt<R> {
        let me = self.remote.me();
        let index = match local.accept(self.method.id(), self.method.signature()) {
            Ok(index) => index,
            Err(Refusal::NotAvailable) => {
                return Attempt::NotRun(self.not_available());
            }
            Err(Refusal::UnknownMethod | Refusal::SignatureMismatch) => {
                return Attempt::NotRun(self.signature_mismatch(me.clone()));
            }
        };

        // Same trait on both sides: call the implementation directly.
        if let Some(fut) = local.typed.as_ref().and_then(|h| args.call_direct(h)) {
            return Attempt::Done(
                match with_deadline(AssertUnwindSafe(fut).catch_unwind(), deadline).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(panic)) => Err(self.remote_error(me.clone(), panic_message(&*panic))),
                    Err(_) => Err(self.timeout_error(timeout)),
                },
            );
        }

        // A stub or a dynamic call reaching a local service: the dispatcher
        // runs it as it would a remote node's request, minus the network.
        let body = match args.encoded() {
            Ok(body) => body,
            Err(message) => return Attempt::Done(Err(self.codec_error("encode the arguments of", message))),
        };
        let invocation = match local.invoke(index, self.format, body, None) {
            Ok(invocation) => invocation,
            Err(err) => return Attempt::Done(Err(self.invoke_error(me.clone(), err))),
        };
        let reply = match with_deadline(invocation, deadline).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => return Attempt::Done(Err(self.invoke_error(me.clone(), err))),
            Err(_) => return Attempt::Done(Err(self.timeout_error(timeout))),
        };
        Attempt::Done(self.decode(args, &reply))
    }

    async fn attempt_remote<R, A: CallArgs<R>>(
        &self,
        node: NodeId,
        args: &mut A,
        deadline: Deadline,
        timeout: Duration,
        trace: Option<TraceContext>,
    ) -> Attempt<R> {
        let body = match args.encoded() {
            Ok(body) => body,
            Err(message) => return Attempt::Done(Err(self.codec_error("encode the arguments of", message))),
        };
        let request = Request {
            service: &self.service,
            method: self.method.id(),
            signature: self.method.signature(),
            format: self.format,
            body,
            trace,
        };
        match self.remote.call(&node, request, deadline).await {
            Ok(bytes) => Attempt::Done(self.decode(args, &bytes)),
            Err(failure) => {
                let again = may_try_next(&failure, self.method.is_idempotent());
                let err = self.remote_failure(node, failure, timeout);
                if again {
                    Attempt::NotRun(err)
                } else {
                    Attempt::Done(Err(err))
                }
            }
        }
    }

    fn decode<R, A: CallArgs<R>>(&self, args: &mut A, reply: &[u8]) -> Result<R, Error> {
        args.decode(reply)
            .map_err(|message| self.codec_error("decode the reply of", message))
    }

    /// The error a failed remote attempt reports.
    fn remote_failure(&self, node: NodeId, failure: RemoteError, timeout: Duration) -> Error {
        match failure {
            RemoteError::Unreachable | RemoteError::Call(CallError::NotSent | CallError::Lost) => {
                Error::NodeDown { node }
            }
            RemoteError::Call(CallError::TimedOut) => self.timeout_error(timeout),
            RemoteError::Call(CallError::TooLarge(err)) => self.codec_error("send", err.to_string()),
            RemoteError::Call(CallError::Remote(status)) => match status {
                Status::NotAvailable => self.not_available(),
                Status::UnknownMethod | Status::SignatureMismatch => self.signature_mismatch(node),
                Status::Timeout => self.timeout_error(timeout),
                Status::Overloaded => Error::Overloaded {
                    service: self.service.clone(),
                    node,
                },
                Status::BadRequest(message) => self.invoke_error(node, InvokeError::BadRequest(message)),
                Status::Failed(message) => self.invoke_error(node, InvokeError::Failed(message)),
                Status::Ok => self.remote_error(node, "empty reply".into()),
            },
        }
    }

    /// The error of a handler that did not reply, here or on `node`.
    fn invoke_error(&self, node: NodeId, err: InvokeError) -> Error {
        match err {
            InvokeError::BadRequest(message) => self.remote_error(node, format!("bad request: {message}")),
            InvokeError::Failed(message) => self.remote_error(node, message),
        }
    }

    /// `ServiceNotAvailable`, naming the call's version requirement if any.
    fn not_available(&self) -> Error {
        Error::ServiceNotAvailable {
            service: self.service.clone(),
            requirement: self.options.vsn.as_ref().map(|r| r.text().to_owned()),
        }
    }

    fn codec_error(&self, action: &str, message: String) -> Error {
        Error::Codec {
            what: format!("{action} `{}.{}`", self.service, self.method.name()),
            message,
        }
    }

    fn timeout_error(&self, timeout: Duration) -> Error {
        Error::Timeout {
            service: self.service.clone(),
            method: self.method.name_cow(),
            timeout,
        }
    }

    fn signature_mismatch(&self, node: NodeId) -> Error {
        Error::SignatureMismatch {
            service: self.service.clone(),
            method: self.method.name_cow(),
            node,
        }
    }

    fn remote_error(&self, node: NodeId, message: String) -> Error {
        Error::Remote {
            service: self.service.clone(),
            method: self.method.name_cow(),
            node,
            message,
        }
    }
}

#[cfg(test)]
mod tests;
