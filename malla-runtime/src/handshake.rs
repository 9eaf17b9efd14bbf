//! The handshake every connection starts with, before any request: protocol
//! version, then mutual HMAC-SHA256 challenge-response over 128-bit random
//! nonces keyed by the cookie (Erlang's distribution handshake, with a real
//! MAC), then the nodes' identities.
//!
//! ```text
//! dialer                                   acceptor
//!   Hello { magic, version, nonce_d }  ->
//!                                      <-  Hello { magic, version, nonce_a }
//!   Auth { proof_d, identity_d }       ->  checks proof_d, then the name
//!                                      <-  Welcome { proof_a, identity_a }  or  Reject(reason)
//!   checks proof_a
//! ```
//!
//! The dialer proves it knows the cookie first, so a peer without it learns
//! nothing but our protocol version: not our name, not a MAC to attack
//! offline. Proofs bind the role, both nonces and the names, so they cannot
//! be replayed or reflected. The stream itself is not encrypted afterwards
//! (as Erlang distribution without TLS): run clusters on a trusted network.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, FramedParts};

use crate::NodeId;
use crate::wire::{FrameCodec, FrameError, HANDSHAKE_MAX_FRAME};

/// Version of the wire protocol; peers must agree on it.
pub(crate) const PROTOCOL_VERSION: u16 = 1;
const MAGIC: [u8; 5] = *b"MALLA";
const DOMAIN: &[u8] = b"malla-handshake-v1";

/// The shared secret of a cluster. Never printed.
#[derive(Clone)]
pub(crate) struct Cookie(Arc<[u8]>);

impl Cookie {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Cookie(secret.into())
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(..)")
    }
}

/// What a node says about itself once the peer is authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) name: NodeId,
    /// Random per process start: tells a restarted node from the old one.
    pub(crate) incarnation: u64,
    pub(crate) hidden: bool,
    /// Where the node accepts connections, if it does.
    pub(crate) listen: Option<SocketAddr>,
    /// The largest frame the node accepts.
    pub(crate) max_frame: u32,
}

/// Why an acceptor refuses a dialer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RejectReason {
    /// The dialer's proof is wrong: it does not share our cookie.
    Unauthorized,
    /// The protocol versions differ; carries the acceptor's.
    Version(u16),
    /// Another live node already uses this name, or it is ours.
    DuplicateName,
    /// The acceptor is shutting down.
    ShuttingDown,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Unauthorized => f.write_str("wrong cookie"),
            RejectReason::Version(v) => write!(
                f,
                "protocol version mismatch (peer speaks {v}, we speak {PROTOCOL_VERSION})"
            ),
            RejectReason::DuplicateName => f.write_str("a live node already uses this name"),
            RejectReason::ShuttingDown => f.write_str("the node is shutting down"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Hello {
        magic: [u8; 5],
        version: u16,
        nonce: [u8; 16],
    },
    Auth {
        proof: [u8; 32],
        identity: Identity,
    },
    Welcome {
        proof: [u8; 32],
        identity: Identity,
    },
    Reject(RejectReason),
}

/// A failed handshake.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The peer's proof was wrong: it does not share our cookie.
    #[error("the peer does not share our cookie")]
    WrongCookie,
    /// The peer refused us.
    #[error("refused by the peer: {0}")]
    Rejected(RejectReason),
    /// We refused the peer (after telling it why).
    #[error("refused: {0}")]
    Refused(RejectReason),
    /// The peer does not speak the malla protocol.
    #[error("the peer is not a malla node: {0}")]
    NotMalla(String),
    #[error("the handshake did not finish within {0:?}")]
    TimedOut(Duration),
    #[error("the connection closed during the handshake")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl HandshakeError {
    /// Whether the failure is about the cookie (as opposed to the network).
    pub(crate) fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            HandshakeError::WrongCookie
                | HandshakeError::Rejected(RejectReason::Unauthorized)
                | HandshakeError::Refused(RejectReason::Unauthorized)
        )
    }
}

/// A connection past the handshake.
pub(crate) struct Established<S> {
    pub(crate) peer: Identity,
    pub(crate) stream: S,
    /// Bytes already read past the handshake: the start of the first frames.
    pub(crate) read_buf: BytesMut,
}

