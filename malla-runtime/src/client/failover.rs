//! The failover rule: which nodes a call tries, in which order, when it may
//! move on to the next one, and which error it reports when none answered.
//!
//! A call moves on only when the request provably did not run where it was
//! sent (not connected, not sent, or refused before running: the service
//! is not available there, has another signature, or is overloaded). A request that may
//! have run (the connection died with it in flight) moves on only if the
//! method is idempotent; one that timed out never does.

use std::time::Duration;

use smallvec::SmallVec;
use tracing::Span;

use super::remote::RemoteError;
use crate::connection::{CallError, Deadline};
use crate::options::VsnRequirement;
use crate::registry::{LocalService, RemoteInstance, Route};
use crate::wire::Status;
use crate::{Error, NodeId, rendezvous};

/// What one attempt came to.
pub(super) enum Outcome<R> {
    /// The call ran (or may have run): this is its answer.
    Done(Result<R, Error>),
    /// The call did not run there; the next node may be tried.
    NotRun(Error),
}

/// Where one attempt goes. The local instance is borrowed from the route
/// the call walks: no reference count changes hands on a local call.
pub(super) enum Target<'r> {
    Local(&'r LocalService),
    Remote(NodeId),
}

/// Where attempt number `number` of a call goes, and its time.
pub(super) struct AttemptTarget<'s> {
    pub(super) target: Target<'s>,
    pub(super) number: u32,
    pub(super) deadline: Deadline,
    pub(super) timeout: Duration,
    /// The call's span, if it is traced.
    pub(super) span: Option<&'s Span>,
}

impl AttemptTarget<'_> {
    /// The node it goes to; `me` for this node's own instance.
    pub(super) fn node<'n>(&'n self, me: &'n NodeId) -> &'n NodeId {
        match &self.target {
            Target::Local(_) => me,
            Target::Remote(node) => node,
        }
    }

    pub(super) fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }
}

/// Which discovered instances a call may reach: those that meet its version
/// requirement and have its method with its signature. Instances that do
/// not are skipped before anything is sent.
#[derive(Clone, Copy, Default)]
pub(crate) struct Filter<'r> {
    pub(crate) vsn: Option<&'r VsnRequirement>,
    pub(crate) method: u32,
    /// 0: not checked (a call by name).
    pub(crate) signature: u64,
}

impl Filter<'_> {
    pub(crate) fn admits(&self, instance: &RemoteInstance) -> bool {
        self.meets_vsn(instance) && instance.has_method(self.method, self.signature)
    }

    fn meets_vsn(&self, instance: &RemoteInstance) -> bool {
        self.vsn.is_none_or(|req| req.matches(instance.vsn.as_ref()))
    }

    fn admits_local(&self, local: &LocalService) -> bool {
        self.vsn.is_none_or(|req| req.matches(local.vsn.as_ref()))
    }
}

/// Targets in `get_nodes` order: the local instance first, then the remote
/// ones the filter admits; or the caller's explicit list, as listed. Walks
/// the route without copying it.
pub(super) struct Targets<'r> {
    me: &'r NodeId,
    route: &'r Route,
    explicit: Option<&'r [NodeId]>,
    filter: Filter<'r>,
    /// Where the walk over the remote instances starts (it wraps around).
    start: usize,
    next: usize,
    /// A node skipped because its method has another signature (or is
    /// missing): what the call reports if no node runs it.
    mismatched: Option<&'r NodeId>,
    /// With a key: every instance, this node's included, in the order of
    /// their rendezvous scores for it (`LOCAL` stands for this node's).
    /// Boxed: a keyed call allocates it once, and every other call's
    /// future stays a word larger only.
    ranked: Option<Box<[usize]>>,
}

/// This node's own instance, in a keyed order.
const LOCAL: usize = usize::MAX;

impl<'r> Targets<'r> {
    pub(super) fn new(me: &'r NodeId, route: &'r Route, explicit: Option<&'r [NodeId]>, filter: Filter<'r>) -> Self {
        Targets {
            me,
            route,
            explicit,
            filter,
            start: 0,
            next: 0,
            mismatched: None,
            ranked: None,
        }
    }

    /// Walks every instance in the order of their scores for `key`
    /// (highest first), this node's own among them; an explicit list of
    /// nodes still comes as listed. Out of line: its ranking is not every
    /// call's.
    #[inline(never)]
    pub(super) fn keyed(mut self, key: u64) -> Self {
        let local = self
            .route
            .local
            .as_ref()
            .map(|_| (LOCAL, rendezvous::score(key, self.me)));
        let remote = (self.route.remote.iter().enumerate()).map(|(i, r)| (i, rendezvous::score(key, &r.node)));
        let mut scored: SmallVec<[(usize, u64); 8]> = local.into_iter().chain(remote).collect();
        let name = |at: usize| {
            if at == LOCAL {
                self.me
            } else {
                &self.route.remote[at].node
            }
        };
        scored.sort_unstable_by(|(a, sa), (b, sb)| sb.cmp(sa).then_with(|| name(*a).cmp(name(*b))));
        self.ranked = Some(scored.into_iter().map(|(at, _)| at).collect());
        self
    }

