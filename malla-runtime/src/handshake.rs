//! The handshake every connection starts with, before any request: protocol
//! version and an ephemeral X25519 key share each, then mutual HMAC-SHA256
//! challenge-response over 128-bit random nonces keyed by the cookie
//! (Erlang's distribution handshake, with a real MAC), then the nodes'
//! identities.
//!
//! ```text
//! dialer                                          acceptor
//!   Hello { magic, version, nonce_d, share_d }  ->
//!                                               <-  Hello { magic, version, nonce_a, share_a }
//!   Auth { proof_d, identity_d }                ->  checks proof_d, then the name
//!                                               <-  Welcome { proof_a, identity_a }  or  Reject(reason)
//!   checks proof_a
//! ```
//!
//! The dialer proves it knows the cookie first, so a peer without it learns
//! nothing but our protocol version and a key share: not our name, not a
//! MAC to attack offline. Proofs bind the role, both hellos as sent (magic,
//! version, nonce, key share) and every field of both identities (name,
//! incarnation, hidden, listen address, largest frame, sealing), so none
//! can be replayed, reflected, downgraded or changed on the path.
//!
//! Both sides then derive one key per direction with HKDF-SHA256 from the
//! X25519 shared secret and the cookie, salted with a hash of the whole
//! transcript, and every byte after the handshake travels in sealed records
//! (see `wire::record`) unless both nodes were built without sealing.
//! **Forward secrecy**: the ephemeral secrets live only for the handshake,
//! so whoever recorded a session and later learns the cookie still cannot
//! open it. What the cookie still guards is who may take part: with it, a
//! node on the path can run its own handshake with each side (a
//! man-in-the-middle), as any member can.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use ring::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, FramedParts};
use zeroize::Zeroizing;

use crate::wire::{FrameCodec, FrameError, HANDSHAKE_MAX_FRAME, REKEY_EVERY, SessionKey};
use crate::{NodeId, Secret};

/// Version of the wire protocol; peers must agree on it. 5: the hellos
/// carry X25519 key shares.
pub(crate) const PROTOCOL_VERSION: u16 = 5;
const MAGIC: [u8; 5] = *b"MALLA";
const DOMAIN: &[u8] = b"malla-handshake-v3";

/// The shared secret of a cluster. Never printed, wiped when dropped.
#[derive(Clone)]
pub(crate) struct Cookie(Arc<Secret>);

impl Cookie {
    #[cfg(test)]
    pub(crate) fn new(secret: &[u8]) -> Self {
        Cookie::from_secret(Secret::from(secret.to_vec()))
    }

    pub(crate) fn from_secret(secret: Secret) -> Self {
        Cookie(Arc::new(secret))
    }

    pub(crate) fn secret(&self) -> &[u8] {
        self.0.expose()
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(..)")
    }
}

/// The cookies a node knows: the one it proves itself with, and others it
/// still accepts from dialers. Rotating a cluster's cookie without downtime
/// takes three rolling restarts, as Consul's keyring does: (1) every node
/// accepts the new cookie besides its own; (2) every node proves itself with
/// the new one and still accepts the old; (3) the old one goes. At every
/// step, any two nodes share a cookie one proves with and the other accepts.
#[derive(Debug, Clone)]
pub(crate) struct Keyring {
    primary: Cookie,
    also_accepted: Vec<Cookie>,
}

impl Keyring {
    pub(crate) fn new(primary: Cookie, also_accepted: Vec<Cookie>) -> Self {
        Keyring { primary, also_accepted }
    }

    /// The cookie this node proves itself with.
    pub(crate) fn primary(&self) -> &Cookie {
        &self.primary
    }

    /// Every cookie accepted from others, the primary first.
    pub(crate) fn accepted(&self) -> impl Iterator<Item = &Cookie> {
        std::iter::once(&self.primary).chain(&self.also_accepted)
    }
}

/// The keys of an established connection, one per direction.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SessionKeys {
    pub(crate) send: SessionKey,
    pub(crate) receive: SessionKey,
    /// Records a key seals before the next ([`REKEY_EVERY`]; less in tests
    /// that watch it happen).
    pub(crate) rekey_every: u64,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(..)")
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
    /// Whether the node seals the connection's records; they are sealed
    /// unless both nodes say no.
    pub(crate) seal: bool,
}

