//! Gossip datagrams sealed with the cookie: a chitchat `Transport` over UDP
//! that encrypts and authenticates every datagram with XChaCha20-Poly1305
//! under a key derived from the cookie (HKDF-SHA256). A datagram that does
//! not open is dropped and counted, so a node with another cookie never
//! joins and never learns anything.
//!
//! ```text
//! datagram = version (1) | nonce (24, random) | sealed envelope | tag (16)
//! ```
//!
//! The nonce is random, and 192 bits of it make a repeat negligible however
//! long one cookie seals (with 96 bits, the birthday bound of 2^48 datagrams
//! is reachable by a large cluster over years). The envelope (see
//! `envelope.rs`) makes replays refused, sends replies only to the address
//! the sender sealed in, makes a datagram open only at the node it was sent
//! to, and splits a message too large for one datagram once sealed; the
//! message in it is then checked (see `validate.rs`) before chitchat reads
//! it. What an attacker can do: without the cookie, nothing but make us
//! spend one decryption per datagram it sends; on the path, drop or delay
//! datagrams (gossip repeats itself), not replay them to anyone nor aim our
//! replies at a third party. Gossip has no forward secrecy: its key is the
//! cookie's, so whoever learns the cookie reads recorded gossip (which
//! nodes run which services where; never a call).

//!
//! Pinned to chitchat 0.11: from 0.12 on, messages only reach a `Transport`
//! as envelopes whose encoding is private to chitchat, so no transport of
//! ours can seal them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use hkdf::Hkdf;
use sha2::Sha256;

use super::envelope::{HEADER_LEN, Header, Reassembly, Refused, ReplayGuard, now_ms};
use super::validate::{self, KnownNodes, NodeKey};
use crate::handshake::{Cookie, Keyring};
use crate::sync::lock;
use crate::telemetry::metrics;
use crate::telemetry::throttle::LogThrottle;

const VERSION: u8 = 3;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const MAX_DATAGRAM: usize = 65_535;
/// The largest UDP payload over IPv4, which every datagram must fit.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// The most of a message one datagram carries once sealed.
const MAX_BODY: usize = MAX_UDP_PAYLOAD - 1 - NONCE_LEN - TAG_LEN - HEADER_LEN;
/// How often failures to send are said.
const SEND_WARN_EVERY: Duration = Duration::from_secs(10);

/// Counters of the gossip socket; each count also goes to the metrics
/// recorder, labelled with `node`.
#[derive(Debug, Default)]
pub(crate) struct GossipCounters {
    pub(crate) node: String,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) send_failed: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
}

/// Gossip traffic seen by a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct GossipStats {
    /// Datagrams that opened under our cookie and decoded.
    pub accepted: u64,
    /// Datagrams dropped because they did not open: another cookie, or forged.
    pub rejected: u64,
    /// Datagrams that opened but held no valid gossip message.
    pub malformed: u64,
    /// Datagrams that opened but were seen before (replays), sent too long
    /// ago, or sent to another node.
    pub replayed: u64,
    /// Messages that decoded but broke a rule that keeps gossip running (a
    /// delta about this node, versions chitchat asserts against, too many
    /// nodes, a delta that inflates too far): only a member holding the
    /// cookie sends them.
    pub invalid: u64,
    /// Times the gossip task ended and was started again. Above zero, this
    /// node's gossip failed at least once: its log says why.
    pub restarts: u64,
    /// Datagrams that could not be sent.
    pub send_failed: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes of the datagrams sent, sealed, as on the wire (without the UDP
    /// and IP headers).
    pub sent_bytes: u64,
    /// Datagrams received, whatever became of them.
    pub received: u64,
    /// Bytes of the datagrams received.
    pub received_bytes: u64,
}

impl GossipCounters {
    pub(crate) fn new(node: &str) -> Self {
        GossipCounters {
            node: node.to_owned(),
            ..GossipCounters::default()
        }
    }

    /// A received datagram's fate: `ok`, `rejected`, `malformed`, `replayed`.
    fn received_as(&self, counter: &AtomicU64, result: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::gossip_datagram(&self.node, "received", result);
    }

