//! Running one method of a served service on encoded arguments: the single
//! path that a request from another node (the connection's reader) and a
//! call from this node that cannot call the implementation directly (a
//! manifest stub, `remote`, `call_json`) both take, so that both decode in
//! the request's format, catch panics and report errors alike.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::CatchUnwind;

use crate::service::{DispatchFuture, Service};
use crate::telemetry::Serving;
use crate::wire::Format;
use tracing::Span;

/// Why an invocation produced no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InvokeError {
    /// The arguments do not decode as the method's types: the handler did
    /// not run.
    BadRequest(String),
    /// The handler panicked, or its reply could not be encoded.
    Failed(String),
}

/// The encoded reply, or why there is none.
pub(crate) type InvokeOutput = Result<Vec<u8>, InvokeError>;

/// A started handler; panics while it runs become [`InvokeError::Failed`].
/// It runs inside its request's span and reports how it ended.
pub(crate) struct Invocation {
    handler: CatchUnwind<AssertUnwindSafe<DispatchFuture>>,
    serving: Serving,
}

impl Future for Invocation {
    type Output = InvokeOutput;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<InvokeOutput> {
        let this = &mut *self;
        let polled = {
            let _entered = this.serving.span().map(Span::enter);
            Pin::new(&mut this.handler).poll(cx)
        };
        polled.map(|output| {
            let output = match output {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(err)) => Err(InvokeError::Failed(err.to_string())),
                Err(panic) => Err(InvokeError::Failed(panic_message(&*panic))),
            };
            this.serving.finish(if output.is_ok() { "ok" } else { "failed" });
            output
        })
    }
}

/// Decodes `body` in `format` as the arguments of method number `index` of
/// `service` and starts it, as the request `serving` follows.
pub(crate) fn invoke(
    service: &dyn Service,
    index: usize,
    format: Format,
    body: &[u8],
    mut serving: Serving,
) -> Result<Invocation, InvokeError> {
    let dispatched = {
        let _entered = serving.span().map(Span::enter);
        std::panic::catch_unwind(AssertUnwindSafe(|| service.dispatch(index, format, body)))
    };
    let err = match dispatched {
        Ok(Ok(handler)) => {
            return Ok(Invocation {
                handler: AssertUnwindSafe(handler).catch_unwind(),
                serving,
            });
        }
        Ok(Err(err)) => InvokeError::BadRequest(err.to_string()),
        Err(panic) => InvokeError::Failed(panic_message(&*panic)),
    };
    serving.finish(match err {
        InvokeError::BadRequest(_) => "bad_request",
        InvokeError::Failed(_) => "failed",
    });
    Err(err)
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