/// A node's identity as tests and fuzz targets need it: no listen
/// address, 1 MiB frames.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn plain_identity(name: &str, seal: bool) -> Identity {
    Identity {
        name: NodeId::from(name),
        incarnation: 1,
        hidden: false,
        listen: None,
        max_frame: 1 << 20,
        seal,
    }
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
        /// The sender's ephemeral X25519 public key.
        share: [u8; 32],
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
    /// The acceptor hung up on our proof without a word.
    #[error("the peer closed the connection after our proof: wrong cookie?")]
    ClosedAfterProof,
    /// The peer's key share is not a usable X25519 public key.
    #[error("the peer's key share is unusable")]
    BadShare,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl HandshakeError {
    /// Whether the failure is about the cookie (as opposed to the network).
    pub(crate) fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            HandshakeError::WrongCookie
                | HandshakeError::ClosedAfterProof
                | HandshakeError::Rejected(RejectReason::Unauthorized)
                | HandshakeError::Refused(RejectReason::Unauthorized)
        )
    }
}

/// A connection past the handshake.
pub(crate) struct Established<S> {
    pub(crate) peer: Identity,
    /// The session keys, if the records are sealed.
    pub(crate) sealing: Option<SessionKeys>,
    pub(crate) stream: S,
    /// Bytes already read past the handshake: the start of the first frames.
    pub(crate) read_buf: BytesMut,
}

/// Runs the dialer's side, proving itself with the keyring's primary cookie.
pub(crate) async fn dial<S>(
    stream: S,
    keyring: &Keyring,
    me: &Identity,
    timeout: Duration,
) -> Result<Established<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(timeout, async {
        let mut framed = Framed::new(stream, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let (secret, hello_d) = hello(rand::random())?;
        send_bytes(&mut framed, &hello_d).await?;
        let (share_a, hello_a) = match recv(&mut framed).await? {
            (
                Message::Hello {
                    magic, version, share, ..
                },
                bytes,
            ) => {
                check_hello(magic, version)?;
                (share, bytes)
            }
            (Message::Reject(reason), _) => return Err(HandshakeError::Rejected(reason)),
            (other, _) => return Err(unexpected(&other)),
        };
        let shared = secret.agree(&share_a)?;
        let cookie = keyring.primary();
        let mine = Transcript::identity_bytes(me);
        let proof = Transcript::dialer(&hello_d, &hello_a, &mine).proof(cookie);
        send(
            &mut framed,
            &Message::Auth {
                proof,
                identity: me.clone(),
            },
        )
        .await?;
        let answer = match recv(&mut framed).await {
            Err(HandshakeError::Closed) => return Err(HandshakeError::ClosedAfterProof),
            answer => answer?.0,
        };
        match answer {
            Message::Welcome { proof, identity } => {
                let theirs = Transcript::identity_bytes(&identity);
                let transcript = Transcript::acceptor(&hello_d, &hello_a, &theirs, &mine);
                if !bool::from(transcript.proof(cookie).ct_eq(&proof)) {
                    return Err(HandshakeError::WrongCookie);
                }
                let sealing = (me.seal || identity.seal).then(|| transcript.keys(&shared, cookie, Role::Dialer));
                Ok(established(framed, identity, sealing))
            }
            Message::Reject(reason) => Err(HandshakeError::Rejected(reason)),
            other => Err(unexpected(&other)),
        }
    })
    .await
}

