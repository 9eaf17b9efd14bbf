//! One call from start to finish: pick the targets in `get_nodes` order, try
//! each, and move on only when the call provably did not run there
//! (Malla's `remote/4`, made safer: see DESIGN.md "Calls and failover").

use std::any::Any;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::args::CallArgs;
use super::with_deadline;
use crate::connection::CallError;
use crate::node::Node;
use crate::registry::{LocalService, MethodLookup, Route, ServiceSlot};
use crate::service::Format;
use crate::wire::{Status, WireFormat};
use crate::{CallOptions, Error, MethodManifest, NodeId};

pub(crate) struct Call<'a> {
    pub(crate) node: &'a Node,
    pub(crate) slot: &'a ServiceSlot,
    pub(crate) service: Cow<'static, str>,
    pub(crate) method: &'a MethodManifest,
    pub(crate) options: &'a CallOptions,
    /// Encoding of arguments and reply on the wire (JSON for tools only).
    pub(crate) format: WireFormat,
}

/// Where one attempt goes.
enum Target {
    Local(Arc<LocalService>),
    Remote(NodeId),
}

/// Targets in `get_nodes` order: the local instance first, then the remote
/// ones; or the caller's explicit list. Walks the route without copying it.
struct Targets<'r> {
    me: &'r NodeId,
    route: &'r Route,
    explicit: Option<&'r [NodeId]>,
    next: usize,
}

impl<'r> Targets<'r> {
    fn new(call: &'r Call<'_>, route: &'r Route) -> Self {
        Targets {
            me: &call.node.inner.id,
            route,
            explicit: call.options.nodes.as_deref(),
            next: 0,
        }
    }

    fn next(&mut self) -> Option<Target> {
        loop {
            let index = self.next;
            self.next += 1;
            match self.explicit {
                Some(nodes) => {
                    let id = nodes.get(index)?;
                    if id != self.me {
                        return Some(Target::Remote(id.clone()));
                    }
                    // This node: only if it serves the service.
                    if let Some(local) = &self.route.local {
                        return Some(Target::Local(Arc::clone(local)));
                    }
                }
                None if index == 0 => {
                    if let Some(local) = &self.route.local {
                        return Some(Target::Local(Arc::clone(local)));
                    }
                }
                None => return self.route.remote.get(index - 1).cloned().map(Target::Remote),
            }
        }
    }
}

/// The result of one attempt.
enum Attempt<R> {
    /// The call ran (or may have run): this is its answer.
    Done(Result<R, Error>),
    /// The call did not run there; the next node may be tried.
    NotRun(Error),
}