    pub(crate) fn snapshot(&self) -> GossipStats {
        GossipStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            send_failed: self.send_failed.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
        }
    }
}

/// The ciphers of a cluster's gossip: datagrams are sealed under the
/// keyring's primary cookie and opened under any accepted one.
#[derive(Clone)]
pub(crate) struct Sealer {
    /// The primary cookie's cipher first.
    ciphers: Arc<[XChaCha20Poly1305]>,
}

impl Sealer {
    pub(crate) fn new(keyring: &Keyring) -> Self {
        let cipher = |cookie: &Cookie| {
            let mut key = [0u8; 32];
            Hkdf::<Sha256>::new(Some(b"malla-gossip-v2"), cookie.secret())
                .expand(b"xchacha20-poly1305 key", &mut key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            let cipher = XChaCha20Poly1305::new(&Key::from(key));
            zeroize::Zeroize::zeroize(&mut key);
            cipher
        };
        Sealer {
            ciphers: keyring.accepted().map(cipher).collect(),
        }
    }

    pub(crate) fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self.ciphers[0]
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &[VERSION],
                },
            )
            .expect("encrypting into a Vec does not fail");
        let mut datagram = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        datagram.push(VERSION);
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(&sealed);
        datagram
    }

    pub(crate) fn open(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        if datagram.len() < 1 + NONCE_LEN + TAG_LEN || datagram[0] != VERSION {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = datagram[1..1 + NONCE_LEN].try_into().ok()?;
        let payload = || Payload {
            msg: &datagram[1 + NONCE_LEN..],
            aad: &[VERSION],
        };
        self.ciphers
            .iter()
            .find_map(|cipher| cipher.decrypt(&XNonce::from(nonce), payload()).ok())
    }
}

/// Opens sealed UDP sockets for chitchat.
pub(crate) struct SealedUdp {
    pub(crate) sealer: Sealer,
    pub(crate) counters: Arc<GossipCounters>,
    /// Where this node gossips: sealed into every datagram as the address
    /// to reply to.
    pub(crate) reply_to: SocketAddr,
    /// A socket bound beforehand (on the node's listen port), used by the
    /// first `open`.
    pub(crate) bound: std::sync::Mutex<Option<tokio::net::UdpSocket>>,
    /// This node as chitchat names it, for the rule that no delta is about
    /// it; replaced when gossip restarts under a new generation.
    pub(crate) me: std::sync::Mutex<NodeKey>,
    /// How long a node no message names is remembered in the node budget.
    pub(crate) forget_after: Duration,
}

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let bound = lock(&self.bound).take();
        let socket = match bound {
            Some(socket) => socket,
            None => tokio::net::UdpSocket::bind(listen_addr).await?,
        };
        let mut ours = vec![self.reply_to];
        ours.extend(socket.local_addr().ok().filter(|addr| *addr != self.reply_to));
        Ok(Box::new(SealedSocket {
            socket,
            sealer: self.sealer.clone(),
            counters: Arc::clone(&self.counters),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            sender: rand::random(),
            counter: 0,
            reply_to: self.reply_to,
            ours,
            me: lock(&self.me).clone(),
            known: KnownNodes::new(self.forget_after, Instant::now()),
            guard: ReplayGuard::default(),
            parts: Reassembly::default(),
            send_failures: LogThrottle::every(SEND_WARN_EVERY),
            dropped: LogThrottle::default(),
        }))
    }
}

/// Who sends a datagram, as its envelope says.
#[derive(Clone, Copy)]
pub(crate) struct From {
    pub(crate) sender: u64,
    pub(crate) reply_to: SocketAddr,
}

