//! What a gossip message may say, checked before chitchat sees it.
//!
//! Only a cookie holder can write a message that opens, but chitchat 0.11
//! trusts every one it decodes: a crafted message can make it panic (a node
//! delta whose key versions pass the version it declares trips an assert in
//! `NodeState::apply_delta`; enough invented nodes in digests make our own
//! digest outgrow a datagram, and the next reply's size underflows), rewrite
//! our own node's state, or inflate to about a gigabyte. Any of these would
//! silence the receiver's gossip, and through it the cluster. So malla reads
//! every message itself first, in chitchat's wire format, and drops it whole
//! if it breaks a rule below; chitchat's own writer never does.
//!
//! The rules:
//! - the message decodes in full, with nothing left over;
//! - a delta inflates to at most [`MAX_INFLATED`] bytes (a block to at most
//!   64 KiB, as chitchat's reader allows);
//! - no delta about this node itself (chitchat would apply it to our state);
//! - in a node's delta, key versions rise, each above the version the delta
//!   starts from, and a maximum version is stated only for a node without
//!   keys (as chitchat writes it: after keys, a lower one leaves keys above
//!   the node's maximum, which chitchat asserts against);
//! - every node a digest names is within [`KnownNodes`]' budget, so our own
//!   digest always fits one datagram with room for a delta.
//!
//! A member holding the cookie can still say false things in well-formed
//! messages (advertise services it does not run, any node name): the cookie
//! is the cluster's trust boundary. What these rules buy is that it cannot
//! stop the others from gossiping.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The most bytes a delta may inflate to: thirty times the largest message,
/// far above what gossip's text compresses by.
pub(crate) const MAX_INFLATED: usize = 2 << 20;
/// The most one block inflates to (chitchat's reader buffer).
const MAX_BLOCK: usize = u16::MAX as usize;
/// Bytes that our own digest may take: a datagram's 65 507 less room for a
/// delta (chitchat asserts at least 100 bytes) and the message's header.
pub(crate) const DIGEST_BUDGET: usize = 60_000;

const MAGIC: u16 = 45_139;
const PROTOCOL: u8 = 0;

/// Why a message was dropped before chitchat saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// It does not decode as a chitchat message.
    Malformed(&'static str),
    /// A delta inflates past [`MAX_INFLATED`].
    Inflates,
    /// A delta about the receiving node itself.
    AboutUs,
    /// Versions that chitchat's state machine asserts against.
    Versions(&'static str),
    /// A digest names more nodes than the budget has room for.
    TooManyNodes,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Malformed(what) => write!(f, "malformed: {what}"),
            Invalid::Inflates => write!(f, "a delta inflates past {MAX_INFLATED} bytes"),
            Invalid::AboutUs => f.write_str("a delta about the receiving node"),
            Invalid::Versions(what) => write!(f, "versions out of order: {what}"),
            Invalid::TooManyNodes => f.write_str("a digest names more nodes than the budget holds"),
        }
    }
}

/// A node as chitchat names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NodeKey {
    pub(crate) name: String,
    pub(crate) generation: u64,
    pub(crate) gossip: SocketAddr,
}

impl NodeKey {
    /// Bytes this node takes in a digest: its id and three u64s.
    fn digest_len(&self) -> usize {
        let ip = if self.gossip.is_ipv4() { 4 } else { 16 };
        2 + self.name.len() + 8 + 1 + ip + 2 + 24
    }
}

/// The nodes named in one message's digest (the delta only updates nodes
/// chitchat already has; a digest adds them).
pub(crate) type Named = Vec<NodeKey>;

/// Checks one message; returns the nodes its digest names.
pub(crate) fn check(message: &[u8], me: &NodeKey) -> Result<Named, Invalid> {
    let mut r = Reader(message);
    if r.u16()? != MAGIC || r.u8()? != PROTOCOL {
        return Err(Invalid::Malformed("not chitchat's magic and protocol"));
    }
    let named = match r.u8()? {
        0 => {
            let named = digest(&mut r)?;
            r.str()?;
            named
        }
        1 => {
            let named = digest(&mut r)?;
            delta(&mut r, me)?;
            named
        }
        2 => {
            delta(&mut r, me)?;
            Vec::new()
        }
        3 => Vec::new(),
        _ => return Err(Invalid::Malformed("unknown message type")),
    };
    if !r.0.is_empty() {
        return Err(Invalid::Malformed("bytes after the message"));
    }
    Ok(named)
}

fn digest(r: &mut Reader<'_>) -> Result<Named, Invalid> {
    let count = r.u16()?;
    let mut named = Vec::with_capacity(usize::from(count).min(r.0.len() / 40));
    for _ in 0..count {
        named.push(r.node()?);
        let (_heartbeat, _last_gc, _max) = (r.u64()?, r.u64()?, r.u64()?);
    }
    Ok(named)
}

