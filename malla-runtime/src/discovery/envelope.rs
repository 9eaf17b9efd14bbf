//! What a sealed gossip datagram carries besides chitchat's message, and the
//! checks a receiver makes with it.
//!
//! ```text
//! envelope = sender (u64) | counter (u64) | sent at (u64, ms since 1970)
//!          | reply to (address) | to (address) | part (u8: index << 4 | count) | body
//! address  = family (u8: 4 or 6) | ip (16, IPv4 mapped) | port (u16)
//! ```
//!
//! All of it is under the seal, so only a cookie holder can write it:
//! - `sender` is random per node start and `counter` grows with every
//!   datagram: a receiver remembers, per sender, the highest counter and
//!   the 64 before it, and drops any datagram it has seen (a replay);
//! - `sent at` bounds how old a datagram may be (ten minutes either way:
//!   clocks need only be roughly right), so a datagram captured long ago is
//!   refused by a node that has forgotten its sender;
//! - `reply to` is where the sender gossips: replies go there, never to the
//!   datagram's source address, which anyone can spoof; so a datagram
//!   replayed from a forged source draws no reply to that source;
//! - chitchat writes messages of up to 65 507 bytes, the most a UDP
//!   datagram carries, and sealing adds bytes: a message that does not fit
//!   one datagram travels in `count` parts (at most two, enough for any
//!   message), reassembled by the receiver.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of the envelope before the body.
pub(crate) const HEADER_LEN: usize = 8 + 8 + 8 + 19 + 19 + 1;
/// How far a datagram's time may be from ours.
const MAX_SKEW: Duration = Duration::from_secs(600);
/// Senders remembered; past it, the one heard from longest ago is forgotten.
const MAX_SENDERS: usize = 4096;
/// Messages being reassembled at once, and how long their parts wait.
const MAX_PARTIAL: usize = 16;
const PARTIAL_TTL: Duration = Duration::from_secs(5);
/// Parts a message may have.
const MAX_PARTS: u8 = 2;

/// The header of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) sender: u64,
    pub(crate) counter: u64,
    pub(crate) sent_at_ms: u64,
    pub(crate) reply_to: SocketAddr,
    /// Where the sender sent it.
    pub(crate) to: SocketAddr,
    /// This part's index, and how many the message has.
    pub(crate) part: (u8, u8),
}

impl Header {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(&self.sent_at_ms.to_le_bytes());
        write_addr(self.reply_to, out);
        write_addr(self.to, out);
        out.push(self.part.0 << 4 | self.part.1);
    }

    /// Reads a header; `None` if the bytes cannot be one.
    pub(crate) fn read(bytes: &[u8]) -> Option<(Header, &[u8])> {
        if bytes.len() < HEADER_LEN {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let part = (bytes[62] >> 4, bytes[62] & 0x0f);
        if part.1 == 0 || part.1 > MAX_PARTS || part.0 >= part.1 {
            return None;
        }
        let header = Header {
            sender: u64_at(0),
            counter: u64_at(8),
            sent_at_ms: u64_at(16),
            reply_to: read_addr(bytes[24..43].try_into().expect("an address"))?,
            to: read_addr(bytes[43..62].try_into().expect("an address"))?,
            part,
        };
        Some((header, &bytes[HEADER_LEN..]))
    }
}

fn write_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    let (family, ip) = match addr.ip() {
        IpAddr::V4(ip) => (4u8, ip.to_ipv6_mapped()),
        IpAddr::V6(ip) => (6u8, ip),
    };
    out.push(family);
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&addr.port().to_le_bytes());
}

fn read_addr(bytes: &[u8; 19]) -> Option<SocketAddr> {
    let octets: [u8; 16] = bytes[1..17].try_into().expect("sixteen bytes");
    let ip = Ipv6Addr::from(octets);
    let ip = match bytes[0] {
        4 => IpAddr::V4(ip.to_ipv4_mapped()?),
        6 => IpAddr::V6(ip),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_le_bytes([bytes[17], bytes[18]])))
}

