//! A linearizability checker for histories of locks and global names, as
//! clients of a cluster recorded them: a Wing–Gong search per key (locks
//! and names are independent, so each key's history is checked alone), plus
//! the two properties a lease-based lock promises beyond it: no two holders
//! with overlapping validity, and fencing tokens that grow.
//!
//! Every operation has the time it was called and, if it completed, the
//! time it returned (microseconds on one clock). One that did not complete
//! (a timeout: it may or may not have taken effect) has no return time: it
//! takes effect at most once, anywhere between its call and `PENDING_BOUND`
//! after it, or not at all. A lease that ran out unrenewed is an `Expire`
//! the group performed on its own: recorded at the time its holder's
//! validity ended, and like an unknown operation it may happen (once)
//! within the bound, or not at all (the holder released the lock first).
//!
//! The bound keeps the search small: without it an unknown operation could
//! be placed at every later point of a long history. It holds as long as
//! the group is never out of reach for longer (requests that reached a
//! leader commit within its lifetime, and an expired lease is freed within
//! a heartbeat of the leader seeing it).

use std::collections::{BTreeMap, HashSet};

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: usize,
    pub key: String,
    /// When it was called.
    pub call: u64,
    /// When it returned; `None` if its outcome is unknown.
    pub ret: Option<u64>,
    pub kind: Kind,
}

/// What an operation was, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Take the lock: granted with a token, refused (held by another), or
    /// unknown.
    Acquire(Outcome),
    /// Give back a lock held with `token`: `Some(true)` released,
    /// `Some(false)` not held, `None` unknown.
    Release { token: u64, released: Option<bool> },
    /// The group freed the lock of `client` granted with `token` (`None`: a
    /// grant whose answer never came) on its own.
    Expire { token: Option<u64> },
    /// Register the name.
    Register(Outcome),
    /// Give back the name: as `Release`.
    Unregister { released: Option<bool> },
    /// Where the name is: `(client, token)` or `None`.
    Whereis(Option<(usize, u64)>),
}

/// The answer of a request for a lock or a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Granted(u64),
    Refused,
    Unknown,
}

/// How long after its call an operation whose answer never came may still
/// take effect, in microseconds (see the module docs).
pub const PENDING_BOUND: u64 = 30_000_000;

/// A key's state in the sequential model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    /// Who holds it, with the token if known.
    held: Option<(usize, Option<u64>)>,
    /// The greatest token granted so far.
    last: u64,
}

impl State {
    /// The states `op` (by `client`) may lead to from this one; none if it
    /// cannot happen here.
    fn step(self, op: &Op) -> Vec<State> {
        let grant = |token: Option<u64>| -> Option<State> {
            if self.held.is_some() || token.is_some_and(|t| t <= self.last) {
                return None;
            }
            Some(State {
                held: Some((op.client, token)),
                last: token.unwrap_or(self.last),
            })
        };
        let holds = |token: Option<u64>| match self.held {
            Some((by, held)) => by == op.client && (token.is_none() || held.is_none() || held == token),
            None => false,
        };
        let freed = State {
            held: None,
            last: self.last,
        };
        match &op.kind {
            // Registering a name the node holds answers its token again.
            Kind::Register(Outcome::Granted(token)) if self.held == Some((op.client, Some(*token))) => vec![self],
            Kind::Acquire(outcome) | Kind::Register(outcome) => match outcome {
                Outcome::Granted(token) => grant(Some(*token)).into_iter().collect(),
                Outcome::Refused => {
                    if self.held.is_some() {
                        vec![self]
                    } else {
                        vec![]
                    }
                }
                Outcome::Unknown => std::iter::once(self).chain(grant(None)).collect(),
            },
            Kind::Release { token, released } => release(self, freed, holds(Some(*token)), *released),
            Kind::Unregister { released } => release(self, freed, holds(None), *released),
            // Or it never happened: the lock was released first.
            Kind::Expire { token } => {
                if holds(*token) {
                    vec![freed, self]
                } else {
                    vec![self]
                }
            }
            Kind::Whereis(answer) => {
                let matches = match (answer, self.held) {
                    (None, None) => true,
                    (Some((client, token)), Some((by, held))) => *client == by && held.is_none_or(|h| h == *token),
                    _ => false,
                };
                if matches { vec![self] } else { vec![] }
            }
        }
    }
}

fn release(state: State, freed: State, holds: bool, released: Option<bool>) -> Vec<State> {
    match (released, holds) {
        (Some(true), true) => vec![freed],
        (Some(true), false) => vec![],
        (Some(false), true) => vec![],
        (Some(false), false) => vec![state],
        (None, true) => vec![state, freed],
        (None, false) => vec![state],
    }
}

