//! One attempt of a call: the one seam every attempt goes through, to this
//! node's own instance (in-process) or to another node (over the network),
//! traced or not; what it came to, as the failover rule reads it.

use super::boxed::{Boxed, boxed};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::args::CallArgs;
use super::call::Call;
use super::deadline::with_deadline;
use super::failover::{AttemptTarget, Outcome, Target, may_try_next};
use super::remote::{Remote, RemoteError};
use crate::connection::{CallError, Caller, Deadline, Request};
use crate::invoke::{InvokeError, panic_message};
use crate::registry::{LocalService, Refusal};
use crate::telemetry::TraceContext;
use crate::telemetry::spans;
use crate::wire::Status;
use crate::{Error, NodeId};

/// An attempt's future when it is not one of the small inner ones.
type BoxedAttempt<'s, R> = Boxed<'s, Outcome<R>>;

impl<N: Remote> Call<'_, N> {
    /// One attempt of the call: the one place every attempt goes through,
    /// to this node's instance or to another node, traced or not,
    /// intercepted or not.
    ///
    /// Not `async`: a layer of `async fn` would keep its own copy of the
    /// arguments in every call's future; this returns one of the inner
    /// futures as it is.
    pub(super) fn attempt<'s, R: Send + 'static, A: CallArgs<R>>(
        &'s self,
        at: AttemptTarget<'s>,
        args: &'s mut A,
    ) -> impl Future<Output = Outcome<R>> + Send + 's {
        if !self.layers().is_empty() {
            // Boxed: layers are optional, their state is not every call's.
            return Either::Right(boxed(move || self.attempt_intercepted(at, args)));
        }
        self.attempt_plain(at, args)
    }

    /// An attempt past the layers, with the metadata they set.
    ///
    /// Only the local attempt's future is inline. The remote one (its
    /// connection's send and reply, several hundred bytes) is boxed: every
    /// call's future is as large as its largest state and is copied whole
    /// at each of its `.await` levels, so a local call carrying the remote
    /// state paid for it in copies; a remote call pays one allocation, a
    /// few tens of nanoseconds against a round trip of microseconds.
    pub(super) fn attempt_plain<'s, R: Send + 'static, A: CallArgs<R>>(
        &'s self,
        at: AttemptTarget<'s>,
        args: &'s mut A,
    ) -> Either<impl Future<Output = Outcome<R>> + Send + 's, BoxedAttempt<'s, R>> {
        match (at.target, at.span) {
            (Target::Local(local), None) => Either::Left(self.attempt_local(local, args, at.deadline.at(), at.timeout)),
            (Target::Remote(node), None) => Either::Right(boxed(move || {
                self.attempt_remote(node, args, at.deadline, at.timeout, None)
            })),
            // Boxed: spans live across the attempt's awaits.
            (target, Some(span)) => Either::Right(boxed(move || {
                self.attempt_traced(target, span, at.number, args, at.deadline, at.timeout)
            })),
        }
    }

    /// An attempt inside its span, a child of the call's `span`; a remote
    /// one carries the span's trace context.
    async fn attempt_traced<R: Send + 'static, A: CallArgs<R>>(
        &self,
        target: Target<'_>,
        span: &Span,
        number: u32,
        args: &mut A,
        deadline: Deadline,
        timeout: Duration,
    ) -> Outcome<R> {
        let node = match &target {
            Target::Local(_) => self.remote.me().clone(),
            Target::Remote(node) => node.clone(),
        };
        let attempt_span = spans::attempt(span, node.as_str(), number);
        let trace = match &target {
            Target::Local(_) => None,
            Target::Remote(_) => spans::context_of(&attempt_span),
        };
        let attempt = match target {
            Target::Local(local) => {
                self.attempt_local(local, args, deadline.at(), timeout)
                    .instrument(attempt_span.clone())
                    .await
            }
            Target::Remote(node) => {
                self.attempt_remote(node, args, deadline, timeout, trace)
                    .instrument(attempt_span.clone())
                    .await
            }
        };
        let outcome = match &attempt {
            Outcome::Done(Ok(_)) => "ok",
            Outcome::Done(Err(err)) | Outcome::NotRun(err) => err.outcome(),
        };
        attempt_span.record("outcome", outcome);
        if let Outcome::Done(_) = attempt {
            span.record("node", node.as_str());
        }
        attempt
    }

    async fn attempt_local<R: Send + 'static, A: CallArgs<R>>(
        &self,
        local: &LocalService,
        args: &mut A,
        deadline: Instant,
        timeout: Duration,
    ) -> Outcome<R> {
        let me = self.remote.me();
        let index = match local.accept(self.method.id(), self.method.signature()) {
            Ok(index) => index,
            Err(Refusal::NotAvailable) => {
                return Outcome::NotRun(self.not_available());
            }
            Err(Refusal::UnknownMethod | Refusal::SignatureMismatch) => {
                return Outcome::NotRun(self.signature_mismatch(me.clone()));
            }
        };
        // The service's interceptors see this node's own calls too.
        let caller = Caller {
            node: me,
            hidden: self.remote.is_hidden(),
        };
        if let Err(rejection) = local.admit(caller, true, index, || self.metadata().clone()) {
            return Outcome::Done(Err(self.refused(me.clone(), rejection.into_reason())));
        }

        // Same trait on both sides: call the implementation directly.
        if let Some(fut) = local.typed.as_ref().and_then(|h| args.call_direct(h)) {
            return Outcome::Done(
                match with_deadline(AssertUnwindSafe(fut).catch_unwind(), deadline).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(panic)) => Err(self.remote_error(me.clone(), panic_message(&*panic))),
                    Err(_) => Err(self.timeout_error(timeout)),
                },
            );
        }

        // A stub or a dynamic call reaching a local service: the dispatcher
        // runs it as it would a remote node's request, minus the network.
        // Boxed: its state is not that of a typed call.
        boxed(|| self.attempt_dispatched(local, index, args, deadline, timeout)).await
    }

    /// A local attempt through the service's dispatcher, on encoded arguments.
    async fn attempt_dispatched<R: Send + 'static, A: CallArgs<R>>(
        &self,
        local: &LocalService,
        index: usize,
        args: &mut A,
        deadline: Instant,
        timeout: Duration,
    ) -> Outcome<R> {
        let me = self.remote.me();
        let body = match args.encoded() {
            Ok(body) => body,
            Err(message) => return Outcome::Done(Err(self.codec_error("encode the arguments of", message))),
        };
        let invocation = match local.invoke(index, self.format, body, None) {
            Ok(invocation) => invocation,
            Err(InvokeError::NotAvailable) => return Outcome::NotRun(self.not_available()),
            Err(err) => return Outcome::Done(Err(self.invoke_error(me.clone(), err))),
        };
        let reply = match with_deadline(invocation, deadline).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => return Outcome::Done(Err(self.invoke_error(me.clone(), err))),
            Err(_) => return Outcome::Done(Err(self.timeout_error(timeout))),
        };
        Outcome::Done(self.decode(args, &reply))
    }

    async fn attempt_remote<R: Send + 'static, A: CallArgs<R>>(
        &self,
        node: NodeId,
        args: &mut A,
        deadline: Deadline,
        timeout: Duration,
        trace: Option<TraceContext>,
    ) -> Outcome<R> {
        let body = match args.encoded() {
            Ok(body) => body,
            Err(message) => return Outcome::Done(Err(self.codec_error("encode the arguments of", message))),
        };
        let request = Request {
            service: &self.service,
            method: self.method.id(),
            signature: self.method.signature(),
            format: self.format,
            body,
            trace,
            metadata: self.encoded_metadata(),
        };
        match self.remote.call(&node, request, deadline).await {
            Ok(bytes) => Outcome::Done(self.decode(args, &bytes)),
            Err(failure) => {
                let again = may_try_next(&failure, self.method.is_idempotent());
                let err = self.remote_failure(node, failure, timeout);
                if again {
                    Outcome::NotRun(err)
                } else {
                    Outcome::Done(Err(err))
                }
            }
        }
    }

    fn decode<R: Send + 'static, A: CallArgs<R>>(&self, args: &mut A, reply: &[u8]) -> Result<R, Error> {
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
                Status::Refused(reason) => self.refused(node, reason),
                Status::Ok => self.remote_error(node, "empty reply".into()),
            },
        }
    }
}
