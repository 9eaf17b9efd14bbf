//! One call from start to finish: walk the targets in `get_nodes` order, try
//! each, and move on only as the failover rule allows (Malla's `remote/4`,
//! made safer).

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Span;

use super::args::CallArgs;
use super::boxed::boxed;
use super::failover::{AttemptTarget, Filter, Outcome, Targets, least_loaded, no_node_ran, pick_failure};
use super::remote::Remote;
use crate::connection::Deadline;
use crate::invoke::InvokeError;
use crate::registry::ServiceSlot;
use crate::telemetry::counters;
use crate::telemetry::metrics::ClientMethod;
use crate::telemetry::spans;
use crate::wire::Format;
use crate::{Balance, CallOptions, Error, Interceptor, Metadata, MethodManifest, NodeId};

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
    /// Client interceptors and the metadata they set; `None` (one word in
    /// every call's future): none, and the call takes the path it took
    /// before interceptors existed.
    pub(crate) layered: Option<&'a Layered<'a>>,
}

/// What a call with interceptors carries.
pub(crate) struct Layered<'a> {
    /// Outermost first; empty past them (an attempt's inner call).
    pub(crate) layers: &'a [Arc<dyn Interceptor>],
    /// Metadata each attempt sends.
    pub(crate) metadata: &'a Metadata,
    /// The same, encoded (an attempt's inner call only).
    pub(crate) encoded: &'a [u8],
}

/// No metadata, for calls without layers.
static NO_METADATA: Metadata = Metadata::new();

impl<N> Call<'_, N> {
    /// The interceptors still to run.
    pub(super) fn layers(&self) -> &[Arc<dyn Interceptor>] {
        self.layered.map_or(&[], |l| l.layers)
    }

    /// The metadata an attempt sends.
    pub(super) fn metadata(&self) -> &Metadata {
        self.layered.map_or(&NO_METADATA, |l| l.metadata)
    }

    /// The same, encoded.
    pub(super) fn encoded_metadata(&self) -> &[u8] {
        self.layered.map_or(&[], |l| l.encoded)
    }
}

/// What a call did, for its span and metrics.
#[derive(Default)]
struct Tally {
    attempts: u32,
    /// Why the last attempt did not run, until the next one starts.
    not_run: Option<&'static str>,
    /// An attempt ran (or may have run).
    ran: bool,
}

impl<N: Remote> Call<'_, N> {
    /// Runs the call. Not `async fn`: one would keep a second copy of
    /// `self` and `args` in every call's future; the block uses its own.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` copies its arguments into its future twice"
    )]
    pub(crate) fn run<R: Send + 'static, A: CallArgs<R>>(self, mut args: A) -> impl Future<Output = Result<R, Error>> {
        async move {
            if !self.layers().is_empty() {
                // Boxed: layers are optional, their state is not every call's.
                return boxed(|| self.run_intercepted(&mut args)).await.0;
            }
            if spans::wanted() {
                // Spans live across the call's awaits: boxed, so that a call
                // nobody traces keeps the small future it had without them.
                return boxed(|| self.run_traced(&mut args)).await;
            }
            let started = Instant::now();
            let mut tally = Tally::default();
            let result = self.attempts(&mut args, None, &mut tally, started).await;
            self.finish(None, &tally, &result, started);
            result
        }
    }

    /// Runs the call on `args`, which stay usable for another run; also
    /// says whether it surely ran nowhere (every attempt was refused before
    /// running), so that a caller may send it elsewhere.
    pub(crate) async fn run_again<R: Send + 'static, A: CallArgs<R>>(&self, args: &mut A) -> (Result<R, Error>, bool) {
        if !self.layers().is_empty() {
            return boxed(|| self.run_intercepted(args)).await;
        }
        self.run_plain(args, Instant::now()).await
    }

    /// [`run_again`](Self::run_again) past the call layers, its deadline
    /// counted from `started`.
    pub(super) async fn run_plain<R: Send + 'static, A: CallArgs<R>>(
        &self,
        args: &mut A,
        started: Instant,
    ) -> (Result<R, Error>, bool) {
        let span = spans::wanted().then(|| spans::call(&self.service, self.method.name()));
        let span = span.as_ref().filter(|s| !s.is_disabled());
        let mut tally = Tally::default();
        let result = self.attempts(args, span, &mut tally, started).await;
        self.finish(span, &tally, &result, started);
        (result, !tally.ran)
    }

    async fn run_traced<R: Send + 'static, A: CallArgs<R>>(&self, args: &mut A) -> Result<R, Error> {
        let span = spans::call(&self.service, self.method.name());
        let span = (!span.is_disabled()).then_some(&span);
        let started = Instant::now();
        let mut tally = Tally::default();
        let result = self.attempts(args, span, &mut tally, started).await;
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

    async fn attempts<R: Send + 'static, A: CallArgs<R>>(
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
            let targets = Targets::new(self.remote.me(), &route, self.options.nodes.as_deref(), filter);
            let mut targets = match self.options.key {
                Some(key) => targets.keyed(key),
                None => targets.starting_at(start),
            };
            for target in targets.by_ref() {
                if let Some(reason) = tally.not_run.take() {
                    self.metrics.failover(reason);
                    counters::bump(&self.slot.counters.failovers);
                }
                tally.attempts += 1;
                let deadline = Deadline::counted_from(clock.take().unwrap_or_else(Instant::now), deadline);
                let at = AttemptTarget {
                    target,
                    number: tally.attempts,
                    deadline,
                    timeout,
                    span,
                };
                let attempt = self.attempt(at, args).await;
                match attempt {
                    Outcome::Done(result) => {
                        tally.ran = true;
                        return result;
                    }
                    Outcome::NotRun(err) => {
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

    /// The error of a handler that did not reply, here or on `node`.
    pub(super) fn invoke_error(&self, node: NodeId, err: InvokeError) -> Error {
        match err {
            InvokeError::BadRequest(message) => self.remote_error(node, format!("bad request: {message}")),
            InvokeError::Failed(message) => self.remote_error(node, message),
            InvokeError::NotAvailable => self.not_available(),
        }
    }

    /// `ServiceNotAvailable`, naming the call's version requirement if any.
    pub(super) fn not_available(&self) -> Error {
        Error::ServiceNotAvailable {
            service: self.service.clone(),
            requirement: self.options.vsn.as_ref().map(|r| r.text().to_owned()),
        }
    }

    pub(super) fn codec_error(&self, action: &str, message: String) -> Error {
        Error::codec(action, &self.service, self.method.name(), message)
    }

    pub(super) fn timeout_error(&self, timeout: Duration) -> Error {
        Error::Timeout {
            service: self.service.clone(),
            method: self.method.name_cow(),
            timeout,
        }
    }

    pub(super) fn signature_mismatch(&self, node: NodeId) -> Error {
        Error::SignatureMismatch {
            service: self.service.clone(),
            method: self.method.name_cow(),
            node,
        }
    }

    pub(super) fn refused(&self, node: NodeId, reason: String) -> Error {
        Error::Refused {
            service: self.service.clone(),
            method: self.method.name_cow(),
            node,
            reason,
        }
    }

    pub(super) fn remote_error(&self, node: NodeId, message: String) -> Error {
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