/// Checks `ops` (every key) for linearizability; on failure, names the key
/// and the operations of its history.
pub fn check_linearizable(ops: &[Op]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if !linearizable(&ops) {
            let (at, around) = first_failure(&ops);
            let shown: Vec<String> = around.iter().map(|op| format!("  {op:?}")).collect();
            return Err(format!(
                "the history of `{key}` ({} ops) is not linearizable; it stops being so with the operation called at {at} µs; the operations around it, by call time:\n{}",
                ops.len(),
                shown.join("\n")
            ));
        }
    }
    Ok(())
}

/// The call time of the operation with which a failing history stops being
/// linearizable (the shortest failing prefix by call time, operations that
/// return later counted as unknown), and the operations around it.
fn first_failure<'a>(ops: &[&'a Op]) -> (u64, Vec<&'a Op>) {
    let mut calls: Vec<u64> = ops.iter().map(|op| op.call).collect();
    calls.sort_unstable();
    calls.dedup();
    let prefix = |until: u64| -> Vec<Op> {
        ops.iter()
            .filter(|op| op.call <= until)
            .map(|op| Op {
                ret: op.ret.filter(|&r| r <= until),
                ..(*op).clone()
            })
            .collect()
    };
    let fails = |until: u64| {
        let ops = prefix(until);
        !linearizable(&ops.iter().collect::<Vec<_>>())
    };
    let (mut lo, mut hi) = (0, calls.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(calls[mid]) { hi = mid } else { lo = mid + 1 }
    }
    let at = calls[lo];
    let mut sorted: Vec<&Op> = ops.to_vec();
    sorted.sort_by_key(|op| op.call);
    let i = sorted.iter().position(|op| op.call == at).unwrap_or(0);
    let around = sorted[i.saturating_sub(12)..(i + 4).min(sorted.len())].to_vec();
    (at, around)
}

/// Wing and Gong's search with memoization: places the operations one at
/// a time, each only once every operation that returned before it was
/// called is placed, and remembers every (placed set, state) already tried.
fn linearizable(ops: &[&Op]) -> bool {
    // An unknown outcome is an operation that returned, by the bound, with
    // either outcome (see `State::step`).
    let mut ops: Vec<Op> = ops
        .iter()
        .map(|op| Op {
            ret: Some(op.ret.unwrap_or(op.call.saturating_add(PENDING_BOUND))),
            ..(*op).clone()
        })
        .collect();
    ops.sort_by_key(|op| op.call);
    let ops: Vec<&Op> = ops.iter().collect();
    let n = ops.len();
    let words = n.div_ceil(64);
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack = vec![(vec![0u64; words], State { held: None, last: 0 })];
    let placed = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    while let Some((set, state)) = stack.pop() {
        if (0..n).all(|i| placed(&set, i)) {
            return true;
        }
        if !seen.insert((set.clone(), state)) {
            continue;
        }
        // Nothing may be placed after an unplaced operation that returned
        // before it was called.
        let horizon = (0..n)
            .filter(|&i| !placed(&set, i))
            .filter_map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        // Latest call pushed first: the earliest is tried first.
        for i in (0..n).rev() {
            if placed(&set, i) || ops[i].call > horizon {
                continue;
            }
            for next in state.step(ops[i]) {
                let mut set = set.clone();
                set[i / 64] |= 1 << (i % 64);
                stack.push((set, next));
            }
        }
    }
    false
}

/// A holder's claim on a lock: from when its grant returned until it
/// called release, or its validity ended, whichever came first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub client: usize,
    pub key: String,
    pub token: u64,
    pub from: u64,
    pub until: u64,
}

