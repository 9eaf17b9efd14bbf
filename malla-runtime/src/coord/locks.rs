//! Locks: taken through the group, held under a lease this node renews,
//! each grant with a fencing token.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::coordinator::Coordinator;
use super::keeper::valid_until;
use super::table::{Command, Holder, Key, MAX_TTL_MS, MIN_TTL_MS, Response, check_name};
use super::wire::{Answer, Query};
use crate::{Error, NodeId};

/// How long a lock's lease runs unless renewed (its guard renews it every
/// third of it): how soon a crashed holder's lock is free again.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);
/// How long `lock` waits for a lock held by someone else.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a request to the group waits for a quorum.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A number the group gives with every grant of a lock or a name, strictly
/// greater than every earlier grant's of the same lock or name (it is the
/// grant's position in the group's log).
///
/// A lease is a promise about time; the token is a promise about order.
/// Pass it with every write to the resource the lock protects, and have the
/// resource refuse a token lower than the highest it has seen: a holder that
/// was paused past its lease and woke up still believing it holds the lock
/// is then refused, where time alone cannot stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The token as a number.
    pub fn value(self) -> u64 {
        self.0
    }

    pub(crate) fn new(value: u64) -> Self {
        FencingToken(value)
    }
}

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A lock held by this node, until dropped or released, or until its lease
/// runs out unrenewed (the node was cut off from a quorum): then
/// [`LockGuard::lost`] completes and [`LockGuard::is_held`] says no.
///
/// ```no_run
/// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
/// let guard = node.lock("reindex").await?;
/// println!("held with token {}", guard.token());
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub struct LockGuard {
    name: String,
    token: FencingToken,
    coordinator: Arc<Coordinator>,
    lost: watch::Receiver<bool>,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("held", &self.is_held())
            .finish()
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The grant's fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Whether this node may still claim the lock: granted, not released,
    /// and its lease renewed in time (see `malla`'s crate docs: the clock assumption).
    pub fn is_held(&self) -> bool {
        !*self.lost.borrow() && self.coordinator.keeper.token(&self.key()) == Some(self.token.0)
    }

    /// Until when this node may claim the lock, as its last renewal left it
    /// (`malla`'s crate docs: the clock assumption): past it, or once lost,
    /// [`is_held`](Self::is_held) says no.
    pub fn valid_until(&self) -> Option<std::time::Instant> {
        if *self.lost.borrow() {
            return None;
        }
        self.coordinator.keeper.valid_until(&self.key()).map(Instant::into_std)
    }

    /// Completes when the lock is lost: its lease ran out before it could
    /// be renewed, or the group freed it.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Gives the lock back and waits for the group to take it.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        let coordinator = Arc::clone(&self.coordinator);
        coordinator.unlock(&self.name, self.token).await
    }

    fn key(&self) -> Key {
        Key::Lock(self.name.clone())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let coordinator = Arc::clone(&self.coordinator);
        let (name, token) = (std::mem::take(&mut self.name), self.token);
        coordinator.keeper.drop_lease(&Key::Lock(name.clone()));
        // Given back in the background; if that fails the lease runs out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = coordinator.unlock(&name, token).await {
                    tracing::debug!(lock = %name, "a dropped guard's lock was not released: {err}");
                }
            });
        }
    }
}

/// A request for a lock: `.ttl(..)`, `.timeout(..)`, then `.await`.
#[must_use = "a lock request does nothing until awaited"]
pub struct LockRequest {
    coordinator: Arc<Coordinator>,
    name: String,
    ttl: Duration,
    timeout: Duration,
}

impl LockRequest {
    pub(crate) fn new(coordinator: Arc<Coordinator>, name: String) -> Self {
        LockRequest {
            coordinator,
            name,
            ttl: DEFAULT_LOCK_TTL,
            timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// The lease's length (default 10 s, from 100 ms to an hour): how soon
    /// the lock is free again if this node crashes or is cut off.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to wait for the lock if someone else holds it, and for the
    /// group to answer (default 15 s). `Duration::ZERO` tries once.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<LockGuard, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let coordinator = self.coordinator;
            coordinator.acquire(&self.name, self.ttl, self.timeout).await
        })
    }
}

/// A lock as the group holds it, for tools (`malla locks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// The lock.
    pub name: String,
    /// The node holding it.
    pub node: NodeId,
    /// Its grant's fencing token.
    pub token: FencingToken,
    /// Its lease.
    pub ttl: Duration,
}

