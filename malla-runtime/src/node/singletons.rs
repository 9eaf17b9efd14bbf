//! Running singleton services: a task per singleton served here decides
//! whether this node's instance is the active one, flips it, and tells the
//! implementation's hooks. Gossip mode recomputes the owner from this
//! node's view whenever the cluster changes; strict mode holds a lease
//! from the consensus group.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use super::parts::NodeParts;
use crate::coord::LockRequest;
use crate::registry::LocalService;
use crate::singleton::{Deactivation, SingletonMode, SingletonState, singleton_lock};
use crate::{Error, Event, NodeId, rendezvous};

/// How often a singleton's task looks again without a cluster event (and
/// how soon a paused or drained owner stands by).
const RECHECK: Duration = Duration::from_millis(250);

/// How long a strict singleton's standby waits for the lease at a time.
const LEASE_WAIT: Duration = Duration::from_secs(1);

/// Starts the task that runs `local`, a singleton just served on `parts`.
pub(super) fn start(parts: &Arc<NodeParts>, local: &Arc<LocalService>) {
    let Some(state) = local.singleton.clone() else { return };
    let (parts, local) = (Arc::downgrade(parts), Arc::clone(local));
    match state.config.mode {
        SingletonMode::Gossip => tokio::spawn(gossip(parts, local, state)),
        SingletonMode::Strict => tokio::spawn(strict(parts, local, state)),
    };
}

/// Gossip mode: active while this node's view names it the owner.
async fn gossip(parts: Weak<NodeParts>, local: Arc<LocalService>, state: Arc<SingletonState>) {
    let key = rendezvous::key_hash(local.name().as_bytes());
    let Some((mut events, gossip)) = parts
        .upgrade()
        .map(|p| (p.events.subscribe(), p.discovery.get().map(|d| d.interval)))
    else {
        return;
    };
    if let Some(interval) = gossip {
        settle(&mut events, interval).await;
    }
    loop {
        let Some(node) = parts.upgrade().filter(|p| !p.network.is_shutting_down()) else {
            break;
        };
        let owner = gossip_owner(&node, key, local.name(), Some(&local));
        let me = local.is_active().then_some(&node.id);
        let active = owner.as_ref() == Some(&node.id);
        let reason = match (&owner, me) {
            (_, None) => Deactivation::Stopped,
            (Some(other), Some(_)) => Deactivation::OwnerChanged(other.clone()),
            (None, Some(_)) => Deactivation::Stopped,
        };
        transition(&node.id, &local, &state, active, owner, None, reason);
        drop(node);
        tokio::select! {
            _ = events.recv() => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
    let me = parts
        .upgrade()
        .map(|p| p.id.clone())
        .unwrap_or_else(|| NodeId::from("?"));
    transition(&me, &local, &state, false, None, None, Deactivation::Stopped);
}

/// The gossip mode's owner of `service` (whose name hashes to `key`) in
/// `node`'s view: the highest rendezvous score among the instances it
/// sees, this node's own (`local`) if it is active. A paused or drained
/// instance is no candidate: the others take over.
pub(super) fn gossip_owner(node: &NodeParts, key: u64, service: &str, local: Option<&LocalService>) -> Option<NodeId> {
    let route = node.registry.slot(service).route_full();
    let me = local.filter(|l| l.is_active()).map(|_| &node.id);
    rendezvous::owner(key, me.into_iter().chain(route.remote.iter().map(|r| &r.node))).cloned()
}

/// Waits for a gossiping node's view to settle: until two gossip rounds
/// pass without a cluster event, ten at most. A node that decided at once
/// would see only the peers gossip had brought so far, and run an instance
/// of its own until it saw the owner (each node of a cluster starting
/// together did, in the tests).
async fn settle(events: &mut broadcast::Receiver<Event>, interval: Duration) {
    let cap = tokio::time::sleep(interval * 10);
    tokio::pin!(cap);
    loop {
        tokio::select! {
            _ = events.recv() => {}
            () = tokio::time::sleep(interval * 2) => return,
            () = &mut cap => return,
        }
    }
}

/// Strict mode: active while this node holds the singleton's lease.
async fn strict(parts: Weak<NodeParts>, local: Arc<LocalService>, state: Arc<SingletonState>) {
    let lock = singleton_lock(local.name());
    let lease = state.config.lease;
    loop {
        let Some(node) = parts.upgrade().filter(|p| !p.network.is_shutting_down()) else {
            return;
        };
        if !local.is_active() {
            drop(node);
            tokio::time::sleep(RECHECK).await;
            continue;
        }
        let me = node.id.clone();
        let request = LockRequest::new(node.coord.clone(), lock.clone())
            .ttl(lease)
            .timeout(LEASE_WAIT);
        drop(node);
        let mut guard = match request.await {
            Ok(guard) => guard,
            Err(Error::LockBusy { .. }) => continue,
            Err(err) => {
                tracing::debug!(
                    service = local.name(),
                    "a strict singleton's lease was not granted: {err}"
                );
                tokio::time::sleep(RECHECK).await;
                continue;
            }
        };
        let token = guard.token().value();
        transition(
            &me,
            &local,
            &state,
            true,
            Some(me.clone()),
            Some(token),
            Deactivation::Stopped,
        );
        let reason = loop {
            // Wake by the claim's end at the latest, not only on the
            // renewer's notice that the lease is lost.
            let claim_ends = guard.valid_until().map(tokio::time::Instant::from_std);
            let wake = claim_ends.map_or(tokio::time::Instant::now(), |end| {
                end.min(tokio::time::Instant::now() + RECHECK)
            });
            tokio::select! {
                () = guard.lost() => break Deactivation::LeaseLost,
                () = tokio::time::sleep_until(wake) => {
                    if !guard.is_held() {
                        break Deactivation::LeaseLost;
                    }
                    let running = parts.upgrade().is_some_and(|p| !p.network.is_shutting_down());
                    if !running || !local.is_active() {
                        break Deactivation::Stopped;
                    }
                }
            }
        };
        // Stand by first, then give the lease back: never active unleased.
        transition(&me, &local, &state, false, None, None, reason.clone());
        if reason == Deactivation::Stopped
            && let Err(err) = guard.release().await
        {
            tracing::debug!(
                service = local.name(),
                "a strict singleton's lease was not given back: {err}"
            );
        }
    }
}

/// Applies what a task decided; on a change, logs it and tells the hooks:
/// `on_activate` before the instance takes requests (what it starts is
/// running when the first one arrives), `on_deactivate` after it stopped
/// taking them. One task per singleton calls this, so the flag cannot
/// change between the two reads.
fn transition(
    me: &NodeId,
    local: &LocalService,
    state: &SingletonState,
    active: bool,
    owner: Option<NodeId>,
    token: Option<u64>,
    reason: Deactivation,
) {
    let (service, mode) = (local.name(), state.config.mode.as_str());
    let hooks = state.config.hooks.as_deref();
    let activating = active && !state.is_active();
    if activating {
        tracing::info!(node = %me, service, mode, ?token, "singleton active here");
        if let Some(hooks) = hooks {
            hooks.on_activate(token);
        }
    }
    if state.set(active, owner, token) == Some(false) {
        tracing::info!(node = %me, service, mode, ?reason, "singleton standing by");
        if let Some(hooks) = hooks {
            hooks.on_deactivate(&reason);
        }
    }
}
