//! The call path against a scripted network: which nodes a call tries, in
//! which order, and what it returns, without a socket.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::client::remote::RemoteError;
use crate::connection::ReplyBody;
use crate::connection::{CallError, Request};
use crate::manifest::method_id;
use crate::registry::{Registry, RemoteInstance, Route};
use crate::sync::lock;
use crate::wire::Status;

/// What a scripted node answers.
type Answer = fn() -> Result<ReplyBody, RemoteError>;

/// A network whose answers are written in advance, per node; it records
/// every node it was asked to call.
struct Scripted {
    me: NodeId,
    answers: BTreeMap<NodeId, Answer>,
    asked: Mutex<Vec<NodeId>>,
}

impl Remote for Scripted {
    fn me(&self) -> &NodeId {
        &self.me
    }

    fn is_hidden(&self) -> bool {
        false
    }

    fn in_flight(&self, _node: &NodeId) -> usize {
        0
    }

    async fn call(&self, node: &NodeId, request: Request<'_>, _deadline: Deadline) -> Result<ReplyBody, RemoteError> {
        assert_eq!((request.service, request.body), ("Calc", &[7u8][..]));
        lock(&self.asked).push(node.clone());
        (self.answers[node])()
    }
}

fn ok() -> Result<ReplyBody, RemoteError> {
    Ok(ReplyBody::copied(&[42]))
}
fn unreachable() -> Result<ReplyBody, RemoteError> {
    Err(RemoteError::Unreachable)
}
fn not_available() -> Result<ReplyBody, RemoteError> {
    Err(RemoteError::Call(CallError::Remote(Status::NotAvailable)))
}
fn mismatch() -> Result<ReplyBody, RemoteError> {
    Err(RemoteError::Call(CallError::Remote(Status::SignatureMismatch)))
}
fn lost() -> Result<ReplyBody, RemoteError> {
    Err(RemoteError::Call(CallError::Lost))
}
fn timed_out() -> Result<ReplyBody, RemoteError> {
    Err(RemoteError::Call(CallError::TimedOut))
}
fn failed() -> Result<ReplyBody, RemoteError> {
    Err(RemoteError::Call(CallError::Remote(Status::Failed("boom".into()))))
}

/// Arguments encoded as one byte; the reply is one byte too.
struct Byte;

impl CallArgs<u8> for Byte {
    fn call_direct(&mut self, _handle: &crate::service::LocalHandle) -> Option<crate::service::LocalFuture<u8>> {
        None
    }

    fn encoded(&mut self) -> Result<&[u8], String> {
        Ok(&[7])
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<u8, String> {
        Ok(bytes[0])
    }
}

/// Calls `Calc.add` routed to the nodes of `script`, in order; returns the
/// result and the nodes asked.
async fn call(script: &[(&str, Answer)], idempotent: bool, options: CallOptions) -> (Result<u8, Error>, Vec<String>) {
    let (result, asked, _) = call_counted(script, idempotent, options).await;
    (result, asked)
}

/// [`call`], with the slot's tallies after it: calls, errors, failovers.
async fn call_counted(
    script: &[(&str, Answer)],
    idempotent: bool,
    options: CallOptions,
) -> (Result<u8, Error>, Vec<String>, [u64; 3]) {
    let remote = Scripted {
        me: "me".into(),
        answers: script.iter().map(|(n, f)| (NodeId::from(*n), *f)).collect(),
        asked: Mutex::new(Vec::new()),
    };
    let registry = Registry::default();
    let slot = registry.slot("Calc");
    let nodes: Vec<RemoteInstance> = script
        .iter()
        .map(|(n, _)| RemoteInstance::bare(NodeId::from(*n)))
        .collect();
    slot.update(|_| Route {
        local: None,
        remote: nodes.into(),
    });
    let method = MethodManifest::__new("add", method_id("add"), &[], "i64", 0xadd, idempotent, None);
    let metrics = ClientMethod::new("me", "Calc", "add");
    let result = Call {
        remote: &remote,
        slot: &slot,
        service: "Calc".into(),
        method: &method,
        options: &options,
        format: Format::Postcard,
        metrics: &metrics,
        layered: None,
    }
    .run(Byte)
    .await;
    let asked = remote
        .asked
        .into_inner()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let tallies = &slot.counters;
    let read = crate::telemetry::counters::read;
    let tallies = [tallies.calls(), tallies.errors(), read(&tallies.failovers)];
    (result, asked, tallies)
}

#[tokio::test]
async fn a_call_moves_on_while_nothing_ran() {
    let script: [(&str, Answer); 4] = [("a", unreachable), ("b", not_available), ("c", mismatch), ("d", ok)];
    let (result, asked, [calls, errors, failovers]) = call_counted(&script, false, CallOptions::default()).await;
    assert_eq!(result.unwrap(), 42);
    assert_eq!(asked, ["a", "b", "c", "d"]);
    assert_eq!((calls, errors, failovers), (1, 0, 3), "one call, three moves on");
}

#[tokio::test]
async fn a_call_that_may_have_run_stops_unless_idempotent() {
    let script: [(&str, Answer); 2] = [("a", lost), ("b", ok)];
    let (result, asked, tallies) = call_counted(&script, false, CallOptions::default()).await;
    assert!(
        matches!(result, Err(Error::NodeDown { ref node }) if node.as_str() == "a"),
        "{result:?}"
    );
    assert_eq!(asked, ["a"], "never twice");
    assert_eq!(tallies, [1, 1, 0], "one failed call, no failover");

    let (result, asked) = call(&script, true, CallOptions::default()).await;
    assert_eq!(result.unwrap(), 42);
    assert_eq!(asked, ["a", "b"]);
}

#[tokio::test]
async fn timeouts_and_failures_are_answers() {
    for (answer, idempotent) in [(timed_out as Answer, true), (failed, true), (failed, false)] {
        let (result, asked) = call(&[("a", answer), ("b", ok)], idempotent, CallOptions::default()).await;
        assert!(
            matches!(result, Err(Error::Timeout { .. } | Error::Remote { .. })),
            "{result:?}"
        );
        assert_eq!(asked, ["a"]);
    }
}

#[tokio::test]
async fn no_node_running_it_is_not_available_unless_a_signature_differs() {
    let (result, _) = call(
        &[("a", unreachable), ("b", not_available)],
        true,
        CallOptions::default(),
    )
    .await;
    assert!(matches!(result, Err(Error::ServiceNotAvailable { .. })), "{result:?}");
    let (result, _) = call(&[("a", mismatch), ("b", not_available)], true, CallOptions::default()).await;
    assert!(matches!(result, Err(Error::SignatureMismatch { .. })), "{result:?}");
}

#[tokio::test]
async fn an_explicit_list_is_tried_in_its_order_and_says_what_happened() {
    let script: [(&str, Answer); 2] = [("a", ok), ("b", unreachable)];
    let options = CallOptions::default().nodes(["b"]);
    let (result, asked) = call(&script, false, options).await;
    assert!(matches!(result, Err(Error::NodeDown { .. })), "{result:?}");
    assert_eq!(asked, ["b"]);
}

#[tokio::test(start_paused = true)]
async fn retries_go_round_again_after_the_interval() {
    let options = CallOptions::default()
        .sna_retries(2)
        .retry_interval(std::time::Duration::from_millis(100));
    let (result, asked) = call(&[("a", not_available)], false, options).await;
    assert!(matches!(result, Err(Error::ServiceNotAvailable { .. })), "{result:?}");
    assert_eq!(asked, ["a", "a", "a"]);
}