/// Runs the dialer's side.
pub(crate) async fn dial<S>(
    stream: S,
    cookie: &Cookie,
    me: &Identity,
    timeout: Duration,
) -> Result<Established<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(timeout, async {
        let mut framed = Framed::new(stream, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let nonce_d: [u8; 16] = rand::random();
        send(&mut framed, &hello(nonce_d)).await?;
        let nonce_a = match recv(&mut framed).await? {
            Message::Hello { magic, version, nonce } => check_hello(magic, version).map(|()| nonce)?,
            Message::Reject(reason) => return Err(HandshakeError::Rejected(reason)),
            other => return Err(unexpected(&other)),
        };
        let proof = proof(cookie, b"dialer", &nonce_d, &nonce_a, &me.name, None);
        send(
            &mut framed,
            &Message::Auth {
                proof,
                identity: me.clone(),
            },
        )
        .await?;
        match recv(&mut framed).await? {
            Message::Welcome { proof, identity } => {
                let expected = self::proof(cookie, b"acceptor", &nonce_a, &nonce_d, &identity.name, Some(&me.name));
                if !bool::from(expected.ct_eq(&proof)) {
                    return Err(HandshakeError::WrongCookie);
                }
                Ok(established(framed, identity))
            }
            Message::Reject(reason) => Err(HandshakeError::Rejected(reason)),
            other => Err(unexpected(&other)),
        }
    })
    .await
}

/// Runs the acceptor's side. `decide` sees the authenticated identity of the
/// dialer and may refuse it (a duplicate name, for example).
pub(crate) async fn accept<S>(
    stream: S,
    cookie: &Cookie,
    me: &Identity,
    timeout: Duration,
    decide: impl FnOnce(&Identity) -> Result<(), RejectReason>,
) -> Result<Established<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(timeout, async {
        let mut framed = Framed::new(stream, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let nonce_d = match recv(&mut framed).await? {
            Message::Hello { magic, version, nonce } => {
                if let Err(err) = check_hello(magic, version) {
                    if let HandshakeError::Rejected(reason) = err {
                        let _ = send(&mut framed, &Message::Reject(RejectReason::Version(PROTOCOL_VERSION))).await;
                        return Err(HandshakeError::Refused(reason));
                    }
                    return Err(err);
                }
                nonce
            }
            other => return Err(unexpected(&other)),
        };
        let nonce_a: [u8; 16] = rand::random();
        send(&mut framed, &hello(nonce_a)).await?;
        let peer = match recv(&mut framed).await? {
            Message::Auth { proof, identity } => {
                let expected = self::proof(cookie, b"dialer", &nonce_d, &nonce_a, &identity.name, None);
                if !bool::from(expected.ct_eq(&proof)) {
                    let _ = send(&mut framed, &Message::Reject(RejectReason::Unauthorized)).await;
                    return Err(HandshakeError::Refused(RejectReason::Unauthorized));
                }
                identity
            }
            other => return Err(unexpected(&other)),
        };
        if let Err(reason) = decide(&peer) {
            let _ = send(&mut framed, &Message::Reject(reason)).await;
            return Err(HandshakeError::Refused(reason));
        }
        let proof = proof(cookie, b"acceptor", &nonce_a, &nonce_d, &me.name, Some(&peer.name));
        send(
            &mut framed,
            &Message::Welcome {
                proof,
                identity: me.clone(),
            },
        )
        .await?;
        Ok(established(framed, peer))
    })
    .await
}

fn hello(nonce: [u8; 16]) -> Message {
    Message::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        nonce,
    }
}

fn check_hello(magic: [u8; 5], version: u16) -> Result<(), HandshakeError> {
    if magic != MAGIC {
        return Err(HandshakeError::NotMalla("bad magic bytes".into()));
    }
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::Rejected(RejectReason::Version(version)));
    }
    Ok(())
}

/// HMAC-SHA256 keyed by the cookie over the role, both nonces (own first)
/// and the names, each length-prefixed.
fn proof(
    cookie: &Cookie,
    role: &[u8],
    own_nonce: &[u8; 16],
    their_nonce: &[u8; 16],
    own_name: &NodeId,
    their_name: Option<&NodeId>,
) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&cookie.0).expect("HMAC takes keys of any size");
    for part in [DOMAIN, role, own_nonce, their_nonce, own_name.as_str().as_bytes()] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    if let Some(name) = their_name {
        mac.update(&(name.as_str().len() as u32).to_be_bytes());
        mac.update(name.as_str().as_bytes());
    }
    mac.finalize().into_bytes().into()
}

async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(HandshakeError::TimedOut(timeout)))
}

async fn send<S>(framed: &mut Framed<S, FrameCodec>, message: &Message) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = postcard::to_allocvec(message).map_err(|e| HandshakeError::NotMalla(e.to_string()))?;
    framed.send(bytes.as_slice()).await?;
    Ok(())
}

async fn recv<S>(framed: &mut Framed<S, FrameCodec>) -> Result<Message, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame: Bytes = framed.next().await.ok_or(HandshakeError::Closed)??;
    postcard::from_bytes(&frame).map_err(|e| HandshakeError::NotMalla(format!("undecodable handshake message: {e}")))
}