/// Milliseconds since 1970 by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a datagram is dropped after it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Seen before: a replay.
    Replayed,
    /// Sent too long ago, or from too far in the future.
    Stale,
    /// Sent to another node.
    Misdirected,
}

/// The counters seen per sender.
#[derive(Default)]
pub(crate) struct ReplayGuard {
    senders: HashMap<u64, Window>,
}

struct Window {
    highest: u64,
    /// Bit `i`: counter `highest - i` was seen.
    seen: u64,
    heard: Instant,
}

impl ReplayGuard {
    /// Whether the datagram with `header` is new, fresh and sent to one of
    /// `ours`; records it if so.
    pub(crate) fn admit(
        &mut self,
        header: &Header,
        ours: &[SocketAddr],
        now_ms: u64,
        now: Instant,
    ) -> Result<(), Refused> {
        if !ours.contains(&header.to) {
            return Err(Refused::Misdirected);
        }
        if header.sent_at_ms.abs_diff(now_ms) > MAX_SKEW.as_millis() as u64 {
            return Err(Refused::Stale);
        }
        if !self.senders.contains_key(&header.sender) && self.senders.len() >= MAX_SENDERS {
            let oldest = self.senders.iter().min_by_key(|(_, w)| w.heard).map(|(id, _)| *id);
            oldest.map(|id| self.senders.remove(&id));
        }
        let counter = header.counter;
        let window = self.senders.entry(header.sender).or_insert(Window {
            highest: counter,
            seen: 0,
            heard: now,
        });
        if counter > window.highest {
            let shift = counter - window.highest;
            window.seen = if shift >= 64 { 0 } else { window.seen << shift };
            window.highest = counter;
        }
        let age = window.highest - counter;
        if age >= 64 || window.seen & (1 << age) != 0 {
            return Err(Refused::Replayed);
        }
        window.seen |= 1 << age;
        window.heard = now;
        Ok(())
    }
}

/// Messages in parts, waiting for the rest.
#[derive(Default)]
pub(crate) struct Reassembly {
    /// By sender and the counter of part 0.
    partial: HashMap<(u64, u64), Partial>,
}

struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    started: Instant,
}

