//! How many handshakes a node runs at once, in all and per source address.
//!
//! Anyone who reaches the port can open sockets and say nothing; each one
//! holds a handshake for up to its timeout. Past a limit, the *oldest*
//! pending handshake (of that source, or of all) is dropped for the new one,
//! rather than the new one refused: a flood of idle sockets then only
//! evicts itself, while a real node's handshake, which takes a round trip or
//! two, completes long before it could be evicted.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// Pending handshakes, oldest first.
pub(crate) struct Admission {
    max: usize,
    max_per_source: usize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    /// By admission order: the source and how to drop the handshake.
    pending: BTreeMap<u64, (IpAddr, CancellationToken)>,
    per_source: HashMap<IpAddr, usize>,
}

/// One admitted handshake; its slot is freed when dropped.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// Cancelled when a newer handshake took the slot.
    pub(crate) evicted: CancellationToken,
}

impl Admission {
    pub(crate) fn new(max: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Admission {
            max: max.max(1),
            max_per_source: max_per_source.max(1),
            slots: Mutex::new(Slots::default()),
        })
    }

    /// Admits a handshake from `source`, evicting the oldest pending one of
    /// the same source, or of all, to stay within the limits. Returns the
    /// ticket and how many were evicted.
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr) -> (Ticket, usize) {
        let mut slots = lock(&self.slots);
        let mut evicted = 0;
        if slots.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            let oldest = slots
                .pending
                .iter()
                .find(|(_, (ip, _))| *ip == source)
                .map(|(id, _)| *id);
            evicted += oldest.map_or(0, |id| slots.evict(id));
        }
        if slots.pending.len() >= self.max {
            let oldest = slots.pending.keys().next().copied();
            evicted += oldest.map_or(0, |id| slots.evict(id));
        }
        let id = slots.next;
        slots.next += 1;
        let token = CancellationToken::new();
        slots.pending.insert(id, (source, token.clone()));
        *slots.per_source.entry(source).or_default() += 1;
        let ticket = Ticket {
            admission: Arc::clone(self),
            id,
            evicted: token,
        };
        (ticket, evicted)
    }

    /// Handshakes pending now.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.slots).pending.len()
    }
}

impl Slots {
    /// Drops handshake `id`; 1 if it was pending.
    fn evict(&mut self, id: u64) -> usize {
        match self.remove(id) {
            Some(token) => {
                token.cancel();
                1
            }
            None => 0,
        }
    }

    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let (source, token) = self.pending.remove(&id)?;
        if let Some(count) = self.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
        Some(token)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.admission.slots).remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_handshake_makes_room_per_source_and_in_all() {
        let admission = Admission::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let (a1, _) = admission.admit(a);
        let (a2, _) = admission.admit(a);
        let (a3, evicted) = admission.admit(a);
        assert_eq!(evicted, 1);
        assert!(
            a1.evicted.is_cancelled() && !a2.evicted.is_cancelled(),
            "a's oldest went"
        );
        let (b1, evicted) = admission.admit(b);
        assert_eq!((evicted, admission.pending()), (0, 3));
        let (_b2, evicted) = admission.admit(b);
        assert_eq!(evicted, 1);
        assert!(a2.evicted.is_cancelled(), "the oldest of all went");
        assert!(!a3.evicted.is_cancelled() && !b1.evicted.is_cancelled());
        drop((a1, a2, a3, b1));
        assert_eq!(admission.pending(), 1, "finished handshakes free their slot");
    }
}