/// The datagrams that carry `plain` to `to`: one, or two parts if it does
/// not fit one once sealed; `counter` is the next datagram's.
pub(crate) fn datagrams(sealer: &Sealer, from: From, counter: &mut u64, plain: &[u8], to: SocketAddr) -> Vec<Vec<u8>> {
    let parts: Vec<&[u8]> = match plain.len() {
        0 => vec![plain],
        _ => plain.chunks(MAX_BODY).collect(),
    };
    let (count, sent_at_ms) = (parts.len() as u8, now_ms());
    parts
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            let header = Header {
                sender: from.sender,
                counter: *counter,
                sent_at_ms,
                reply_to: from.reply_to,
                to,
                part: (index as u8, count),
            };
            *counter += 1;
            let mut envelope = Vec::with_capacity(HEADER_LEN + body.len());
            header.write(&mut envelope);
            envelope.extend_from_slice(body);
            sealer.seal(&envelope)
        })
        .collect()
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    sealer: Sealer,
    counters: Arc<GossipCounters>,
    buf: Box<[u8]>,
    /// This socket's name in the envelope, random per start.
    sender: u64,
    /// The counter of the next datagram.
    counter: u64,
    reply_to: SocketAddr,
    /// The addresses a datagram may be sent to for us to take it.
    ours: Vec<SocketAddr>,
    me: NodeKey,
    known: KnownNodes,
    guard: ReplayGuard,
    parts: Reassembly,
    /// Failures to send, said once in [`SEND_WARN_EVERY`].
    send_failures: LogThrottle,
    /// Datagrams from outside that do not open or decode, said once a second.
    dropped: LogThrottle,
}

impl SealedSocket {
    /// The datagrams that carry `plain` to `to`.
    fn datagrams(&mut self, plain: &[u8], to: SocketAddr) -> Vec<Vec<u8>> {
        let from = From {
            sender: self.sender,
            reply_to: self.reply_to,
        };
        datagrams(&self.sealer, from, &mut self.counter, plain, to)
    }

    fn send_failed(&mut self, to: SocketAddr, err: &std::io::Error) {
        self.counters.send_failed.fetch_add(1, Ordering::Relaxed);
        metrics::gossip_datagram(&self.counters.node, "sent", "send_failed");
        if let Some(unsaid) = self.send_failures.admit() {
            tracing::warn!(%to, failures = unsaid + 1, "gossip send failed: {err}");
        }
    }

    /// The message a datagram completes, and where to reply: `None` if it
    /// does not open, was seen before, or waits for its other parts.
    fn take_in(&mut self, datagram: &[u8], from: SocketAddr) -> Option<(SocketAddr, ChitchatMessage)> {
        let Some(envelope) = self.sealer.open(datagram) else {
            self.counters.received_as(&self.counters.rejected, "rejected");
            tracing::debug!(%from, "dropped a gossip datagram that does not open under our cookie");
            return None;
        };
        let Some((header, body)) = Header::read(&envelope) else {
            self.counters.received_as(&self.counters.malformed, "malformed");
            if let Some(unsaid) = self.dropped.admit() {
                tracing::warn!(%from, unsaid, "dropped a gossip datagram with a malformed envelope");
            }
            return None;
        };
        let now = Instant::now();
        if let Err(why) = self.guard.admit(&header, &self.ours, now_ms(), now) {
            self.counters.received_as(&self.counters.replayed, "replayed");
            match why {
                Refused::Misdirected => {
                    tracing::debug!(%from, to = %header.to, "dropped a gossip datagram sent to another node")
                }
                _ => tracing::debug!(%from, ?why, "dropped a gossip datagram seen before or too old"),
            }
            return None;
        }
        let message = self.parts.add(&header, body, now)?;
        let checked = validate::check(&message, &self.me).and_then(|named| self.known.admit(&named, now));
        if let Err(why) = checked {
            let counter = match why {
                validate::Invalid::Malformed(_) => (&self.counters.malformed, "malformed"),
                _ => (&self.counters.invalid, "invalid"),
            };
            self.counters.received_as(counter.0, counter.1);
            if let Some(unsaid) = self.dropped.admit() {
                tracing::warn!(%from, sender = header.reply_to.to_string(), unsaid, "dropped a gossip message: {why}");
            }
            return None;
        }
        match ChitchatMessage::deserialize(&mut message.as_slice()) {
            Ok(message) => {
                self.counters.received_as(&self.counters.accepted, "ok");
                Some((header.reply_to, message))
            }
            Err(err) => {
                self.counters.received_as(&self.counters.malformed, "malformed");
                if let Some(unsaid) = self.dropped.admit() {
                    tracing::warn!(%from, unsaid, "dropped a malformed gossip message: {err}");
                }
                None
            }
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let mut plain = Vec::with_capacity(message.serialized_len());
        message.serialize(&mut plain);
        for datagram in self.datagrams(&plain, to) {
            // A peer gone away or a full buffer: gossip is best effort.
            match self.socket.send_to(&datagram, to).await {
                Ok(len) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    self.counters.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
                    metrics::gossip_datagram(&self.counters.node, "sent", "ok");
                    metrics::gossip_bytes(&self.counters.node, "sent", len);
                }
                Err(err) => self.send_failed(to, &err),
            }
        }
        Ok(())
    }

