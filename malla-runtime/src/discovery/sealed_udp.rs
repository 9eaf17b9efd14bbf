//! Gossip datagrams sealed with the cookie: a chitchat `Transport` over UDP
//! that encrypts and authenticates every datagram with ChaCha20-Poly1305
//! under a key derived from the cookie (HKDF-SHA256). A datagram that does
//! not open is dropped and counted, so a node with another cookie never
//! joins and never learns anything.
//!
//! ```text
//! datagram = version (1) | nonce (12, random) | ciphertext | tag (16)
//! ```
//!
//! Chitchat sizes its messages for a 65 507-byte UDP payload; sealing adds 29
//! bytes, so a state whose single delta approaches 64 KiB would not fit.
//!
//! Pinned to chitchat 0.11: from 0.12 on, messages only reach a `Transport`
//! as envelopes whose encoding is private to chitchat, so no transport of
//! ours can seal them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::handshake::{Cookie, Keyring};
use crate::sync::lock;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_DATAGRAM: usize = 65_535;

/// Counters of the gossip socket.
#[derive(Debug, Default)]
pub(crate) struct GossipCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) malformed: AtomicU64,
}

/// Gossip traffic seen by a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Datagrams that opened under our cookie and decoded.
    pub accepted: u64,
    /// Datagrams dropped because they did not open: another cookie, or forged.
    pub rejected: u64,
    /// Datagrams that opened but held no valid gossip message.
    pub malformed: u64,
}

impl GossipCounters {
    pub(crate) fn snapshot(&self) -> GossipStats {
        GossipStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }
}

/// The ciphers of a cluster's gossip: datagrams are sealed under the
/// keyring's primary cookie and opened under any accepted one.
#[derive(Clone)]
pub(crate) struct Sealer {
    /// The primary cookie's cipher first.
    ciphers: Arc<[ChaCha20Poly1305]>,
}

impl Sealer {
    pub(crate) fn new(keyring: &Keyring) -> Self {
        let cipher = |cookie: &Cookie| {
            let mut key = [0u8; 32];
            Hkdf::<Sha256>::new(Some(b"malla-gossip-v1"), cookie.secret())
                .expand(b"chacha20-poly1305 key", &mut key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            ChaCha20Poly1305::new(&Key::from(key))
        };
        Sealer {
            ciphers: keyring.accepted().map(cipher).collect(),
        }
    }

    pub(crate) fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self.ciphers[0]
            .encrypt(
                &Nonce::from(nonce),
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
            .find_map(|cipher| cipher.decrypt(&Nonce::from(nonce), payload()).ok())
    }
}

/// Opens sealed UDP sockets for chitchat.
pub(crate) struct SealedUdp {
    pub(crate) sealer: Sealer,
    pub(crate) counters: Arc<GossipCounters>,
    /// A socket bound beforehand (on the node's listen port), used by the
    /// first `open`.
    pub(crate) bound: std::sync::Mutex<Option<tokio::net::UdpSocket>>,
}

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let bound = lock(&self.bound).take();
        let socket = match bound {
            Some(socket) => socket,
            None => tokio::net::UdpSocket::bind(listen_addr).await?,
        };
        Ok(Box::new(SealedSocket {
            socket,
            sealer: self.sealer.clone(),
            counters: Arc::clone(&self.counters),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    sealer: Sealer,
    counters: Arc<GossipCounters>,
    buf: Box<[u8]>,
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let mut plain = Vec::with_capacity(message.serialized_len());
        message.serialize(&mut plain);
        let datagram = self.sealer.seal(&plain);
        if let Err(err) = self.socket.send_to(&datagram, to).await {
            // A peer gone away or a full buffer: gossip is best effort.
            tracing::debug!(%to, "gossip send failed: {err}");
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from_addr) = match self.socket.recv_from(&mut self.buf).await {
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
            let Some(plain) = self.sealer.open(&self.buf[..len]) else {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(from = %from_addr, "dropped a gossip datagram that does not open under our cookie");
                continue;
            };
            match ChitchatMessage::deserialize(&mut plain.as_slice()) {
                Ok(message) => {
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    return Ok((from_addr, message));
                }
                Err(err) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(from = %from_addr, "dropped a malformed gossip message: {err}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
