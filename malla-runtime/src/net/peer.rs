//! What a node knows about each other node: where to dial it, and the
//! connection calls use. One connection per pair of nodes: when both dial at
//! once, both keep the connection opened by the node whose name sorts first
//! and retire the other, which closes once idle, so no call is lost.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustc_hash::FxHashMap;
use tokio::time::Instant;

use crate::NodeId;
use crate::connection::{CloseReason, Connection, Initiator};
use crate::sync::lock;
use crate::wire::Goodbye;

/// Another node.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    conn: ArcSwapOption<Connection>,
    state: Mutex<PeerState>,
    /// Serializes dials to this peer, so concurrent callers share one.
    pub(crate) one_dial: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct PeerState {
    addr: Option<SocketAddr>,
    hidden: bool,
    /// A background dial is under way.
    background_dial: bool,
    /// Background dials that failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// Longest pause between two background dials of a live node.
const MAX_REDIAL: Duration = Duration::from_secs(5);

/// What installing a connection changed.
pub(crate) struct Installed {
    /// The connection calls should use now.
    pub(crate) current: Arc<Connection>,
    /// Whether the peer went from unreachable to reachable.
    pub(crate) came_up: bool,
}

impl Peer {
    fn new(id: NodeId) -> Self {
        Peer {
            id,
            conn: ArcSwapOption::empty(),
            state: Mutex::new(PeerState::default()),
            one_dial: tokio::sync::Mutex::new(()),
        }
    }

    /// The connection to use for new calls, if one is up.
    pub(crate) fn connection(&self) -> Option<Arc<Connection>> {
        self.conn.load_full().filter(|c| c.is_usable())
    }

    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.lock().addr
    }

    pub(crate) fn set_addr(&self, addr: SocketAddr) {
        self.lock().addr = Some(addr);
    }

    /// Whether to dial this peer in the background now; if so, marks a dial
    /// as under way until `dial_finished`.
    pub(crate) fn start_background_dial(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.background_dial || state.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        state.background_dial = true;
        true
    }

    /// Records a background dial's outcome: failures back off exponentially.
    pub(crate) fn dial_finished(&self, succeeded: bool) {
        let mut state = self.lock();
        state.background_dial = false;
        if succeeded {
            state.failures = 0;
            state.retry_at = None;
        } else {
            state.failures = state.failures.saturating_add(1);
            let pause = Duration::from_millis(100).saturating_mul(1 << state.failures.min(6));
            state.retry_at = Some(Instant::now() + pause.min(MAX_REDIAL));
        }
    }

    /// Adopts a freshly established connection, resolving duplicates.
    pub(crate) fn install(&self, me: &NodeId, conn: Arc<Connection>) -> Installed {
        let mut state = self.lock();
        if let Some(listen) = conn.peer.listen {
            state.addr = Some(listen);
        }
        state.hidden = conn.peer.hidden;
        let previous = self.conn.load_full();
        let usable_before = previous.as_ref().is_some_and(|c| c.is_usable());
        let keep_new = match &previous {
            Some(old) if old.is_usable() && old.peer.incarnation == conn.peer.incarnation => {
                keeps_new(me, &self.id, opened_by(old, me), opened_by(&conn, me))
            }
            // No usable connection, or one to an earlier life of the peer.
            _ => true,
        };
        let (current, dropped) = if keep_new {
            self.conn.store(Some(Arc::clone(&conn)));
            (conn, previous)
        } else {
            (previous.expect("kept the previous connection"), Some(conn))
        };
        // Retiring or closing may call back into this peer: not under the lock.
        drop(state);
        if let Some(dropped) = dropped {
            if dropped.peer.incarnation == current.peer.incarnation {
                dropped.retire(Goodbye::Duplicate);
            } else {
                dropped.close(CloseReason::Local("the peer restarted"));
            }
        }
        Installed {
            came_up: !usable_before,
            current,
        }
    }

    /// Forgets `conn` if it is the current connection; true if it was.
    pub(crate) fn remove(&self, conn: &Arc<Connection>) -> bool {
        let _state = self.lock();
        let current = self.conn.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            self.conn.store(None);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        lock(&self.state)
    }
}