impl Coordinator {
    /// Takes the lock `name`, waiting up to `timeout` if it is held.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        name: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<LockGuard, Error> {
        let key = Key::Lock(name.to_owned());
        let ttl_ms = check_lease(name, ttl)?;
        // Once tried, if `timeout` is zero; the group still gets its time.
        let wait = !timeout.is_zero();
        let started = Instant::now();
        let deadline = started + if wait { timeout } else { REQUEST_TIMEOUT };
        self.release_earlier_lives(deadline).await?;
        let holder = self.holder();
        let mut pause = Duration::from_millis(10);
        let mut late = None;
        loop {
            let sent = Instant::now();
            let command = Command::Acquire {
                key: key.clone(),
                holder: holder.clone(),
                ttl_ms,
                service: None,
            };
            let answer = match self.write(command, deadline, "lock").await {
                Ok(answer) => answer,
                Err(err) => {
                    // The request may have reached the leader and been
                    // granted: give it back, in the background.
                    self.abandon(key, holder);
                    return Err(err);
                }
            };
            match judge(answer, late, Instant::now() < valid_until(sent, ttl)) {
                Verdict::Hold(token) => {
                    let lost = self.keeper.hold(key, token, ttl, sent);
                    return Ok(LockGuard {
                        name: name.to_owned(),
                        token: FencingToken(token),
                        coordinator: Arc::clone(self),
                        lost,
                        released: false,
                    });
                }
                // Asked again as the same holder, the group renews the
                // grant; past the deadline, `write` fails and it is given back.
                Verdict::Renew(token) => {
                    tracing::debug!(lock = name, token, "granted too late to use; asking again renews it");
                    late = Some(token);
                }
                Verdict::Busy(node) => {
                    let now = Instant::now();
                    if !wait || now + pause >= deadline {
                        return Err(Error::LockBusy {
                            name: name.to_owned(),
                            node: NodeId::from(node.as_str()),
                        });
                    }
                    tokio::time::sleep(jitter(pause)).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Verdict::Lapsed => {
                    tracing::debug!(lock = name, "the grant ran out before its answer could be used");
                    self.abandon(key, holder);
                    return Err(lapsed(format!("lock `{name}`"), started.elapsed()));
                }
                Verdict::Fail(err) => return Err(err),
            }
        }
    }

    /// Gives back the lock `name` held here with `token`.
    pub(crate) async fn unlock(&self, name: &str, token: FencingToken) -> Result<(), Error> {
        check_name(name).map_err(|reason| Error::InvalidName { reason })?;
        let key = Key::Lock(name.to_owned());
        if self.keeper.token(&key) == Some(token.0) {
            self.keeper.drop_lease(&key);
        }
        let command = Command::Release {
            key,
            token: token.0,
            node: self.me().to_string(),
        };
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        match self.write(command, deadline, "unlock").await? {
            Response::Released => Ok(()),
            Response::NotHeld { held } => Err(self.not_held(name, token, held)),
            other => Err(unexpected(&other)),
        }
    }

    /// Every lock the group holds, read through the leader.
    pub(crate) async fn locks(&self) -> Result<Vec<HeldLock>, Error> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        match self.read(Query::All { locks: true }, deadline, "locks").await? {
            Answer::All(all) => Ok(all
                .into_iter()
                .map(|(key, lease)| HeldLock {
                    name: key.name().to_owned(),
                    node: NodeId::from(lease.holder.node.as_str()),
                    token: FencingToken(lease.token),
                    ttl: Duration::from_millis(lease.ttl_ms),
                })
                .collect()),
            other => Err(Error::Config(format!("unexpected answer from the group: {other:?}"))),
        }
    }

    /// A holder for one new request of this node.
    pub(crate) fn holder(&self) -> Holder {
        Holder {
            node: self.me().to_string(),
            incarnation: self.incarnation(),
            owner: rand::random(),
        }
    }

    /// Gives back, in the background, what `holder` may have been granted
    /// by a request that got no answer.
    pub(crate) fn abandon(self: &Arc<Self>, key: Key, holder: Holder) {
        let coordinator = Arc::clone(self);
        tokio::spawn(async move {
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            let _ = coordinator
                .write(Command::Abandon { key, holder }, deadline, "unlock")
                .await;
        });
    }

    /// Why `name` is not held here with `token`, as an error.
    pub(crate) fn not_held(&self, name: &str, token: FencingToken, held: Option<(String, u64)>) -> Error {
        let reason = match held {
            None => "nobody holds it".to_owned(),
            Some((node, other)) if node == self.me().as_str() => {
                format!("it is held here with token {other}, not {token}")
            }
            Some((node, _)) => format!("node `{node}` holds it"),
        };
        Error::NotHeld {
            name: name.to_owned(),
            reason,
        }
    }
}