impl Call<'_> {
    pub(crate) async fn run<R, A: CallArgs<R>>(self, mut args: A) -> Result<R, Error> {
        let timeout = self.options.effective_timeout(self.method.timeout_ms());
        let deadline = Instant::now() + timeout;
        let mut failure: Option<Error> = None;

        for round in 0..=self.options.sna_retries {
            if round > 0 {
                let wake = (Instant::now() + self.options.effective_retry_interval()).min(deadline);
                tokio::time::sleep_until(wake).await;
                if Instant::now() >= deadline {
                    return Err(self.timeout_error(timeout));
                }
            }
            let route = self.slot.route_full();
            let mut targets = Targets::new(&self, &route);
            while let Some(target) = targets.next() {
                let attempt = match target {
                    Target::Local(local) => self.attempt_local(&local, &mut args, deadline, timeout).await,
                    Target::Remote(node) => self.attempt_remote(node, &mut args, deadline, timeout).await,
                };
                match attempt {
                    Attempt::Done(result) => return result,
                    Attempt::NotRun(err) => failure = Some(pick_failure(failure, err)),
                }
            }
        }
        Err(match failure {
            // With discovered nodes, running out of them is "not available";
            // with an explicit list, the caller wants to know what happened.
            Some(err) if self.options.nodes.is_some() || matches!(err, Error::SignatureMismatch { .. }) => err,
            _ => Error::ServiceNotAvailable {
                service: self.service.clone(),
            },
        })
    }

    async fn attempt_local<R, A: CallArgs<R>>(
        &self,
        local: &LocalService,
        args: &mut A,
        deadline: Instant,
        timeout: Duration,
    ) -> Attempt<R> {
        let me = self.node.inner.id.clone();
        if !local.is_active() {
            return Attempt::NotRun(Error::ServiceNotAvailable {
                service: self.service.clone(),
            });
        }
        let index = match local.lookup(self.method.id(), self.method.signature()) {
            MethodLookup::Found(index) => index,
            MethodLookup::Unknown | MethodLookup::Mismatch => return Attempt::NotRun(self.signature_mismatch(me)),
        };

        // Same trait on both sides: call the implementation directly.
        if let Some(fut) = local.typed.as_ref().and_then(|h| args.call_direct(h)) {
            return Attempt::Done(
                match with_deadline(AssertUnwindSafe(fut).catch_unwind(), deadline).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(panic)) => Err(self.remote_error(me, panic_message(&*panic))),
                    Err(_) => Err(self.timeout_error(timeout)),
                },
            );
        }

        // A stub or a dynamic call reaching a local service: go through the
        // dispatcher as a remote node would, minus the network.
        let body = match args.encoded() {
            Ok(body) => body,
            Err(message) => return Attempt::Done(Err(self.codec_error("encode the arguments of", message))),
        };
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            local.service.dispatch(index, Format::Postcard, body)
        }));
        let fut = match dispatched {
            Ok(Ok(fut)) => fut,
            Ok(Err(err)) => return Attempt::Done(Err(self.remote_error(me, err.to_string()))),
            Err(panic) => return Attempt::Done(Err(self.remote_error(me, panic_message(&*panic)))),
        };
        let reply = match with_deadline(AssertUnwindSafe(fut).catch_unwind(), deadline).await {
            Ok(Ok(Ok(bytes))) => bytes,
            Ok(Ok(Err(err))) => return Attempt::Done(Err(self.remote_error(me, err.to_string()))),
            Ok(Err(panic)) => return Attempt::Done(Err(self.remote_error(me, panic_message(&*panic)))),
            Err(_) => return Attempt::Done(Err(self.timeout_error(timeout))),
        };
        Attempt::Done(
            args.decode(&reply)
                .map_err(|message| self.codec_error("decode the reply of", message)),
        )
    }

    async fn attempt_remote<R, A: CallArgs<R>>(
        &self,
        node: NodeId,
        args: &mut A,
        deadline: Instant,
        timeout: Duration,
    ) -> Attempt<R> {
        let conn = match self.node.inner.connection_to(&node, deadline).await {
            Ok(conn) => conn,
            // Could not connect: the call surely did not run there.
            Err(_) => return Attempt::NotRun(Error::NodeDown { node }),
        };
        let body = match args.encoded() {
            Ok(body) => body,
            Err(message) => return Attempt::Done(Err(self.codec_error("encode the arguments of", message))),
        };
        let (id, signature) = (self.method.id(), self.method.signature());
        let reply = conn
            .call(&self.service, id, signature, self.format, body, deadline)
            .await;
        match reply {
            Ok(bytes) => Attempt::Done(
                args.decode(&bytes)
                    .map_err(|message| self.codec_error("decode the reply of", message)),
            ),
            Err(CallError::NotSent) => Attempt::NotRun(Error::NodeDown { node }),
            // In flight when the connection died: it may have run. Only an
            // idempotent method may run again elsewhere.
            Err(CallError::Lost) if self.method.is_idempotent() => Attempt::NotRun(Error::NodeDown { node }),
            Err(CallError::Lost) => Attempt::Done(Err(Error::NodeDown { node })),
            Err(CallError::TimedOut) => Attempt::Done(Err(self.timeout_error(timeout))),
            Err(CallError::TooLarge(err)) => Attempt::Done(Err(self.codec_error("send", err.to_string()))),
            Err(CallError::Remote(status)) => match status {
                Status::NotAvailable => Attempt::NotRun(Error::ServiceNotAvailable {
                    service: self.service.clone(),
                }),
                Status::UnknownMethod | Status::SignatureMismatch => Attempt::NotRun(self.signature_mismatch(node)),
                Status::Timeout => Attempt::Done(Err(self.timeout_error(timeout))),
                Status::BadRequest(message) => {
                    Attempt::Done(Err(self.remote_error(node, format!("bad request: {message}"))))
                }
                Status::Failed(message) => Attempt::Done(Err(self.remote_error(node, message))),
                Status::Ok => Attempt::Done(Err(self.remote_error(node, "empty reply".into()))),
            },
        }
    }

    fn codec_error(&self, action: &str, message: String) -> Error {
        Error::Codec {
            what: format!("{action} `{}.{}`", self.service, self.method.name()),
            message,
        }
    }

    pub(crate) fn timeout_error(&self, timeout: Duration) -> Error {
        Error::Timeout {
            service: self.service.clone(),
            method: self.method.name_cow(),
            timeout,
        }
    }

    pub(crate) fn signature_mismatch(&self, node: NodeId) -> Error {
        Error::SignatureMismatch {
            service: self.service.clone(),
            method: self.method.name_cow(),
            node,
        }
    }

    pub(crate) fn remote_error(&self, node: NodeId, message: String) -> Error {
        Error::Remote {
            service: self.service.clone(),
            method: self.method.name_cow(),
            node,
            message,
        }
    }
}

/// Keeps the most telling reason among the attempts that did not run: a
/// signature mismatch says more than an unavailable service.
fn pick_failure(previous: Option<Error>, next: Error) -> Error {
    match previous {
        Some(prev @ Error::SignatureMismatch { .. }) if !matches!(next, Error::SignatureMismatch { .. }) => prev,
        _ => next,
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}