/// Of two live connections between the same two lives of `me` and `peer`,
/// whether the one opened by `new_opener` replaces the one opened by
/// `old_opener`. Both nodes dialed at once: both keep the one opened by the
/// node whose name sorts first, so both sides choose the same. The same
/// opener twice means it gave up on the old one: keep the new.
fn keeps_new(me: &NodeId, peer: &NodeId, old_opener: &NodeId, new_opener: &NodeId) -> bool {
    new_opener == old_opener || new_opener == me.min(peer)
}

/// The name of the node that opened `conn`.
fn opened_by<'a>(conn: &'a Connection, me: &'a NodeId) -> &'a NodeId {
    match conn.initiator {
        Initiator::Us => me,
        Initiator::Peer => &conn.peer.name,
    }
}

/// Every peer a node has heard of. Every remote call looks its peer up, and
/// peers come and go rarely: reads are lock-free snapshots, and a change
/// copies the map.
#[derive(Default)]
pub(crate) struct Peers {
    map: ArcSwap<FxHashMap<NodeId, Arc<Peer>>>,
    /// Serializes changes; readers never take it.
    write: Mutex<()>,
}

impl Peers {
    pub(crate) fn get(&self, id: &NodeId) -> Option<Arc<Peer>> {
        self.map.load().get(id).cloned()
    }

    /// The usable connection to `id`, if there is one: what every call
    /// asks, without taking a reference to the peer.
    pub(crate) fn connection(&self, id: &NodeId) -> Option<Arc<Connection>> {
        self.map.load().get(id)?.connection()
    }

    pub(crate) fn get_or_insert(&self, id: &NodeId) -> Arc<Peer> {
        if let Some(peer) = self.get(id) {
            return peer;
        }
        self.change(|map| Arc::clone(map.entry(id.clone()).or_insert_with(|| Arc::new(Peer::new(id.clone())))))
    }

    pub(crate) fn all(&self) -> Vec<Arc<Peer>> {
        self.map.load().values().cloned().collect()
    }

    /// Forgets `id` unless a connection to it is up: a node that left for
    /// good must not be kept (and dialed) forever.
    pub(crate) fn forget(&self, id: &NodeId) {
        if self.get(id).is_some_and(|peer| peer.connection().is_none()) {
            self.change(|map| {
                if map.get(id).is_some_and(|peer| peer.connection().is_none()) {
                    map.remove(id);
                }
            });
        }
    }

    fn change<T>(&self, change: impl FnOnce(&mut FxHashMap<NodeId, Arc<Peer>>) -> T) -> T {
        let _write = lock(&self.write);
        let mut map = FxHashMap::clone(&self.map.load());
        let out = change(&mut map);
        self.map.store(Arc::new(map));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::keeps_new;
    use crate::NodeId;

    #[test]
    fn both_sides_keep_the_connection_opened_by_the_first_name() {
        let (a, b) = (NodeId::from("a"), NodeId::from("b"));
        // a's view and b's view of the same race agree: a's connection stays.
        assert!(keeps_new(&a, &b, &b, &a), "a replaces b's connection with its own");
        assert!(!keeps_new(&a, &b, &a, &b), "a keeps its own over b's");
        assert!(keeps_new(&b, &a, &b, &a), "b replaces its own with a's");
        assert!(!keeps_new(&b, &a, &a, &b), "b keeps a's over its own");
    }

    #[test]
    fn the_same_opener_twice_replaces_its_old_connection() {
        let (a, b) = (NodeId::from("a"), NodeId::from("b"));
        for (me, peer) in [(&a, &b), (&b, &a)] {
            for opener in [&a, &b] {
                assert!(keeps_new(me, peer, opener, opener), "{me} sees {opener} redial");
            }
        }
    }
}