/// Runs the acceptor's side, accepting a proof under any cookie of the
/// keyring. `decide` sees the authenticated identity of the dialer and may
/// refuse it (a duplicate name, for example).
pub(crate) async fn accept<S>(
    stream: S,
    keyring: &Keyring,
    me: &Identity,
    timeout: Duration,
    decide: impl FnOnce(&Identity) -> Result<(), RejectReason>,
) -> Result<Established<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(timeout, async {
        let mut framed = Framed::new(stream, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let first = recv(&mut framed).await.and_then(|(message, bytes)| match message {
            Message::Hello {
                magic, version, share, ..
            } => check_hello(magic, version).map(|()| (share, bytes)),
            other => Err(unexpected(&other)),
        });
        let (share_d, hello_d) = match first {
            Ok(hello) => hello,
            Err(HandshakeError::Rejected(reason)) => {
                let _ = send(&mut framed, &Message::Reject(RejectReason::Version(PROTOCOL_VERSION))).await;
                return Err(HandshakeError::Refused(reason));
            }
            Err(err) => return Err(err),
        };
        let (secret, hello_a) = hello(rand::random())?;
        send_bytes(&mut framed, &hello_a).await?;
        let shared = secret.agree(&share_d)?;
        let (peer, theirs, cookie) = match recv(&mut framed).await?.0 {
            Message::Auth { proof, identity } => {
                let theirs = Transcript::identity_bytes(&identity);
                let transcript = Transcript::dialer(&hello_d, &hello_a, &theirs);
                // Every accepted cookie is tried, so the time taken does not
                // tell which one matched.
                let mut matched = None;
                for cookie in keyring.accepted() {
                    if bool::from(transcript.proof(cookie).ct_eq(&proof)) && matched.is_none() {
                        matched = Some(cookie);
                    }
                }
                let Some(cookie) = matched else {
                    let _ = send(&mut framed, &Message::Reject(RejectReason::Unauthorized)).await;
                    return Err(HandshakeError::Refused(RejectReason::Unauthorized));
                };
                (identity, theirs, cookie)
            }
            other => return Err(unexpected(&other)),
        };
        if let Err(reason) = decide(&peer) {
            let _ = send(&mut framed, &Message::Reject(reason)).await;
            return Err(HandshakeError::Refused(reason));
        }
        let mine = Transcript::identity_bytes(me);
        let transcript = Transcript::acceptor(&hello_d, &hello_a, &mine, &theirs);
        send(
            &mut framed,
            &Message::Welcome {
                proof: transcript.proof(cookie),
                identity: me.clone(),
            },
        )
        .await?;
        let sealing = (me.seal || peer.seal).then(|| transcript.keys(&shared, cookie, Role::Acceptor));
        Ok(established(framed, peer, sealing))
    })
    .await
}

/// This side's ephemeral key and its hello, encoded as sent (the
/// transcript holds these bytes).
/// A dialer's first message, for the fuzz targets' seeds.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn hello_for_seeds() -> Vec<u8> {
    hello(rand::random()).expect("a key share").1
}

fn hello(nonce: [u8; 16]) -> Result<(Ephemeral, Vec<u8>), HandshakeError> {
    let secret = Ephemeral::new()?;
    let hello = Message::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        nonce,
        share: secret.share,
    };
    Ok((secret, encode(&hello)?))
}

/// An ephemeral X25519 key: made for one handshake, used once, gone with it.
struct Ephemeral {
    private: EphemeralPrivateKey,
    share: [u8; 32],
}

