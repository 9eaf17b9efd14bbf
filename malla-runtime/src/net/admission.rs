//! How many handshakes a node runs at once, in all and per source.
//!
//! Anyone who reaches the port can open sockets and say nothing; each one
//! holds a handshake for up to its timeout. Past a limit, the *oldest*
//! pending handshake of that source, or in all of the *fullest* source, is
//! dropped for the new one, rather than the new one refused: a flood of
//! idle sockets then only evicts itself, while a real node's handshake,
//! which takes a round trip or two, completes long before it could be
//! evicted.
//!
//! A source is an IPv4 address, or an IPv6 /64: one IPv6 host is usually
//! given a whole /64 and could otherwise take every slot with addresses of
//! its own. IPv4-mapped IPv6 addresses count as the IPv4 address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
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

    /// Admits a handshake from `peer`, evicting the oldest pending one of
    /// the same source, or of the fullest, to stay within the limits.
    /// Returns the ticket and how many were evicted.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> (Ticket, usize) {
        let source = source_of(peer);
        let mut slots = lock(&self.slots);
        let mut evicted = 0;
        if slots.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            let oldest = slots.oldest_of(source);
            evicted += oldest.map_or(0, |id| slots.evict(id));
        }
        if slots.pending.len() >= self.max {
            // The fullest source pays (of several, the one with the oldest
            // handshake): many sources with one handshake each (real
            // nodes) outlast one source with many.
            let most = slots.per_source.values().copied().max().unwrap_or(0);
            let oldest = slots
                .pending
                .iter()
                .find(|(_, (ip, _))| slots.per_source.get(ip) == Some(&most))
                .map(|(id, _)| *id);
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

/// The source `peer` counts against: itself if IPv4, its /64 if IPv6.
fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

impl Slots {
    /// The oldest pending handshake of `source`.
    fn oldest_of(&self, source: IpAddr) -> Option<u64> {
        self.pending
            .iter()
            .find(|(_, (ip, _))| *ip == source)
            .map(|(id, _)| *id)
    }

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

    #[test]
    fn an_ipv6_64_is_one_source_and_the_fullest_source_pays() {
        let admission = Admission::new(4, 2);
        let host = |i: u16| -> IpAddr { format!("2001:db8:0:1::{i:x}").parse().unwrap() };
        let (f1, _) = admission.admit(host(1));
        let (f2, _) = admission.admit(host(2));
        // A third address of the same /64 evicts the /64's oldest.
        let (f3, evicted) = admission.admit(host(3));
        assert_eq!(evicted, 1);
        assert!(f1.evicted.is_cancelled() && !f2.evicted.is_cancelled());
        // A v4-mapped address is its IPv4 address.
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert_eq!(source_of(mapped), "10.0.0.9".parse::<IpAddr>().unwrap());
        let (n1, _) = admission.admit("10.0.0.9".parse().unwrap());
        let (n2, _) = admission.admit("10.0.0.10".parse().unwrap());
        assert_eq!(admission.pending(), 4);
        // Full: the next one evicts from the /64 (two pending), not the
        // oldest of all (f2 is the oldest, but so is its source the fullest).
        let (n3, evicted) = admission.admit("10.0.0.11".parse().unwrap());
        assert_eq!(evicted, 1);
        assert!(f2.evicted.is_cancelled(), "the fullest source's oldest went");
        let (_n4, _) = admission.admit("10.0.0.12".parse().unwrap());
        assert!(f3.evicted.is_cancelled(), "sources level: the oldest of all goes");
        assert!(![&n1, &n2, &n3].iter().any(|t| t.evicted.is_cancelled()));
    }
}
