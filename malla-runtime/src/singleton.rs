//! Singleton services: every node may serve one, one instance is active,
//! the others stand by and answer `ServiceNotAvailable`, so a caller that
//! reached a standby fails over to the owner. What a singleton is and what
//! its owner sees; the node runs them (`node/singletons.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// How the active instance of a singleton is chosen, named for what each
/// promises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SingletonMode {
    /// The owner is the instance with the highest rendezvous score for the
    /// service's name among the active instances this node sees: every
    /// node with the same view picks the same one, with no round trip.
    /// **During a partition each side may have its own owner**; when the
    /// sides see each other again all but one stand by. For work that
    /// tolerates a short overlap, or is fenced elsewhere.
    #[default]
    Gossip,
    /// Ownership is a lease from the consensus group (a lock named
    /// `malla.singleton.<service>`), with its fencing token: never two
    /// active owners with overlapping leases, even across a partition. An
    /// owner cut off from the quorum stands by when its lease runs out; a
    /// crashed owner is replaced a lease later.
    Strict,
}

impl SingletonMode {
    /// `gossip` or `strict`.
    pub fn as_str(self) -> &'static str {
        match self {
            SingletonMode::Gossip => "gossip",
            SingletonMode::Strict => "strict",
        }
    }
}

/// What an implementation is told when its instance becomes active or
/// stands by, to start and stop its own work (timers, consumers).
///
/// Hooks are plain functions run on the node's runtime: spawn what must wait.
pub trait SingletonHooks: Send + Sync + 'static {
    /// This instance is becoming the active one: called just before it
    /// takes its first request. `token` is the lease's fencing token in
    /// strict mode (hand it to what the singleton writes to), none in
    /// gossip mode.
    fn on_activate(&self, token: Option<u64>) {
        let _ = token;
    }

    /// This instance stands by from now on: called once it stopped taking
    /// requests (a request already running may still finish).
    fn on_deactivate(&self, reason: &Deactivation) {
        let _ = reason;
    }
}

/// Why an active instance stood by.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deactivation {
    /// Gossip mode: the view changed and names another owner.
    OwnerChanged(NodeId),
    /// Strict mode: the lease could not be renewed in time.
    LeaseLost,
    /// The service was paused or drained here, or the node is stopping: the
    /// lease (strict mode) was given back.
    Stopped,
}

/// A service served as a singleton ([`ServeOptions::singleton`](crate::ServeOptions::singleton)).
///
/// ```
/// use std::time::Duration;
/// use malla_runtime::{ServeOptions, Singleton, SingletonMode};
///
/// let options = ServeOptions::default()
///     .singleton(Singleton::new(SingletonMode::Strict).lease(Duration::from_secs(2)));
/// ```
#[derive(Clone)]
pub struct Singleton {
    pub(crate) mode: SingletonMode,
    pub(crate) lease: Duration,
    pub(crate) hooks: Option<Arc<dyn SingletonHooks>>,
}

/// The instance metadata key a singleton's mode is published under
/// (`gossip` or `strict`).
pub const SINGLETON_METADATA: &str = "malla.singleton";

/// The lock a strict singleton's owner holds: `malla.singleton.<service>`.
pub fn singleton_lock(service: &str) -> String {
    format!("{SINGLETON_METADATA}.{service}")
}

/// A strict singleton's lease when none is set: a crashed owner is replaced
/// within about this long.
pub const DEFAULT_SINGLETON_LEASE: Duration = Duration::from_secs(2);

impl Singleton {
    /// A singleton in `mode`.
    pub fn new(mode: SingletonMode) -> Self {
        Singleton {
            mode,
            lease: DEFAULT_SINGLETON_LEASE,
            hooks: None,
        }
    }

    /// The lease of a strict singleton (default 2 s; renewed every third
    /// of it; the lock's bounds apply).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Tells `hooks` when this instance becomes active and stands by.
    pub fn hooks(mut self, hooks: impl SingletonHooks) -> Self {
        self.hooks = Some(Arc::new(hooks));
        self
    }
}

impl fmt::Debug for Singleton {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Singleton")
            .field("mode", &self.mode)
            .field("lease", &self.lease)
            .field("hooks", &self.hooks.is_some())
            .finish()
    }
}

/// A singleton served here, as [`Node::singletons`](crate::Node::singletons) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingletonStatus {
    /// The service.
    pub service: String,
    /// Its mode.
    pub mode: SingletonMode,
    /// Whether this node's instance is the active one.
    pub active: bool,
    /// The owner as this node knows it: itself when active; in gossip mode
    /// the one its view names; in strict mode none while it stands by
    /// (ask the group: `node.locks()`).
    pub owner: Option<NodeId>,
    /// The lease's fencing token while active in strict mode.
    pub token: Option<u64>,
    /// Since when this node's instance is active or standing by.
    pub since: SystemTime,
    /// How many times it became active.
    pub activations: u64,
}

/// A served singleton's state, shared by the instance (which answers
/// only while active) and the node's task that runs it.
pub(crate) struct SingletonState {
    pub(crate) config: Singleton,
    /// Read on every request: a standby answers `ServiceNotAvailable`.
    active: AtomicBool,
    status: Mutex<SingletonStatus>,
}

impl SingletonState {
    pub(crate) fn new(service: &str, config: Singleton) -> Self {
        let status = SingletonStatus {
            service: service.to_owned(),
            mode: config.mode,
            active: false,
            owner: None,
            token: None,
            since: SystemTime::now(),
            activations: 0,
        };
        SingletonState {
            config,
            active: AtomicBool::new(false),
            status: Mutex::new(status),
        }
    }

    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn status(&self) -> SingletonStatus {
        self.lock().clone()
    }

    /// Records the owner now known; returns whether this node's instance
    /// went from standby to active (`Some(true)`), the other way
    /// (`Some(false)`), or stayed as it was (`None`).
    pub(crate) fn set(&self, active: bool, owner: Option<NodeId>, token: Option<u64>) -> Option<bool> {
        let mut status = self.lock();
        let changed = status.active != active;
        status.owner = owner;
        status.token = token;
        if changed {
            self.active.store(active, Ordering::Release);
            status.active = active;
            status.since = SystemTime::now();
            status.activations += u64::from(active);
        }
        changed.then_some(active)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SingletonStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reports_changes_only_and_counts_activations() {
        let state = SingletonState::new("S", Singleton::new(SingletonMode::Gossip));
        assert!(!state.is_active(), "a singleton stands by until its node decides");
        let me = NodeId::from("me");
        assert_eq!(state.set(false, Some(NodeId::from("other")), None), None);
        assert_eq!(state.set(true, Some(me.clone()), None), Some(true));
        assert!(state.is_active());
        assert_eq!(state.set(true, Some(me.clone()), None), None, "no change, no hook");
        assert_eq!(state.set(false, None, None), Some(false));
        assert_eq!(state.set(true, Some(me), Some(9)), Some(true));
        let status = state.status();
        assert_eq!((status.activations, status.token, status.active), (2, Some(9), true));
    }
}
