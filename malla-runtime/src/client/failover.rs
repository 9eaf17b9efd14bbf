//! The failover rule: which nodes a call tries, in which order, when it may
//! move on to the next one, and which error it reports when none answered.
//!
//! A call moves on only when the request provably did not run where it was
//! sent (not connected, not sent, or refused before running: the service
//! is not available there, has another signature, or is overloaded). A request that may
//! have run (the connection died with it in flight) moves on only if the
//! method is idempotent; one that timed out never does.

use std::sync::Arc;

use super::remote::RemoteError;
use crate::connection::CallError;
use crate::registry::{LocalService, Route};
use crate::wire::Status;
use crate::{Error, NodeId};

/// Where one attempt goes.
pub(super) enum Target {
    Local(Arc<LocalService>),
    Remote(NodeId),
}

/// Targets in `get_nodes` order: the local instance first, then the remote
/// ones; or the caller's explicit list. Walks the route without copying it.
pub(super) struct Targets<'r> {
    me: &'r NodeId,
    route: &'r Route,
    explicit: Option<&'r [NodeId]>,
    next: usize,
}

impl<'r> Targets<'r> {
    pub(super) fn new(me: &'r NodeId, route: &'r Route, explicit: Option<&'r [NodeId]>) -> Self {
        Targets {
            me,
            route,
            explicit,
            next: 0,
        }
    }
}

impl Iterator for Targets<'_> {
    type Item = Target;

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

/// Whether a request that failed this way certainly did not run, or may run
/// again because the method is idempotent: the next node may be tried.
pub(super) fn may_try_next(failure: &RemoteError, idempotent: bool) -> bool {
    match failure {
        RemoteError::Unreachable | RemoteError::Call(CallError::NotSent) => true,
        RemoteError::Call(CallError::Lost) => idempotent,
        RemoteError::Call(CallError::Remote(status)) => matches!(
            status,
            Status::NotAvailable | Status::UnknownMethod | Status::SignatureMismatch | Status::Overloaded
        ),
        RemoteError::Call(CallError::TimedOut | CallError::TooLarge(_)) => false,
    }
}

/// Keeps the most telling reason among the attempts that did not run: a
/// signature mismatch says more than an overloaded node, which says more
/// than an unavailable service.
pub(super) fn pick_failure(previous: Option<Error>, next: Error) -> Error {
    let rank = |err: &Error| match err {
        Error::SignatureMismatch { .. } => 2,
        Error::Overloaded { .. } => 1,
        _ => 0,
    };
    match previous {
        Some(prev) if rank(&prev) > rank(&next) => prev,
        _ => next,
    }
}

/// The error of a call that no node ran: with discovered nodes, running out
/// of them is "not available", unless a signature differed (a redeploy will
/// not fix it) or a node was overloaded (later may); with an explicit list,
/// the caller wants to know what happened.
pub(super) fn no_node_ran(failure: Option<Error>, explicit: bool, not_available: impl FnOnce() -> Error) -> Error {
    match failure {
        Some(err) if explicit || matches!(err, Error::SignatureMismatch { .. } | Error::Overloaded { .. }) => err,
        _ => not_available(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameError;

    fn down(node: &str) -> Error {
        Error::NodeDown { node: node.into() }
    }

    fn mismatch() -> Error {
        Error::SignatureMismatch {
            service: "S".into(),
            method: "m".into(),
            node: "b".into(),
        }
    }

    fn overloaded() -> Error {
        Error::Overloaded {
            service: "S".into(),
            node: "b".into(),
        }
    }

    fn sna() -> Error {
        Error::ServiceNotAvailable { service: "S".into() }
    }

    #[test]
    fn only_requests_that_did_not_run_move_on() {
        let call = |err| RemoteError::Call(err);
        let status = |s| RemoteError::Call(CallError::Remote(s));
        for idempotent in [false, true] {
            assert!(may_try_next(&RemoteError::Unreachable, idempotent));
            assert!(may_try_next(&call(CallError::NotSent), idempotent));
            assert!(may_try_next(&status(Status::NotAvailable), idempotent));
            assert!(may_try_next(&status(Status::UnknownMethod), idempotent));
            assert!(may_try_next(&status(Status::SignatureMismatch), idempotent));
            assert!(may_try_next(&status(Status::Overloaded), idempotent));
            // It ran, or may be running still: never twice.
            assert!(!may_try_next(&call(CallError::TimedOut), idempotent));
            assert!(!may_try_next(&status(Status::Timeout), idempotent));
            assert!(!may_try_next(&status(Status::Ok), idempotent));
            assert!(!may_try_next(&status(Status::Failed("boom".into())), idempotent));
            assert!(!may_try_next(&status(Status::BadRequest("no".into())), idempotent));
            assert!(!may_try_next(
                &call(CallError::TooLarge(FrameError::TooLarge { len: 9, max: 1 })),
                idempotent
            ));
        }
        // In flight when the connection died: only an idempotent call runs again.
        assert!(!may_try_next(&call(CallError::Lost), false));
        assert!(may_try_next(&call(CallError::Lost), true));
    }

    #[test]
    fn a_signature_mismatch_outranks_other_reasons() {
        let kept = pick_failure(Some(mismatch()), down("c"));
        assert!(matches!(kept, Error::SignatureMismatch { .. }), "{kept}");
        let kept = pick_failure(Some(down("a")), sna());
        assert!(
            matches!(kept, Error::ServiceNotAvailable { .. }),
            "the latest otherwise: {kept}"
        );
        assert!(matches!(pick_failure(None, down("a")), Error::NodeDown { .. }));
        let kept = pick_failure(Some(overloaded()), sna());
        assert!(matches!(kept, Error::Overloaded { .. }), "{kept}");
        let kept = pick_failure(Some(overloaded()), mismatch());
        assert!(matches!(kept, Error::SignatureMismatch { .. }), "{kept}");
        // Every node overloaded: the caller learns so, not "not available".
        let last = no_node_ran(Some(overloaded()), false, sna);
        assert!(matches!(last, Error::Overloaded { .. }), "{last}");
    }

    #[test]
    fn running_out_of_discovered_nodes_is_not_available() {
        assert!(matches!(
            no_node_ran(Some(down("a")), false, sna),
            Error::ServiceNotAvailable { .. }
        ));
        assert!(matches!(
            no_node_ran(None, false, sna),
            Error::ServiceNotAvailable { .. }
        ));
        assert!(matches!(
            no_node_ran(Some(mismatch()), false, sna),
            Error::SignatureMismatch { .. }
        ));
        // An explicit list reports what happened.
        assert!(matches!(
            no_node_ran(Some(down("a")), true, sna),
            Error::NodeDown { .. }
        ));
    }

    #[test]
    fn targets_come_local_first_then_in_route_order_or_as_listed() {
        let (me, a, b) = (NodeId::from("me"), NodeId::from("a"), NodeId::from("b"));
        let route = Route {
            local: None,
            remote: vec![a.clone(), b.clone()].into(),
        };
        let names = |targets: Targets<'_>| -> Vec<String> {
            targets
                .map(|t| match t {
                    Target::Local(_) => "local".to_owned(),
                    Target::Remote(id) => id.to_string(),
                })
                .collect()
        };
        assert_eq!(names(Targets::new(&me, &route, None)), ["a", "b"]);
        let listed = [b.clone(), me.clone(), NodeId::from("x")];
        // This node in the list but not serving: skipped.
        assert_eq!(names(Targets::new(&me, &route, Some(&listed))), ["b", "x"]);
        assert_eq!(names(Targets::new(&me, &route, Some(&[]))), Vec::<String>::new());
    }
}