    /// Returns each message with the address its sender sealed in, so that
    /// chitchat's reply goes there and not to a spoofed source.
    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(received) => received,
                // ICMP errors surface on the next receive (a peer that went
                // away): not fatal for the socket.
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            self.counters.received_bytes.fetch_add(len as u64, Ordering::Relaxed);
            metrics::gossip_bytes(&self.counters.node, "received", len);
            let buf = std::mem::take(&mut self.buf);
            let received = self.take_in(&buf[..len], from);
            self.buf = buf;
            if let Some(received) = received {
                return Ok(received);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_too_large_once_sealed_travels_in_parts_that_fit() {
        let keyring = Keyring::new(Cookie::new(b"cookie"), Vec::new());
        let udp = SealedUdp {
            sealer: Sealer::new(&keyring),
            counters: Arc::default(),
            reply_to: "127.0.0.1:7000".parse().unwrap(),
            bound: std::sync::Mutex::new(None),
            me: std::sync::Mutex::new(validate::tests::key("me", 1, 7000)),
            forget_after: Duration::from_secs(60),
        };
        let mut socket = SealedSocket {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            sealer: udp.sealer.clone(),
            counters: Arc::default(),
            buf: Box::new([]),
            sender: 1,
            counter: 0,
            reply_to: udp.reply_to,
            ours: vec![udp.reply_to],
            me: validate::tests::key("me", 1, 7000),
            known: KnownNodes::new(Duration::from_secs(60), Instant::now()),
            guard: ReplayGuard::default(),
            parts: Reassembly::default(),
            send_failures: LogThrottle::every(SEND_WARN_EVERY),
            dropped: LogThrottle::default(),
        };
        // The largest message chitchat writes.
        let plain: Vec<u8> = (0..MAX_UDP_PAYLOAD).map(|i| i as u8).collect();
        let to = "127.0.0.1:7001".parse().unwrap();
        let datagrams = socket.datagrams(&plain, to);
        assert_eq!(datagrams.len(), 2);
        assert!(datagrams.iter().all(|d| d.len() <= MAX_UDP_PAYLOAD));
        let mut parts = Reassembly::default();
        let now = Instant::now();
        let mut whole = None;
        for datagram in datagrams.iter().rev() {
            let envelope = udp.sealer.open(datagram).unwrap();
            let (header, body) = Header::read(&envelope).unwrap();
            assert_eq!((header.reply_to, header.to), (udp.reply_to, to));
            whole = parts.add(&header, body, now);
        }
        assert_eq!(whole.as_deref(), Some(&plain[..]));
        assert_eq!(socket.datagrams(b"small", to).len(), 1);
    }

    #[test]
    fn datagrams_open_only_under_the_same_cookie() {
        let ring = |cookie: &[u8]| Keyring::new(Cookie::new(cookie), Vec::new());
        let ours = Sealer::new(&ring(b"cookie"));
        let same = Sealer::new(&ring(b"cookie"));
        let theirs = Sealer::new(&ring(b"other"));
        let sealed = ours.seal(b"hello");
        assert_eq!(same.open(&sealed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(theirs.open(&sealed), None);
        // Any bit flipped, anywhere, and it does not open.
        for i in 0..sealed.len() {
            let mut forged = sealed.clone();
            forged[i] ^= 1;
            assert_eq!(same.open(&forged), None, "byte {i}");
        }
        assert_eq!(same.open(&[]), None);
        assert_eq!(same.open(&sealed[..20]), None);
        // Fresh nonces: the same message seals differently.
        assert_ne!(ours.seal(b"hello"), sealed);
    }
}