impl Reassembly {
    /// Takes in one part; returns the whole message once every part is in.
    pub(crate) fn add(&mut self, header: &Header, body: &[u8], now: Instant) -> Option<Vec<u8>> {
        let (index, count) = header.part;
        if count == 1 {
            return Some(body.to_vec());
        }
        self.partial.retain(|_, p| now.duration_since(p.started) < PARTIAL_TTL);
        let key = (header.sender, header.counter - u64::from(index));
        if !self.partial.contains_key(&key) && self.partial.len() >= MAX_PARTIAL {
            let oldest = self.partial.iter().min_by_key(|(_, p)| p.started).map(|(k, _)| *k);
            oldest.map(|k| self.partial.remove(&k));
        }
        let partial = self.partial.entry(key).or_insert_with(|| Partial {
            parts: vec![None; usize::from(count)],
            started: now,
        });
        if partial.parts.len() != usize::from(count) {
            return None;
        }
        partial.parts[usize::from(index)] = Some(body.to_vec());
        if partial.parts.iter().any(Option::is_none) {
            return None;
        }
        let partial = self.partial.remove(&key)?;
        Some(partial.parts.into_iter().flatten().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sender: u64, counter: u64) -> Header {
        Header {
            sender,
            counter,
            sent_at_ms: 1_000_000,
            reply_to: "127.0.0.1:7000".parse().unwrap(),
            to: US.parse().unwrap(),
            part: (0, 1),
        }
    }

    const US: &str = "127.0.0.1:7001";

    #[test]
    fn headers_round_trip_and_garbage_is_refused() {
        for (reply_to, to) in [("10.1.2.3:7000", "[2001:db8::2]:7"), ("[2001:db8::1]:9", "10.0.0.1:1")] {
            let mut h = header(7, 9);
            h.reply_to = reply_to.parse().unwrap();
            h.to = to.parse().unwrap();
            h.part = (1, 2);
            let mut bytes = Vec::new();
            h.write(&mut bytes);
            assert_eq!(bytes.len(), HEADER_LEN);
            bytes.extend_from_slice(b"body");
            assert_eq!(Header::read(&bytes), Some((h, &b"body"[..])));
        }
        let mut bytes = Vec::new();
        header(1, 1).write(&mut bytes);
        assert!(Header::read(&bytes[..HEADER_LEN - 1]).is_none());
        for bad_part in [0x00, 0x11, 0x03, 0x21] {
            let mut bad = bytes.clone();
            bad[HEADER_LEN - 1] = bad_part;
            assert!(Header::read(&bad).is_none(), "part {bad_part:#x}");
        }
    }

    #[test]
    fn a_datagram_is_admitted_once() {
        let (mut guard, now) = (ReplayGuard::default(), Instant::now());
        let ours = [US.parse().unwrap()];
        let admit = |guard: &mut ReplayGuard, counter| guard.admit(&header(1, counter), &ours, 1_000_000, now);
        assert_eq!(admit(&mut guard, 10), Ok(()));
        assert_eq!(admit(&mut guard, 10), Err(Refused::Replayed));
        assert_eq!(admit(&mut guard, 12), Ok(()));
        assert_eq!(admit(&mut guard, 11), Ok(()), "late but new");
        assert_eq!(admit(&mut guard, 11), Err(Refused::Replayed));
        assert_eq!(admit(&mut guard, 100), Ok(()));
        assert_eq!(admit(&mut guard, 12), Err(Refused::Replayed), "too old for the window");
        assert_eq!(
            guard.admit(&header(2, 10), &ours, 1_000_000, now),
            Ok(()),
            "another sender"
        );
        let stale = guard.admit(&header(3, 1), &ours, 1_000_000 + 11 * 60 * 1000, now);
        assert_eq!(stale, Err(Refused::Stale));
        // Sent to another node: refused even from a sender never heard of.
        let elsewhere = Header {
            to: "127.0.0.2:7001".parse().unwrap(),
            ..header(4, 1)
        };
        assert_eq!(
            guard.admit(&elsewhere, &ours, 1_000_000, now),
            Err(Refused::Misdirected)
        );
    }

    #[test]
    fn parts_are_put_back_together_in_any_order() {
        let (mut parts, now) = (Reassembly::default(), Instant::now());
        let part = |index, counter| Header {
            part: (index, 2),
            ..header(5, counter)
        };
        assert_eq!(parts.add(&part(1, 21), b"world", now), None);
        assert_eq!(
            parts.add(&part(0, 20), b"hello ", now).as_deref(),
            Some(&b"hello world"[..])
        );
        // A part whose sibling never comes is forgotten.
        assert_eq!(parts.add(&part(0, 30), b"lost", now), None);
        let later = now + PARTIAL_TTL;
        assert_eq!(parts.add(&part(1, 41), b"x", later), None);
        assert_eq!(parts.partial.len(), 1);
    }

    fn addr() -> impl proptest::strategy::Strategy<Value = SocketAddr> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    proptest::proptest! {
        #[test]
        fn every_header_round_trips(
            sender: u64,
            counter: u64,
            sent_at_ms: u64,
            reply_to in addr(),
            to in addr(),
            (count, index) in proptest::strategy::Strategy::prop_flat_map(1u8..=MAX_PARTS, |count| (proptest::strategy::Just(count), 0..count)),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
        ) {
            // An IPv6 address that maps an IPv4 one travels as the IPv4 one.
            let canonical = |a: SocketAddr| match a.ip() {
                IpAddr::V6(ip) => ip.to_ipv4_mapped().map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
                IpAddr::V4(_) => a,
            };
            let header = Header { sender, counter, sent_at_ms, reply_to, to, part: (index, count) };
            let mut bytes = Vec::new();
            header.write(&mut bytes);
            bytes.extend_from_slice(&body);
            let (read, rest) = Header::read(&bytes).unwrap();
            let expected = Header { reply_to: canonical(reply_to), to: canonical(to), ..header };
            proptest::prop_assert_eq!(read, expected);
            proptest::prop_assert_eq!(rest, &body[..]);
        }
    }
}
