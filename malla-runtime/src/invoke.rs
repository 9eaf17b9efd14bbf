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
    /// No instance runs here to take it (a placed service between its
    /// instances): the handler did not run, the caller fails over.
    NotAvailable,
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
        Ok(Err(err)) if err.is_not_available() => InvokeError::NotAvailable,
        Ok(Err(err)) => InvokeError::BadRequest(err.to_string()),
        Err(panic) => InvokeError::Failed(panic_message(&*panic)),
    };
    serving.finish(match err {
        InvokeError::BadRequest(_) => "bad_request",
        InvokeError::Failed(_) => "failed",
        InvokeError::NotAvailable => "not_available",
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt;

    use super::*;
    use crate::NodeId;
    use crate::telemetry::ServiceTelemetry;
    use crate::telemetry::counters::read;
    use crate::test_support::{AdderService, add_args};

    fn run(method: usize, body: &[u8]) -> (Result<InvokeOutput, InvokeError>, [u64; 2]) {
        let service = AdderService { global: true };
        let telemetry = Arc::new(ServiceTelemetry::new(NodeId::from("me").as_str(), service.manifest()));
        let serving = Serving::start(&telemetry, method, None);
        let output = invoke(&service, method, Format::Postcard, body, serving)
            .map(|invocation| invocation.now_or_never().expect("the handlers here finish at once"));
        let counters = &telemetry.counters;
        (output, [counters.served.read(), read(&counters.errors)])
    }

    #[test]
    fn a_request_runs_its_method_and_replies_encoded() {
        let (output, tallies) = run(0, &add_args(40, 2));
        let reply = output.expect("started").expect("answered");
        assert_eq!(postcard::from_bytes::<i64>(&reply).unwrap(), 42);
        assert_eq!(tallies, [1, 0]);
    }

    #[test]
    fn arguments_that_do_not_decode_are_a_bad_request_and_nothing_runs() {
        let (output, tallies) = run(0, &[0xff]);
        assert!(matches!(output, Err(InvokeError::BadRequest(_))), "{output:?}");
        assert_eq!(tallies, [1, 1]);
        let (output, _) = run(0, &[add_args(1, 2), vec![7]].concat());
        assert!(
            matches!(&output, Err(InvokeError::BadRequest(_))),
            "trailing bytes: {output:?}"
        );
    }

    #[test]
    fn a_panic_while_dispatching_or_running_is_a_failure_not_a_crash() {
        let (output, tallies) = run(1, &[]);
        assert_eq!(
            output.err(),
            Some(InvokeError::Failed(
                "handler panicked: exploded while dispatching".into()
            ))
        );
        assert_eq!(tallies, [1, 1]);
        let (output, tallies) = run(2, &[]);
        assert_eq!(
            output.expect("started"),
            Err(InvokeError::Failed("handler panicked: exploded while running".into()))
        );
        assert_eq!(tallies, [1, 1]);
    }

    #[test]
    fn panic_payloads_become_messages() {
        assert_eq!(panic_message(&"static"), "handler panicked: static");
        assert_eq!(panic_message(&String::from("owned")), "handler panicked: owned");
        assert_eq!(panic_message(&42u8), "handler panicked");
    }
}