fn unexpected(message: &Message) -> HandshakeError {
    let what = match message {
        Message::Hello { .. } => "Hello",
        Message::Auth { .. } => "Auth",
        Message::Welcome { .. } => "Welcome",
        Message::Reject(_) => "Reject",
    };
    HandshakeError::NotMalla(format!("unexpected {what} message"))
}

fn established<S>(framed: Framed<S, FrameCodec>, peer: Identity) -> Established<S> {
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    Established {
        peer,
        stream: io,
        read_buf,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    fn identity(name: &str) -> Identity {
        Identity {
            name: NodeId::from(name),
            incarnation: 1,
            hidden: false,
            listen: None,
            max_frame: 1 << 20,
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn matching_cookies_establish_and_exchange_identities() {
        let (a, b) = duplex(1 << 16);
        let cookie = Cookie::new(b"secret");
        let (ia, ib) = (identity("a"), identity("b"));
        let (dialed, accepted) = tokio::join!(dial(a, &cookie, &ia, T), accept(b, &cookie, &ib, T, |_| Ok(())));
        assert_eq!(dialed.unwrap().peer.name, "b");
        assert_eq!(accepted.unwrap().peer.name, "a");
    }

    #[tokio::test]
    async fn a_wrong_cookie_is_refused_on_both_sides() {
        let (a, b) = duplex(1 << 16);
        let (one, two) = (Cookie::new(b"one"), Cookie::new(b"two"));
        let (ia, ib) = (identity("a"), identity("b"));
        let (dialed, accepted) = tokio::join!(dial(a, &one, &ia, T), accept(b, &two, &ib, T, |_| Ok(())));
        assert!(matches!(
            dialed,
            Err(HandshakeError::Rejected(RejectReason::Unauthorized))
        ));
        assert!(matches!(
            accepted,
            Err(HandshakeError::Refused(RejectReason::Unauthorized))
        ));
    }

    #[tokio::test]
    async fn the_acceptor_decides_on_the_authenticated_identity() {
        let (a, b) = duplex(1 << 16);
        let cookie = Cookie::new(b"secret");
        let (ia, ib) = (identity("taken"), identity("b"));
        let (dialed, accepted) = tokio::join!(
            dial(a, &cookie, &ia, T),
            accept(b, &cookie, &ib, T, |peer| {
                assert_eq!(peer.name, "taken");
                Err(RejectReason::DuplicateName)
            })
        );
        assert!(matches!(
            dialed,
            Err(HandshakeError::Rejected(RejectReason::DuplicateName))
        ));
        assert!(matches!(
            accepted,
            Err(HandshakeError::Refused(RejectReason::DuplicateName))
        ));
    }

    #[tokio::test]
    async fn a_stalled_peer_times_out() {
        let (_a, b) = duplex(1 << 16);
        let started = tokio::time::Instant::now();
        let accepted = accept(
            b,
            &Cookie::new(b"s"),
            &identity("b"),
            Duration::from_millis(100),
            |_| Ok(()),
        )
        .await;
        assert!(matches!(accepted, Err(HandshakeError::TimedOut(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_stranger_learns_nothing_but_the_version() {
        // A peer that says hello with a random nonce, then sends garbage.
        let (mut a, b) = duplex(1 << 16);
        let server =
            tokio::spawn(async move { accept(b, &Cookie::new(b"s"), &identity("secret-name"), T, |_| Ok(())).await });
        let hello = postcard::to_allocvec(&hello([7; 16])).unwrap();
        a.write_all(&(hello.len() as u32).to_be_bytes()).await.unwrap();
        a.write_all(&hello).await.unwrap();
        a.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.unwrap();
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), a.read_to_end(&mut seen)).await;
        assert!(server.await.unwrap().is_err());
        assert!(!seen.windows(11).any(|w| w == b"secret-name"), "the name leaked");
    }

    #[tokio::test]
    async fn other_protocols_and_versions_are_refused() {
        let (mut a, b) = duplex(1 << 16);
        let server = tokio::spawn(async move { accept(b, &Cookie::new(b"s"), &identity("b"), T, |_| Ok(())).await });
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(server.await.unwrap().is_err());

        let (a, b) = duplex(1 << 16);
        let server = tokio::spawn(async move { accept(b, &Cookie::new(b"s"), &identity("b"), T, |_| Ok(())).await });
        let mut framed = Framed::new(a, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let old = Message::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION + 1,
            nonce: [0; 16],
        };
        send(&mut framed, &old).await.unwrap();
        assert!(matches!(
            recv(&mut framed).await.unwrap(),
            Message::Reject(RejectReason::Version(PROTOCOL_VERSION))
        ));
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::Refused(RejectReason::Version(_)))
        ));
    }
}
