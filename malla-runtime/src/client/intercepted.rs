//! A call and its attempts through the client interceptors: `before_*` in
//! order, the call or attempt, `after_*` in reverse order (see
//! `crate::intercept` for what each may do and how it meets the failover
//! rule). Only calls with interceptors come here.

use std::time::Instant;

use super::args::CallArgs;
use super::call::{Call, Layered};
use super::failover::{AttemptTarget, Outcome};
use super::remote::Remote;
use crate::intercept::{AfterCall, AttemptInfo, AttemptOutcome, CallInfo, CallOutcome, Decision, Elapsed};
use crate::{CallOptions, Error};

impl<N: Remote> Call<'_, N> {
    /// The whole call through the layers: what it came to, and whether it
    /// ran nowhere.
    pub(super) async fn run_intercepted<R: Send + 'static, A: CallArgs<R>>(
        &self,
        args: &mut A,
    ) -> (Result<R, Error>, bool) {
        let mut info = CallInfo::new(&self.service, self.method, self.options.clone(), self.format);
        let deadline = info.started() + self.options.effective_timeout(self.method.timeout_ms());
        loop {
            let started = match info.retries() {
                0 => info.started(),
                _ => Instant::now(),
            };
            let mut entered = 0;
            let mut early = None;
            let layers = self.layers();
            for layer in layers {
                entered += 1;
                match layer.before_call(&mut info) {
                    Decision::Continue => {}
                    Decision::Answer(reply) => {
                        early = Some(
                            args.decode(&reply)
                                .map_err(|m| self.codec_error("decode an interceptor's answer to", m)),
                        );
                        break;
                    }
                    Decision::Refuse(err) => {
                        early = Some(Err(err));
                        break;
                    }
                }
            }
            let answered = early.is_some();
            let (result, ran_nowhere) = match early {
                Some(result) => (result, true),
                None => {
                    // A run after a retry has what is left of the first's deadline.
                    let options = match info.retries() {
                        0 => None,
                        _ => Some(CallOptions {
                            timeout: Some(deadline.saturating_duration_since(Instant::now())),
                            ..info.options.clone()
                        }),
                    };
                    let layered = Layered {
                        layers,
                        metadata: &info.metadata,
                        encoded: &[],
                    };
                    let inner = Call {
                        service: self.service.clone(),
                        options: options.as_ref().unwrap_or(&info.options),
                        layered: Some(&layered),
                        ..*self
                    };
                    inner.run_plain(args, started.into()).await
                }
            };
            let outcome = CallOutcome {
                result: result.as_ref().map(|_| ()),
                ran: !ran_nowhere,
                timer: Elapsed::since(started),
            };
            let mut retry = false;
            for layer in layers[..entered].iter().rev() {
                retry |= layer.after_call(&info, &outcome) == AfterCall::Retry;
            }
            let may_retry = result.is_err()
                && (ran_nowhere || self.method.is_idempotent())
                && Instant::now() < deadline
                && !answered;
            if !(retry && may_retry) {
                return (result, ran_nowhere);
            }
            info.next_run();
        }
    }

    /// One attempt through the layers' `before_attempt` and
    /// `after_attempt`.
    pub(super) async fn attempt_intercepted<R: Send + 'static, A: CallArgs<R>>(
        &self,
        target: AttemptTarget<'_>,
        args: &mut A,
    ) -> Outcome<R> {
        let node = target.node(self.remote.me()).clone();
        let mut info = AttemptInfo {
            service: &self.service,
            method: self.method,
            node: &node,
            local: target.is_local(),
            number: target.number,
            metadata: self.metadata().clone(),
        };
        let layers = self.layers();
        for layer in layers {
            if let Err(err) = layer.before_attempt(&mut info) {
                return Outcome::NotRun(err);
            }
        }
        let mut encoded = Vec::new();
        info.metadata.encode_into(&mut encoded);
        let started = Instant::now();
        // Past the layers: an inner call with none, and this attempt's metadata.
        let layered = Layered {
            layers: &[],
            metadata: &info.metadata,
            encoded: &encoded,
        };
        let inner = Call {
            service: self.service.clone(),
            layered: Some(&layered),
            ..*self
        };
        let outcome = inner.attempt_plain(target, args).await;
        let (result, ran) = match &outcome {
            Outcome::Done(result) => (result.as_ref().map(|_| ()), true),
            Outcome::NotRun(err) => (Err(err), false),
        };
        let seen = AttemptOutcome {
            result,
            ran,
            timer: Elapsed::since(started),
        };
        for layer in layers.iter().rev() {
            layer.after_attempt(&info, &seen);
        }
        outcome
    }
}