impl Ephemeral {
    fn new() -> Result<Self, HandshakeError> {
        let rng = ring::rand::SystemRandom::new();
        let private = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| HandshakeError::BadShare)?;
        let public = private.compute_public_key().map_err(|_| HandshakeError::BadShare)?;
        let share = public.as_ref().try_into().map_err(|_| HandshakeError::BadShare)?;
        Ok(Ephemeral { private, share })
    }

    /// The secret shared with the owner of `theirs`; refused if `theirs`
    /// is not a usable public key (ring refuses one giving an all-zero secret).
    fn agree(self, theirs: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
        agree_ephemeral(self.private, &UnparsedPublicKey::new(&X25519, theirs), |shared| {
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(shared);
            out
        })
        .map_err(|_| HandshakeError::BadShare)
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

/// Which side of the handshake a node took.
#[derive(Clone, Copy)]
enum Role {
    Dialer,
    Acceptor,
}

/// What a proof covers: the domain, the prover's role, both hellos as sent
/// (the dialer's first) and the identities (the prover's, then, for the
/// acceptor, the dialer's), each length-prefixed.
struct Transcript<'a> {
    role: &'static [u8],
    parts: [&'a [u8]; 4],
}

impl<'a> Transcript<'a> {
    fn identity_bytes(identity: &Identity) -> Vec<u8> {
        postcard::to_allocvec(identity).expect("an identity is plain data")
    }

    fn dialer(hello_d: &'a [u8], hello_a: &'a [u8], identity_d: &'a [u8]) -> Self {
        Transcript {
            role: b"dialer",
            parts: [hello_d, hello_a, identity_d, &[]],
        }
    }

    fn acceptor(hello_d: &'a [u8], hello_a: &'a [u8], identity_a: &'a [u8], identity_d: &'a [u8]) -> Self {
        Transcript {
            role: b"acceptor",
            parts: [hello_d, hello_a, identity_a, identity_d],
        }
    }

    fn feed(&self, mut update: impl FnMut(&[u8])) {
        for part in [DOMAIN, self.role].into_iter().chain(self.parts) {
            update(&(part.len() as u32).to_be_bytes());
            update(part);
        }
    }

    /// HMAC-SHA256 of the transcript, keyed by the cookie.
    fn proof(&self, cookie: &Cookie) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(cookie.secret()).expect("HMAC takes keys of any size");
        self.feed(|bytes| mac.update(bytes));
        mac.finalize().into_bytes().into()
    }

    /// The session keys: HKDF-SHA256 of the X25519 shared secret and the
    /// cookie, salted with the hash of the acceptor's transcript (which
    /// holds everything both sides said). Without the shared secret, the
    /// cookie and a recording of the handshake give nothing.
    fn keys(&self, shared: &[u8; 32], cookie: &Cookie, role: Role) -> SessionKeys {
        use sha2::Digest;
        let mut hash = Sha256::new();
        self.feed(|bytes| hash.update(bytes));
        let salt = hash.finalize();
        let mut ikm = Zeroizing::new(Vec::with_capacity(32 + cookie.secret().len()));
        ikm.extend_from_slice(shared);
        ikm.extend_from_slice(cookie.secret());
        let hkdf = Hkdf::<Sha256>::new(Some(salt.as_slice()), &ikm);
        let key = |info: &[u8]| {
            let mut key = [0u8; 32];
            hkdf.expand(info, &mut key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            key
        };
        let (to_acceptor, to_dialer) = (key(b"malla-v3 dialer to acceptor"), key(b"malla-v3 acceptor to dialer"));
        match role {
            Role::Dialer => SessionKeys {
                send: to_acceptor,
                receive: to_dialer,
                rekey_every: REKEY_EVERY,
            },
            Role::Acceptor => SessionKeys {
                send: to_dialer,
                receive: to_acceptor,
                rekey_every: REKEY_EVERY,
            },
        }
    }
}

async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(HandshakeError::TimedOut(timeout)))
}

fn encode(message: &Message) -> Result<Vec<u8>, HandshakeError> {
    postcard::to_allocvec(message).map_err(|e| HandshakeError::NotMalla(e.to_string()))
}

async fn send<S>(framed: &mut Framed<S, FrameCodec>, message: &Message) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_bytes(framed, &encode(message)?).await
}

async fn send_bytes<S>(framed: &mut Framed<S, FrameCodec>, bytes: &[u8]) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed.send(bytes).await?;
    Ok(())
}

/// The next message, and its bytes as received.
async fn recv<S>(framed: &mut Framed<S, FrameCodec>) -> Result<(Message, Bytes), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame: Bytes = framed.next().await.ok_or(HandshakeError::Closed)??;
    let message = decode(&frame)?;
    Ok((message, frame))
}