/// A delta: a stream of blocks, inflated, then a sequence of operations.
fn delta(r: &mut Reader<'_>, me: &NodeKey) -> Result<(), Invalid> {
    let mut ops = Vec::new();
    let mut block = Vec::new();
    loop {
        match r.u8()? {
            0 => break,
            kind @ (1 | 2) => {
                let len = usize::from(r.u16()?);
                let bytes = r.take(len)?;
                if kind == 2 {
                    ops.extend_from_slice(bytes);
                } else {
                    block.resize(MAX_BLOCK, 0);
                    let inflated = zstd::bulk::decompress_to_buffer(bytes, &mut block[..])
                        .map_err(|_| Invalid::Malformed("a block that does not inflate"))?;
                    ops.extend_from_slice(&block[..inflated]);
                }
                if ops.len() > MAX_INFLATED {
                    return Err(Invalid::Inflates);
                }
            }
            _ => return Err(Invalid::Malformed("unknown block type")),
        }
    }
    operations(&mut Reader(&ops), me)
}

/// What one node's part of a delta has said so far.
struct NodeDelta {
    from_excluded: u64,
    last_key: u64,
}

fn operations(r: &mut Reader<'_>, me: &NodeKey) -> Result<(), Invalid> {
    let mut seen = std::collections::HashSet::new();
    let mut current: Option<NodeDelta> = None;
    while !r.0.is_empty() {
        match r.u8()? {
            0 => {
                let key = r.node()?;
                if key == *me {
                    return Err(Invalid::AboutUs);
                }
                let (_last_gc, from_excluded) = (r.u64()?, r.u64()?);
                if !seen.insert(key) {
                    return Err(Invalid::Malformed("a node twice in one delta"));
                }
                current = Some(NodeDelta {
                    from_excluded,
                    last_key: 0,
                });
            }
            1 => {
                let node = current.as_mut().ok_or(Invalid::Malformed("a key before its node"))?;
                let (_key, _value) = (r.str()?, r.str()?);
                let version = r.u64()?;
                if r.u8()? > 2 {
                    return Err(Invalid::Malformed("unknown deletion status"));
                }
                if version <= node.last_key {
                    return Err(Invalid::Versions("key versions do not rise"));
                }
                if version <= node.from_excluded {
                    return Err(Invalid::Versions("a key at or below the delta's starting version"));
                }
                node.last_key = version;
            }
            2 => {
                let node = current
                    .take()
                    .ok_or(Invalid::Malformed("a maximum version before its node"))?;
                r.u64()?;
                if node.last_key != 0 {
                    return Err(Invalid::Versions("a maximum version after keys"));
                }
            }
            _ => return Err(Invalid::Malformed("unknown delta operation")),
        }
    }
    Ok(())
}

/// The nodes this node has heard named, so that no run of digests makes
/// chitchat hold more nodes than our own digest can list in one datagram.
///
/// A node is forgotten once no message has named it for `forget_after`
/// (longer than chitchat keeps a dead node), so the budget counts at least
/// every node chitchat still holds. When a digest would pass the budget,
/// the message is dropped: a member inventing nodes fills the budget, and
/// until they are forgotten no new node is learned, but gossip among the
/// known ones goes on.
pub(crate) struct KnownNodes {
    nodes: HashMap<NodeKey, Instant>,
    bytes: usize,
    forget_after: Duration,
    swept: Instant,
}

impl KnownNodes {
    pub(crate) fn new(forget_after: Duration, now: Instant) -> Self {
        KnownNodes {
            nodes: HashMap::new(),
            bytes: 0,
            forget_after,
            swept: now,
        }
    }

    /// Admits the nodes a message names, or refuses the message if they do
    /// not fit the budget (then nothing is recorded).
    pub(crate) fn admit(&mut self, named: &[NodeKey], now: Instant) -> Result<(), Invalid> {
        if now.duration_since(self.swept) >= self.forget_after / 8 {
            let forget_after = self.forget_after;
            let mut freed = 0;
            self.nodes.retain(|key, heard| {
                let keep = now.duration_since(*heard) < forget_after;
                if !keep {
                    freed += key.digest_len();
                }
                keep
            });
            self.bytes -= freed;
            self.swept = now;
        }
        let new: usize = named
            .iter()
            .filter(|key| !self.nodes.contains_key(*key))
            .map(NodeKey::digest_len)
            .sum();
        if self.bytes + new > DIGEST_BUDGET {
            return Err(Invalid::TooManyNodes);
        }
        for key in named {
            if self.nodes.insert(key.clone(), now).is_none() {
                self.bytes += key.digest_len();
            }
        }
        Ok(())
    }
}

/// Reads chitchat's encoding: little-endian integers, strings with a u16
/// length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], Invalid> {
        if self.0.len() < len {
            return Err(Invalid::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Invalid> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    fn u64(&mut self) -> Result<u64, Invalid> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    fn str(&mut self) -> Result<&'a str, Invalid> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| Invalid::Malformed("a string that is not UTF-8"))
    }

    fn node(&mut self) -> Result<NodeKey, Invalid> {
        let name = self.str()?.to_owned();
        let generation = self.u64()?;
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(self.take(4)?).expect("four bytes"))),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.take(16)?).expect("sixteen bytes"),
            )),
            _ => return Err(Invalid::Malformed("an address that is neither IPv4 nor IPv6")),
        };
        let gossip = SocketAddr::new(ip, self.u16()?);
        Ok(NodeKey {
            name,
            generation,
            gossip,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
