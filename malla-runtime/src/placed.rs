//! Services started "somewhere in the cluster" (Horde's DynamicSupervisor,
//! the part users need): every node that offers one may run it, one does,
//! and when that node dies or stands by another node builds a fresh
//! instance. A singleton whose instance exists only while active: the node
//! serves a [`Placed`] dispatcher, which the singleton's hooks fill with an
//! instance built by the user's factory on activation and empty on
//! deactivation.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::ServiceManifest;
use crate::service::{DispatchError, DispatchFuture, Format, Service};
use crate::singleton::{Deactivation, SingletonHooks};

/// A served service's type, for what must know its manifest before there
/// is an instance (`Node::spawn_somewhere`). Implemented by the `…Server`
/// types that `#[malla::service]` generates.
pub trait NamedService: Service + Sized {
    /// What the service declares.
    fn service_manifest() -> &'static ServiceManifest;
}

/// What the dispatcher and its hooks share: the factory, and the instance
/// running now if this node is the owner.
struct Slot<S, F> {
    factory: F,
    running: ArcSwapOption<S>,
}

/// The dispatcher a node serves for a placed service: requests go to the
/// running instance; with none (never reached in practice: a standby is
/// refused before dispatch) a request is refused as not available, so the
/// caller fails over.
pub(crate) struct Placed<S, F>(Arc<Slot<S, F>>);

/// The singleton hooks that start and stop the instance, then tell the
/// user's hooks.
pub(crate) struct PlacedHooks<S, F> {
    slot: Arc<Slot<S, F>>,
    user: Option<Arc<dyn SingletonHooks>>,
}

/// A dispatcher for what `factory` builds, and the hooks that run it.
pub(crate) fn placed<S, F>(factory: F, user: Option<Arc<dyn SingletonHooks>>) -> (Placed<S, F>, PlacedHooks<S, F>)
where
    S: NamedService,
    F: Fn(Option<u64>) -> S + Send + Sync + 'static,
{
    let slot = Arc::new(Slot {
        factory,
        running: ArcSwapOption::empty(),
    });
    (Placed(Arc::clone(&slot)), PlacedHooks { slot, user })
}

impl<S, F> Service for Placed<S, F>
where
    S: NamedService,
    F: Fn(Option<u64>) -> S + Send + Sync + 'static,
{
    fn manifest(&self) -> &'static ServiceManifest {
        S::service_manifest()
    }

    fn dispatch(&self, method: usize, format: Format, args: &[u8]) -> Result<DispatchFuture, DispatchError> {
        match &*self.0.running.load() {
            Some(instance) => instance.dispatch(method, format, args),
            None => Err(DispatchError::not_available()),
        }
    }

    // No typed handle: the instance changes, a handle taken once would
    // outlive it. Calls from this node take the encoded path.
}

impl<S, F> SingletonHooks for PlacedHooks<S, F>
where
    S: NamedService,
    F: Fn(Option<u64>) -> S + Send + Sync + 'static,
{
    fn on_activate(&self, token: Option<u64>) {
        // Built before the node routes requests here (the hook runs first).
        self.slot.running.store(Some(Arc::new((self.slot.factory)(token))));
        if let Some(user) = &self.user {
            user.on_activate(token);
        }
    }

    fn on_deactivate(&self, reason: &Deactivation) {
        if let Some(user) = &self.user {
            user.on_deactivate(reason);
        }
        // Dropped once the requests still running on it finish.
        self.slot.running.store(None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures_util::FutureExt;

    use super::*;
    use crate::test_support::{AdderService, add_args};

    impl NamedService for AdderService {
        fn service_manifest() -> &'static ServiceManifest {
            crate::test_support::Adder::manifest(true)
        }
    }

    #[test]
    fn an_instance_exists_only_between_activation_and_deactivation() {
        let built = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&built);
        let (service, hooks) = placed(
            move |token| {
                counter.fetch_add(1, Ordering::Relaxed);
                assert_eq!(token, Some(7));
                AdderService { global: true }
            },
            None,
        );
        let refused = service.dispatch(0, Format::Postcard, &add_args(1, 2)).err();
        assert!(
            refused.is_some_and(|e| e.is_not_available()),
            "nothing runs before activation"
        );

        hooks.on_activate(Some(7));
        let reply = service.dispatch(0, Format::Postcard, &add_args(40, 2)).ok().unwrap();
        let reply = reply.now_or_never().unwrap().unwrap();
        assert_eq!(postcard::from_bytes::<i64>(&reply).unwrap(), 42);

        hooks.on_deactivate(&Deactivation::LeaseLost);
        assert!(service.dispatch(0, Format::Postcard, &add_args(1, 2)).is_err());
        hooks.on_activate(Some(7));
        assert_eq!(
            built.load(Ordering::Relaxed),
            2,
            "every activation builds a fresh instance"
        );
    }
}