/// Checks that no two claims on one key overlap, and that tokens grow in
/// the order claims began.
pub fn check_claims(claims: &[Claim]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Claim>> = BTreeMap::new();
    for claim in claims {
        by_key.entry(&claim.key).or_default().push(claim);
    }
    for (key, mut claims) in by_key {
        claims.sort_by_key(|c| c.from);
        for pair in claims.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.from < a.until {
                return Err(format!("`{key}` was held twice at once: {a:?} and {b:?}"));
            }
            if b.token <= a.token {
                return Err(format!("`{key}`'s tokens did not grow: {a:?} then {b:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: u64, ret: Option<u64>, kind: Kind) -> Op {
        Op {
            client,
            key: "x".into(),
            call,
            ret,
            kind,
        }
    }

    #[test]
    fn a_lock_taken_and_given_in_turn_is_linearizable() {
        let ops = [
            op(0, 0, Some(10), Kind::Acquire(Outcome::Granted(5))),
            op(1, 5, Some(15), Kind::Acquire(Outcome::Refused)),
            op(
                0,
                20,
                Some(30),
                Kind::Release {
                    token: 5,
                    released: Some(true),
                },
            ),
            op(1, 25, Some(40), Kind::Acquire(Outcome::Granted(9))),
        ];
        assert_eq!(check_linearizable(&ops), Ok(()));
    }

    #[test]
    fn two_grants_without_a_release_between_are_not() {
        let ops = [
            op(0, 0, Some(10), Kind::Acquire(Outcome::Granted(5))),
            op(1, 20, Some(30), Kind::Acquire(Outcome::Granted(9))),
        ];
        assert!(check_linearizable(&ops).is_err());
    }

    #[test]
    fn an_expiry_after_the_holder_lost_it_allows_the_next_grant() {
        let ops = [
            op(0, 0, Some(10), Kind::Acquire(Outcome::Granted(5))),
            op(0, 100, None, Kind::Expire { token: Some(5) }),
            op(1, 120, Some(130), Kind::Acquire(Outcome::Granted(9))),
        ];
        assert_eq!(check_linearizable(&ops), Ok(()));
        // Not before the holder's validity ended.
        let early = [
            op(0, 0, Some(10), Kind::Acquire(Outcome::Granted(5))),
            op(1, 20, Some(30), Kind::Acquire(Outcome::Granted(9))),
            op(0, 100, None, Kind::Expire { token: Some(5) }),
        ];
        assert!(check_linearizable(&early).is_err());
    }

    #[test]
    fn a_grant_whose_answer_was_lost_may_hold_the_lock_until_it_is_freed() {
        let ops = [
            op(0, 0, None, Kind::Acquire(Outcome::Unknown)),
            op(1, 20, Some(30), Kind::Acquire(Outcome::Refused)),
            op(0, 0, None, Kind::Expire { token: None }),
            op(1, 40, Some(50), Kind::Acquire(Outcome::Granted(9))),
        ];
        assert_eq!(check_linearizable(&ops), Ok(()));
    }

    /// CI's history of 2026-12-04, reduced: around a leader's partition two
    /// requests were each refused while the lock was free as far as the
    /// history shows, because each had been granted too late, given the
    /// lock back and asked again, and been refused by the other's hidden
    /// grant. A refusal cannot lean on a grant nobody saw.
    #[test]
    fn refusals_explained_only_by_hidden_grants_are_not() {
        let ops = [
            op(0, 0, Some(10), Kind::Acquire(Outcome::Granted(101))),
            op(
                0,
                20,
                Some(30),
                Kind::Release {
                    token: 101,
                    released: Some(true),
                },
            ),
            op(0, 40, Some(300), Kind::Acquire(Outcome::Refused)),
            op(1, 50, Some(310), Kind::Acquire(Outcome::Refused)),
            op(0, 302, Some(305), Kind::Acquire(Outcome::Granted(121))),
        ];
        assert!(check_linearizable(&ops).is_err());
        // Had the first request's answer been an error, its grant may have
        // held the lock for a while: then both refusals are explained.
        let mut unknown = ops.to_vec();
        unknown[2] = op(0, 40, None, Kind::Acquire(Outcome::Unknown));
        unknown.push(op(0, 40, None, Kind::Expire { token: None }));
        assert_eq!(check_linearizable(&unknown), Ok(()));
    }

    #[test]
    fn tokens_must_grow() {
        let ops = [
            op(0, 0, Some(10), Kind::Acquire(Outcome::Granted(9))),
            op(
                0,
                20,
                Some(30),
                Kind::Release {
                    token: 9,
                    released: Some(true),
                },
            ),
            op(1, 40, Some(50), Kind::Acquire(Outcome::Granted(5))),
        ];
        assert!(check_linearizable(&ops).is_err());
    }

    #[test]
    fn a_read_must_see_the_last_registration() {
        let ok = [
            op(0, 0, Some(10), Kind::Register(Outcome::Granted(3))),
            op(1, 20, Some(30), Kind::Whereis(Some((0, 3)))),
            op(0, 40, Some(50), Kind::Unregister { released: Some(true) }),
            op(1, 60, Some(70), Kind::Whereis(None)),
        ];
        assert_eq!(check_linearizable(&ok), Ok(()));
        let stale = [
            op(0, 0, Some(10), Kind::Register(Outcome::Granted(3))),
            op(0, 20, Some(30), Kind::Unregister { released: Some(true) }),
            op(1, 40, Some(50), Kind::Whereis(Some((0, 3)))),
        ];
        assert!(check_linearizable(&stale).is_err());
        // Concurrent with the unregistration, either answer is right.
        let racing = [
            op(0, 0, Some(10), Kind::Register(Outcome::Granted(3))),
            op(0, 20, Some(40), Kind::Unregister { released: Some(true) }),
            op(1, 25, Some(35), Kind::Whereis(Some((0, 3)))),
        ];
        assert_eq!(check_linearizable(&racing), Ok(()));
    }

    #[test]
    fn overlapping_claims_and_shrinking_tokens_are_caught() {
        let claim = |client, token, from, until| Claim {
            client,
            key: "x".into(),
            token,
            from,
            until,
        };
        assert_eq!(check_claims(&[claim(0, 1, 0, 10), claim(1, 2, 10, 20)]), Ok(()));
        assert!(check_claims(&[claim(0, 1, 0, 10), claim(1, 2, 9, 20)]).is_err());
        assert!(check_claims(&[claim(0, 2, 0, 10), claim(1, 1, 11, 20)]).is_err());
    }
}