fn decode(frame: &[u8]) -> Result<Message, HandshakeError> {
    /// What every version's hello starts with.
    #[derive(Deserialize)]
    enum AnyHello {
        Hello { magic: [u8; 5], version: u16 },
    }
    match crate::wire::bounded::from_bytes(frame) {
        Ok(message) => Ok(message),
        // The hello of another version has other fields: its start says
        // which version it is, so that the refusal can say so.
        Err(err) => match crate::wire::bounded::take_from_bytes::<AnyHello>(frame) {
            Ok((AnyHello::Hello { magic, version }, _)) if magic == MAGIC && version != PROTOCOL_VERSION => {
                Err(HandshakeError::Rejected(RejectReason::Version(version)))
            }
            _ => Err(HandshakeError::NotMalla(format!(
                "undecodable handshake message: {err}"
            ))),
        },
    }
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

fn established<S>(framed: Framed<S, FrameCodec>, peer: Identity, sealing: Option<SessionKeys>) -> Established<S> {
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    Established {
        peer,
        sealing,
        stream: io,
        read_buf,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    fn identity(name: &str) -> Identity {
        crate::test_support::identity(name, true)
    }

    fn ring(primary: &[u8], also: &[&[u8]]) -> Keyring {
        Keyring::new(Cookie::new(primary), also.iter().map(|c| Cookie::new(c)).collect())
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn matching_cookies_establish_and_exchange_identities() {
        let (a, b) = duplex(1 << 16);
        let cookie = ring(b"secret", &[]);
        let (ia, ib) = (identity("a"), identity("b"));
        let (dialed, accepted) = tokio::join!(dial(a, &cookie, &ia, T), accept(b, &cookie, &ib, T, |_| Ok(())));
        let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
        assert_eq!(dialed.peer, ib);
        assert_eq!(accepted.peer, ia);
        // One key per direction, the same on both sides.
        let (d, a) = (dialed.sealing.unwrap(), accepted.sealing.unwrap());
        assert_eq!((d.send, d.receive), (a.receive, a.send));
        assert_ne!(d.send, d.receive);
    }

    #[tokio::test]
    async fn keys_are_fresh_per_connection_and_sealing_is_off_only_if_both_say_so() {
        let cookie = ring(b"secret", &[]);
        let mut keys = Vec::new();
        for seals in [(true, true), (true, false), (false, true), (false, false)] {
            let (a, b) = duplex(1 << 16);
            let (mut ia, mut ib) = (identity("a"), identity("b"));
            (ia.seal, ib.seal) = seals;
            let (dialed, accepted) = tokio::join!(dial(a, &cookie, &ia, T), accept(b, &cookie, &ib, T, |_| Ok(())));
            let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
            assert_eq!(dialed.sealing.is_some(), seals != (false, false), "{seals:?}");
            assert_eq!(accepted.sealing.is_some(), seals != (false, false), "{seals:?}");
            keys.extend(dialed.sealing.map(|k| k.send));
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 3, "fresh nonces, fresh keys");
    }

    #[tokio::test]
    async fn a_cookie_rolls_without_refusing_anyone() {
        // The steps of a roll from `old` to `new`: (uses, also accepts).
        let steps: [(&[u8], &[&[u8]]); 4] = [(b"old", &[]), (b"old", &[b"new"]), (b"new", &[b"old"]), (b"new", &[])];
        for (i, (uses, _)) in steps.iter().enumerate() {
            for (j, (acceptor_uses, acceptor_also)) in steps.iter().enumerate() {
                let (a, b) = duplex(1 << 16);
                let (ia, ib) = (identity("a"), identity("b"));
                let (dialer, acceptor) = (ring(uses, &[]), ring(acceptor_uses, acceptor_also));
                let (dialed, accepted) =
                    tokio::join!(dial(a, &dialer, &ia, T), accept(b, &acceptor, &ib, T, |_| Ok(())));
                let accepts = acceptor_uses == uses || acceptor_also.contains(uses);
                assert_eq!(dialed.is_ok(), accepts, "step {i} dialing step {j}");
                assert_eq!(accepted.is_ok(), accepts, "step {j} accepting step {i}");
                // Nodes one step apart, as during a rolling restart, always connect.
                if i.abs_diff(j) <= 1 {
                    assert!(accepts, "steps {i} and {j}");
                }
            }
        }
    }

    #[tokio::test]
    async fn an_identity_changed_on_the_path_is_refused() {
        let (a, b) = duplex(1 << 16);
        let cookie = ring(b"secret", &[]);
        let server = tokio::spawn(async move { accept(b, &cookie, &identity("b"), T, |_| Ok(())).await });
        // A dialer whose Auth is rewritten in transit: the proof covers the
        // identity it sent, not the one that arrives.
        let mut framed = Framed::new(a, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let (_secret, hello_d) = hello([1; 16]).unwrap();
        send_bytes(&mut framed, &hello_d).await.unwrap();
        let (Message::Hello { .. }, hello_a) = recv(&mut framed).await.unwrap() else {
            panic!("no hello")
        };
        let sent = identity("a");
        let bytes = Transcript::identity_bytes(&sent);
        let proof = Transcript::dialer(&hello_d, &hello_a, &bytes).proof(&Cookie::new(b"secret"));
        let mut arrives = sent.clone();
        arrives.max_frame = u32::MAX;
        send(
            &mut framed,
            &Message::Auth {
                proof,
                identity: arrives,
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            recv(&mut framed).await.unwrap().0,
            Message::Reject(RejectReason::Unauthorized)
        ));
        assert!(server.await.unwrap().is_err_and(|err| err.is_unauthorized()));
    }

    #[tokio::test]
    async fn a_wrong_cookie_is_refused_on_both_sides() {
        let (a, b) = duplex(1 << 16);
        let (one, two) = (ring(b"one", &[]), ring(b"two", &[]));
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
        let cookie = ring(b"secret", &[]);
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
        let accepted = accept(b, &ring(b"s", &[]), &identity("b"), Duration::from_millis(100), |_| {
            Ok(())
        })
        .await;
        assert!(matches!(accepted, Err(HandshakeError::TimedOut(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_stranger_learns_nothing_but_the_version() {
        // A peer that says hello with a random nonce, then sends garbage.
        let (mut a, b) = duplex(1 << 16);
        let server =
            tokio::spawn(async move { accept(b, &ring(b"s", &[]), &identity("secret-name"), T, |_| Ok(())).await });
        let (_secret, hello) = hello([7; 16]).unwrap();
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
        let server = tokio::spawn(async move { accept(b, &ring(b"s", &[]), &identity("b"), T, |_| Ok(())).await });
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(server.await.unwrap().is_err());

        let (a, b) = duplex(1 << 16);
        let server = tokio::spawn(async move { accept(b, &ring(b"s", &[]), &identity("b"), T, |_| Ok(())).await });
        let mut framed = Framed::new(a, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let newer = Message::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION + 1,
            nonce: [0; 16],
            share: [9; 32],
        };
        send(&mut framed, &newer).await.unwrap();
        assert!(matches!(
            recv(&mut framed).await.unwrap().0,
            Message::Reject(RejectReason::Version(PROTOCOL_VERSION))
        ));
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::Refused(RejectReason::Version(_)))
        ));

        // Version 4's hello had no key share: still told apart by its version.
        #[derive(Serialize)]
        enum HelloV4 {
            Hello {
                magic: [u8; 5],
                version: u16,
                nonce: [u8; 16],
            },
        }
        let (a, b) = duplex(1 << 16);
        let server = tokio::spawn(async move { accept(b, &ring(b"s", &[]), &identity("b"), T, |_| Ok(())).await });
        let mut framed = Framed::new(a, FrameCodec::new(HANDSHAKE_MAX_FRAME));
        let v4 = HelloV4::Hello {
            magic: MAGIC,
            version: 4,
            nonce: [0; 16],
        };
        send_bytes(&mut framed, &postcard::to_allocvec(&v4).unwrap())
            .await
            .unwrap();
        assert!(matches!(
            recv(&mut framed).await.unwrap().0,
            Message::Reject(RejectReason::Version(PROTOCOL_VERSION))
        ));
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::Refused(RejectReason::Version(4)))
        ));
    }

    /// The frames at the front of recorded bytes, and what follows them.
    fn frames(mut bytes: &[u8], count: usize) -> (Vec<Vec<u8>>, &[u8]) {
        let mut frames = Vec::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            frames.push(bytes[4..4 + len].to_vec());
            bytes = &bytes[4 + len..];
        }
        (frames, bytes)
    }

    #[tokio::test]
    async fn a_recorded_session_does_not_open_with_the_cookie_alone() {
        use crate::wire::{RecordOpener, RecordSealer};
        // dialer <-> tap <-> acceptor: the tap records both directions.
        let (dialer_end, tap_d) = duplex(1 << 16);
        let (tap_a, acceptor_end) = duplex(1 << 16);
        let (tap_d_read, tap_d_write) = tokio::io::split(tap_d);
        let (tap_a_read, tap_a_write) = tokio::io::split(tap_a);
        let cookie = ring(b"the-cluster-cookie", &[]);
        let (ia, ib) = (identity("a"), identity("b"));
        let recorder = tokio::spawn(async move {
            let mut to_acceptor = Vec::new();
            let mut to_dialer = Vec::new();
            let (mut dr, mut dw, mut ar, mut aw) = (tap_d_read, tap_d_write, tap_a_read, tap_a_write);
            let forward = async {
                let mut buf = [0u8; 4096];
                while let Ok(n) = dr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    to_acceptor.extend_from_slice(&buf[..n]);
                    let _ = aw.write_all(&buf[..n]).await;
                }
                aw.shutdown().await.ok();
            };
            let back = async {
                let mut buf = [0u8; 4096];
                while let Ok(n) = ar.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    to_dialer.extend_from_slice(&buf[..n]);
                    let _ = dw.write_all(&buf[..n]).await;
                }
            };
            tokio::join!(forward, back);
            (to_acceptor, to_dialer)
        });
        let (dialed, accepted) = tokio::join!(
            dial(dialer_end, &cookie, &ia, T),
            accept(acceptor_end, &cookie, &ib, T, |_| Ok(()))
        );
        let (mut dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
        let keys = dialed.sealing.clone().unwrap();
        // A request, sealed as a connection seals it.
        let mut record = BytesMut::from(&b"transfer 100 to alice"[..]);
        RecordSealer::new(&keys.send, keys.rekey_every)
            .seal(&mut record)
            .unwrap();
        dialed.stream.write_all(&record).await.unwrap();
        dialed.stream.shutdown().await.unwrap();
        drop((dialed, accepted));
        let (to_acceptor, to_dialer) = recorder.await.unwrap();

        // What a recorder who later learns the cookie has: every byte.
        let (sent, sealed) = frames(&to_acceptor, 2);
        let (answered, _) = frames(&to_dialer, 2);
        let (hello_d, hello_a) = (&sent[0], &answered[0]);
        let Ok(Message::Auth { identity: id_d, .. }) = decode(&sent[1]) else {
            panic!()
        };
        let Ok(Message::Welcome { identity: id_a, .. }) = decode(&answered[1]) else {
            panic!()
        };
        let (id_d, id_a) = (Transcript::identity_bytes(&id_d), Transcript::identity_bytes(&id_a));
        let transcript = Transcript::acceptor(hello_d, hello_a, &id_a, &id_d);
        let opens = |key: &SessionKey| {
            let mut plain = BytesMut::new();
            RecordOpener::new(key, REKEY_EVERY)
                .open(&mut BytesMut::from(sealed), &mut plain)
                .is_ok()
                && !plain.is_empty()
        };
        assert!(opens(&keys.send), "the recording holds the sealed request");
        // The cookie with every public value, and a guess for the secret
        // only the two ephemeral keys could give: nothing opens.
        let cookie = Cookie::new(b"the-cluster-cookie");
        let Message::Hello { share: share_d, .. } = decode(hello_d).unwrap() else {
            panic!()
        };
        let Message::Hello { share: share_a, .. } = decode(hello_a).unwrap() else {
            panic!()
        };
        for guess in [[0u8; 32], share_d, share_a] {
            let guessed = transcript.keys(&guess, &cookie, Role::Dialer);
            assert!(!opens(&guessed.send), "opened with a guessed secret");
        }
        println!(
            "recorded {} bytes; the cookie alone opens none of them",
            to_acceptor.len() + to_dialer.len()
        );
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p malla-runtime handshake_speed -- --ignored --nocapture`
    #[tokio::test]
    #[ignore = "a measurement, not a check"]
    async fn handshake_speed() {
        let keyring = Keyring::new(Cookie::new(b"speed-cookie-0123456789"), Vec::new());
        let (ia, ib) = (
            crate::test_support::identity("a", true),
            crate::test_support::identity("b", true),
        );
        let timeout = Duration::from_secs(5);
        let mut times = Vec::new();
        for _ in 0..2000 {
            let (a, b) = tokio::io::duplex(1 << 16);
            let started = std::time::Instant::now();
            let (dialed, accepted) = tokio::join!(
                dial(a, &keyring, &ia, timeout),
                accept(b, &keyring, &ib, timeout, |_| Ok(()))
            );
            times.push(started.elapsed());
            assert!(dialed.is_ok() && accepted.is_ok());
        }
        times.sort();
        println!(
            "a handshake, both sides on one thread: median {:?}, p90 {:?}",
            times[times.len() / 2],
            times[times.len() * 9 / 10]
        );
    }
}