/// The lease `ttl` in milliseconds, if `name` and `ttl` are fit for one.
pub(crate) fn check_lease(name: &str, ttl: Duration) -> Result<u64, Error> {
    check_name(name).map_err(|reason| Error::InvalidName { reason })?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        return Err(Error::InvalidName {
            reason: format!("a lease of {ttl:?}: leases run from {MIN_TTL_MS} ms to an hour"),
        });
    }
    Ok(ttl_ms)
}

/// The error for a request whose grant lapsed before it could be used: it
/// held for a while, then ran out, so neither a grant nor `Busy` is true.
pub(crate) fn lapsed(operation: String, waited: Duration) -> Error {
    Error::NoQuorum {
        operation,
        waited,
        reason: "the group granted it, but the answer was lost or came too late to use, and the grant lapsed before \
                 it could be renewed"
            .into(),
    }
}

pub(crate) fn unexpected(response: &Response) -> Error {
    Error::Config(format!("unexpected answer from the consensus group: {response:?}"))
}

/// What one answer of the group to a lock request means.
#[derive(Debug)]
enum Verdict {
    /// Granted in time: held, with this token.
    Hold(u64),
    /// Granted, but the answer came after the lease it started was spent
    /// (the request waited out an election): ask again to renew it.
    Renew(u64),
    /// Held by this node, by another holder: wait, or refuse.
    Busy(String),
    /// A grant this request already had (seen too late, or not seen at all:
    /// an earlier send's answer was lost) lapsed before it was renewed.
    /// Neither `Busy` nor a new grant may be answered then: for a while the
    /// lock was held by this request, so a refusal would hide that it took
    /// effect, and other requests refused meanwhile would be unexplained.
    Lapsed,
    Fail(Error),
}

/// Judges `answer`, given the token of a grant this request already got too
/// late (`late`) and whether `answer` came while its lease is still ours.
fn judge(answer: Response, late: Option<u64>, in_time: bool) -> Verdict {
    match answer {
        Response::Granted { token } if late.is_some_and(|late| late != token) => Verdict::Lapsed,
        Response::Granted { token } if in_time => Verdict::Hold(token),
        Response::Granted { token } => Verdict::Renew(token),
        Response::Busy { .. } if late.is_some() => Verdict::Lapsed,
        Response::Lapsed => Verdict::Lapsed,
        Response::Busy { node, .. } => Verdict::Busy(node),
        Response::Refused(reason) => Verdict::Fail(Error::InvalidName { reason }),
        other => Verdict::Fail(unexpected(&other)),
    }
}

/// `pause`, give or take a quarter, so that waiters spread out.
fn jitter(pause: Duration) -> Duration {
    pause.mul_f64(rand::random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(token: u64) -> Response {
        Response::Granted { token }
    }

    fn busy() -> Response {
        Response::Busy {
            node: "other".into(),
            token: 3,
        }
    }

    #[test]
    fn a_grant_in_time_is_held_and_a_late_one_renewed() {
        assert!(matches!(judge(granted(7), None, true), Verdict::Hold(7)));
        assert!(matches!(judge(granted(7), None, false), Verdict::Renew(7)));
        assert!(matches!(judge(granted(7), Some(7), true), Verdict::Hold(7)));
        assert!(matches!(judge(granted(7), Some(7), false), Verdict::Renew(7)));
        assert!(matches!(judge(busy(), None, true), Verdict::Busy(node) if node == "other"));
    }

    #[test]
    fn a_request_once_granted_is_never_answered_busy_or_a_new_grant() {
        assert!(matches!(judge(busy(), Some(7), true), Verdict::Lapsed));
        assert!(matches!(judge(granted(9), Some(7), true), Verdict::Lapsed));
        assert!(matches!(judge(granted(9), Some(7), false), Verdict::Lapsed));
        assert!(matches!(judge(Response::Lapsed, None, true), Verdict::Lapsed));
    }
}