    /// A node the walk skipped for its method's signature, if any.
    pub(super) fn mismatched(&self) -> Option<&'r NodeId> {
        self.mismatched
    }

    /// Walks the remote instances from number `start` (modulo their count)
    /// instead of the first.
    pub(super) fn starting_at(mut self, start: usize) -> Self {
        self.start = start;
        self
    }
}

/// Of two admitted instances drawn at random, the index of the one with
/// fewer calls in flight (`in_flight` says how many a node has); 0 when
/// none is admitted.
pub(super) fn least_loaded(route: &Route, filter: Filter<'_>, in_flight: impl Fn(&NodeId) -> usize) -> usize {
    let remote = &route.remote;
    let admitted = |at: usize| filter.admits(&remote[at]);
    let count = remote.len();
    if count < 2 {
        return 0;
    }
    let first = rand::random_range(0..count);
    let second = (first + rand::random_range(1..count)) % count;
    match (admitted(first), admitted(second)) {
        (true, true) if in_flight(&remote[second].node) < in_flight(&remote[first].node) => second,
        (true, _) => first,
        (false, true) => second,
        // The walk from here finds the admitted ones, if any.
        (false, false) => first,
    }
}

impl<'r> Iterator for Targets<'r> {
    type Item = Target<'r>;

    fn next(&mut self) -> Option<Target<'r>> {
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
                        return Some(Target::Local(local));
                    }
                }
                None if self.ranked.is_some() => {
                    let ranked = self.ranked.as_ref().expect("keyed");
                    let at = *ranked.get(index)?;
                    if at == LOCAL {
                        if let Some(local) = self.route.local.as_ref().filter(|l| self.filter.admits_local(l)) {
                            return Some(Target::Local(local));
                        }
                        continue;
                    }
                    let instance = &self.route.remote[at];
                    if self.filter.admits(instance) {
                        return Some(Target::Remote(instance.node.clone()));
                    }
                    if self.filter.meets_vsn(instance) {
                        self.mismatched.get_or_insert(&instance.node);
                    }
                }
                None if index == 0 => {
                    if let Some(local) = self.route.local.as_ref().filter(|l| self.filter.admits_local(l)) {
                        return Some(Target::Local(local));
                    }
                }
                None => {
                    let remote = &self.route.remote;
                    if index > remote.len() {
                        return None;
                    }
                    let instance = &remote[(self.start + index - 1) % remote.len()];
                    if self.filter.admits(instance) {
                        return Some(Target::Remote(instance.node.clone()));
                    }
                    if self.filter.meets_vsn(instance) {
                        self.mismatched.get_or_insert(&instance.node);
                    }
                }
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
        Error::ServiceNotAvailable {
            service: "S".into(),
            requirement: None,
        }
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
            remote: vec![RemoteInstance::bare(a.clone()), RemoteInstance::bare(b.clone())].into(),
        };
        let names = |targets: Targets<'_>| -> Vec<String> {
            targets
                .map(|t| match t {
                    Target::Local(_) => "local".to_owned(),
                    Target::Remote(id) => id.to_string(),
                })
                .collect()
        };
        let all = Filter::default();
        assert_eq!(names(Targets::new(&me, &route, None, all)), ["a", "b"]);
        let listed = [b.clone(), me.clone(), NodeId::from("x")];
        // This node in the list but not serving: skipped.
        assert_eq!(names(Targets::new(&me, &route, Some(&listed), all)), ["b", "x"]);
        assert_eq!(names(Targets::new(&me, &route, Some(&[]), all)), Vec::<String>::new());
    }

    #[test]
    fn a_key_walks_every_instance_in_score_order_the_same_from_every_node() {
        let names = |targets: Targets<'_>| -> Vec<String> {
            targets
                .map(|t| match t {
                    Target::Local(_) => "local".to_owned(),
                    Target::Remote(id) => id.to_string(),
                })
                .collect()
        };
        let ids: Vec<NodeId> = ["a", "b", "c", "d"].map(NodeId::from).into();
        let outsider = NodeId::from("outsider");
        let everyone = Route {
            local: None,
            remote: ids.iter().cloned().map(RemoteInstance::bare).collect(),
        };
        for k in 0..200u32 {
            let key = rendezvous::key_hash(&k.to_be_bytes());
            let from_outside = names(Targets::new(&outsider, &everyone, None, Filter::default()).keyed(key));
            assert_eq!(from_outside.len(), 4, "every instance, once");
            assert_eq!(from_outside[0], rendezvous::owner(key, &ids).unwrap().as_str());
            // From each node, whose own instance is local: the same order.
            for me in &ids {
                let route = Route {
                    local: Some(std::sync::Arc::new(LocalService::new(
                        me,
                        Box::new(crate::test_support::AdderService { global: true }),
                        Default::default(),
                        crate::AdminStatus::Active,
                    ))),
                    remote: ids
                        .iter()
                        .filter(|n| *n != me)
                        .cloned()
                        .map(RemoteInstance::bare)
                        .collect(),
                };
                let seen = names(Targets::new(me, &route, None, Filter::default()).keyed(key));
                let seen: Vec<String> = seen
                    .into_iter()
                    .map(|n| if n == "local" { me.to_string() } else { n })
                    .collect();
                assert_eq!(seen, from_outside, "key {k} from {me}");
            }
        }
    }

    #[test]
    fn balancing_picks_where_the_walk_starts() {
        let (me, a, b, c) = ("me".into(), "a".into(), "b".into(), "c".into());
        let route = Route {
            local: None,
            remote: [&a, &b, &c].map(|n: &NodeId| RemoteInstance::bare(n.clone())).into(),
        };
        let names = |start: usize| -> Vec<String> {
            Targets::new(&me, &route, None, Filter::default())
                .starting_at(start)
                .map(|t| match t {
                    Target::Local(_) => "local".to_owned(),
                    Target::Remote(id) => id.to_string(),
                })
                .collect()
        };
        assert_eq!(names(1), ["b", "c", "a"], "a walk still tries every node");
        assert_eq!(names(5), ["c", "a", "b"]);
        // Two candidates: always both drawn; the one with fewer calls in flight wins.
        let two = Route {
            local: None,
            remote: [&a, &b].map(|n: &NodeId| RemoteInstance::bare(n.clone())).into(),
        };
        let busy = |node: &NodeId| if node.as_str() == "a" { 9 } else { 1 };
        for _ in 0..20 {
            assert_eq!(least_loaded(&two, Filter::default(), busy), 1);
        }
        let one = Route {
            local: None,
            remote: [RemoteInstance::bare(a.clone())].into(),
        };
        assert_eq!(least_loaded(&one, Filter::default(), busy), 0);
    }

    #[test]
    fn instances_of_another_version_or_without_the_method_are_skipped() {
        let me = NodeId::from("me");
        let instance = |node: &str, vsn: &str, sigs: &[(u32, u64)]| RemoteInstance {
            node: node.into(),
            vsn: vsn.parse().ok(),
            signatures: sigs.into(),
        };
        let route = Route {
            local: None,
            remote: vec![
                instance("v1", "1.4.2", &[(1, 10)]),
                instance("v2", "2.0.0", &[(1, 10), (2, 20)]),
                instance("old", "2.1.0", &[]),
                instance("odd", "not-semver", &[(1, 10), (2, 20)]),
                instance("other", "2.2.0", &[(1, 11), (2, 21)]),
            ]
            .into(),
        };
        let names = |filter: Filter<'_>| -> Vec<String> {
            Targets::new(&me, &route, None, filter)
                .map(|t| match t {
                    Target::Local(_) => "local".to_owned(),
                    Target::Remote(id) => id.to_string(),
                })
                .collect()
        };
        let method = |method, signature| Filter {
            vsn: None,
            method,
            signature,
        };
        // Method 1 as v1 and v2 declare it; "old" published no signatures
        // (unknown: the serving node checks).
        assert_eq!(names(method(1, 10)), ["v1", "v2", "old", "odd"]);
        // Method 2, new in v2: never sent to v1, which the walk names.
        assert_eq!(names(method(2, 20)), ["v2", "old", "odd"]);
        let mut walk = Targets::new(&me, &route, None, method(2, 20));
        walk.by_ref().for_each(drop);
        assert_eq!(walk.mismatched().map(NodeId::as_str), Some("v1"));
        // A call by name does not check signatures.
        assert_eq!(names(method(2, 0)).len(), 5);
        let v2 = crate::CallOptions::default().vsn("^2");
        let req = v2.vsn.as_deref();
        let with_vsn = |signature| Filter {
            vsn: req,
            method: 1,
            signature,
        };
        assert_eq!(names(with_vsn(10)), ["v2", "old"], "2.x only; not-semver never matches");
        assert_eq!(names(with_vsn(0)), ["v2", "old", "other"]);
        let none = crate::CallOptions::default().vsn("^3");
        let filter = Filter {
            vsn: none.vsn.as_deref(),
            ..with_vsn(0)
        };
        assert!(names(filter).is_empty());
    }
}
