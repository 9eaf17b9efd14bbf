//! What the consensus group agrees on: the table of locks and global names,
//! each held under a lease, and the commands that change it. Pure and
//! deterministic: every replica applies the same commands in the same order
//! and reaches the same table, so nothing here reads a clock. Leases lapse
//! only by an `Expire` command the leader proposes once it has seen one run
//! out (see `leases`); the table just checks that the lease it names is
//! still the one that lapsed.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Longest lock or name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 256;
/// Most locks and names the table holds at once, against a runaway holder.
pub(crate) const MAX_ENTRIES: usize = 100_000;
/// Shortest and longest lease a holder may ask for, in milliseconds.
pub(crate) const MIN_TTL_MS: u64 = 100;
pub(crate) const MAX_TTL_MS: u64 = 3_600_000;

/// Who holds a lock or a name: one life of one node, and the guard or
/// registration within it (so that a retried request is recognised as the
/// same one, and two guards of one node are told apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) node: String,
    pub(crate) incarnation: u64,
    pub(crate) owner: u64,
}

/// What a lease is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Key {
    Lock(String),
    Name(String),
}

impl Key {
    pub(crate) fn name(&self) -> &str {
        match self {
            Key::Lock(name) | Key::Name(name) => name,
        }
    }
}

/// A held lock or name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub(crate) holder: Holder,
    /// The index of the log entry that granted it: strictly increasing per
    /// key, the fencing token.
    pub(crate) token: u64,
    pub(crate) ttl_ms: u64,
    /// The index of the entry that last granted or renewed it: an expiry
    /// proposed for an older renewal is stale.
    pub(crate) renewed_at: u64,
    /// For a name: the service it names on the holder's node.
    pub(crate) service: Option<String>,
}

/// A change to the table, as a client or the leader proposes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Take the lock `name`, or the name `name` for `service`.
    Acquire {
        key: Key,
        holder: Holder,
        ttl_ms: u64,
        service: Option<String>,
    },
    /// Extend what `node`'s life `incarnation` holds with these tokens.
    Renew {
        node: String,
        incarnation: u64,
        leases: Vec<(Key, u64)>,
    },
    /// Give back a lock or a name held with `token`.
    Release { key: Key, token: u64, node: String },
    /// Give back what `holder` may have been granted by a request whose
    /// answer never came (it gave up waiting).
    Abandon { key: Key, holder: Holder },
    /// The leader saw this lease run out.
    Expire { key: Key, token: u64, renewed_at: u64 },
    /// Everything `node` holds from lives before `incarnation` (it
    /// restarted), or from every life up to and including it (it leaves).
    ReleaseNode {
        node: String,
        incarnation: u64,
        including: bool,
    },
    /// The group's first leader names it, once: two groups bootstrapped
    /// apart tell themselves apart by it.
    Found { group: u64 },
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Response {
    /// Granted (or already held by the same holder) with this token.
    Granted {
        token: u64,
    },
    /// Held by someone else.
    Busy {
        node: String,
        token: u64,
    },
    /// Renewed; these were no longer held and are lost.
    Renewed {
        lost: Vec<Key>,
    },
    Released,
    /// Not held by that node with that token; says what holds it, if anything.
    NotHeld {
        held: Option<(String, u64)>,
    },
    /// The command was refused as malformed.
    Refused(String),
    /// Expired, or released by node: how many leases went.
    Freed(usize),
    /// The group's id (the first one proposed).
    Founded {
        group: u64,
    },
    /// This request was granted earlier (its answer was lost, or came too
    /// late to use), and that grant has since run out: it took effect and
    /// ended, so it is answered neither a grant nor `Busy`.
    Lapsed,
}

/// Releases and lapsed grants remembered, each: a release sent again (its
/// first answer was lost, and it was committed after all) is answered
/// `Released` again, and a request sent again after its grant ran out is
/// answered `Lapsed`. Requests are retried within seconds, so the last
/// 4,096 of each are plenty.
pub(crate) const REMEMBERED: usize = 4096;

/// Every lock and name, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Table {
    pub(crate) leases: BTreeMap<Key, Lease>,
    /// The group's id, once its first leader has named it.
    pub(crate) group: Option<u64>,
    /// The last releases, oldest first: key, token, node.
    released: VecDeque<(Key, u64, String)>,
    /// The last leases that ran out, oldest first, by their holder.
    lapsed: VecDeque<(Key, Holder)>,
}

impl Table {
    /// Applies `command`, the log entry at `index`.
    pub(crate) fn apply(&mut self, index: u64, command: Command) -> Response {
        match command {
            Command::Acquire {
                key,
                holder,
                ttl_ms,
                service,
            } => self.acquire(index, key, holder, ttl_ms, service),
            Command::Renew {
                node,
                incarnation,
                leases,
            } => {
                let mut lost = Vec::new();
                for (key, token) in leases {
                    match self.leases.get_mut(&key) {
                        Some(lease)
                            if lease.token == token
                                && lease.holder.node == node
                                && lease.holder.incarnation == incarnation =>
                        {
                            lease.renewed_at = index;
                        }
                        _ => lost.push(key),
                    }
                }
                Response::Renewed { lost }
            }
            Command::Release { key, token, node } => match self.leases.get(&key) {
                Some(lease) if lease.token == token && lease.holder.node == node => {
                    self.leases.remove(&key);
                    remember(&mut self.released, (key, token, node));
                    Response::Released
                }
                other => {
                    let again = self
                        .released
                        .iter()
                        .any(|(k, t, n)| *k == key && *t == token && *n == node);
                    if again {
                        return Response::Released;
                    }
                    Response::NotHeld {
                        held: other.map(|l| (l.holder.node.clone(), l.token)),
                    }
                }
            },
            Command::Abandon { key, holder } => match self.leases.get(&key) {
                Some(lease) if lease.holder == holder => {
                    self.leases.remove(&key);
                    Response::Released
                }
                other => Response::NotHeld {
                    held: other.map(|l| (l.holder.node.clone(), l.token)),
                },
            },
            Command::Expire { key, token, renewed_at } => {
                let lapsed = self
                    .leases
                    .get(&key)
                    .is_some_and(|l| l.token == token && l.renewed_at == renewed_at);
                if lapsed && let Some(lease) = self.leases.remove(&key) {
                    remember(&mut self.lapsed, (key, lease.holder));
                }
                Response::Freed(usize::from(lapsed))
            }
            Command::ReleaseNode {
                node,
                incarnation,
                including,
            } => {
                let before = self.leases.len();
                self.leases.retain(|_, lease| {
                    let older = lease.holder.incarnation < incarnation
                        || (including && lease.holder.incarnation == incarnation);
                    !(lease.holder.node == node && older)
                });
                Response::Freed(before - self.leases.len())
            }
            Command::Found { group } => Response::Founded {
                group: *self.group.get_or_insert(group),
            },
        }
    }

    fn acquire(&mut self, index: u64, key: Key, holder: Holder, ttl_ms: u64, service: Option<String>) -> Response {
        if let Err(why) = check_name(key.name()).and_then(|()| check_ttl(ttl_ms)) {
            return Response::Refused(why);
        }
        if let Some(lease) = self.leases.get_mut(&key)
            && lease.holder == holder
        {
            // The same request again (its answer was lost): still held.
            lease.renewed_at = index;
            return Response::Granted { token: lease.token };
        }
        // Owners are random: compared first, they rule out nearly all.
        if self
            .lapsed
            .iter()
            .any(|(k, h)| h.owner == holder.owner && *h == holder && *k == key)
        {
            return Response::Lapsed;
        }
        if let Some(lease) = self.leases.get(&key) {
            return Response::Busy {
                node: lease.holder.node.clone(),
                token: lease.token,
            };
        }
        if self.leases.len() >= MAX_ENTRIES {
            return Response::Refused(format!("the group holds {MAX_ENTRIES} locks and names, its most"));
        }
        self.leases.insert(
            key,
            Lease {
                holder,
                token: index,
                ttl_ms,
                renewed_at: index,
                service,
            },
        );
        Response::Granted { token: index }
    }

    /// A table from a snapshot's bytes, those written before lapsed grants
    /// were remembered included.
    pub(crate) fn decode(bytes: &[u8]) -> postcard::Result<Table> {
        #[derive(Deserialize)]
        struct Earlier {
            leases: BTreeMap<Key, Lease>,
            group: Option<u64>,
            released: VecDeque<(Key, u64, String)>,
        }
        postcard::from_bytes(bytes).or_else(|err| {
            let earlier: Earlier = postcard::from_bytes(bytes).map_err(|_| err)?;
            Ok(Table {
                leases: earlier.leases,
                group: earlier.group,
                released: earlier.released,
                lapsed: VecDeque::new(),
            })
        })
    }

    /// The lock or name `key`, if held.
    pub(crate) fn get(&self, key: &Key) -> Option<&Lease> {
        self.leases.get(key)
    }
}

/// Appends `entry` to `memory`, forgetting the oldest past `REMEMBERED`.
fn remember<T>(memory: &mut VecDeque<T>, entry: T) {
    if memory.len() >= REMEMBERED {
        memory.pop_front();
    }
    memory.push_back(entry);
}

/// Why `name` cannot be a lock or a global name, if it cannot.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a lock or name cannot be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{}…` is {} bytes long; a lock or name is at most {MAX_NAME_LEN}",
            name.chars().take(16).collect::<String>(),
            name.len()
        ));
    }
    Ok(())
}

fn check_ttl(ttl_ms: u64) -> Result<(), String> {
    if (MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(format!(
            "a lease of {ttl_ms} ms: leases run from {MIN_TTL_MS} ms to {} h",
            MAX_TTL_MS / 3_600_000
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(node: &str, owner: u64) -> Holder {
        Holder {
            node: node.into(),
            incarnation: 1,
            owner,
        }
    }

    fn acquire(table: &mut Table, index: u64, name: &str, who: &Holder) -> Response {
        let command = Command::Acquire {
            key: Key::Lock(name.into()),
            holder: who.clone(),
            ttl_ms: 1_000,
            service: None,
        };
        table.apply(index, command)
    }

    #[test]
    fn a_lock_is_held_once_and_its_tokens_grow() {
        let mut table = Table::default();
        let (a, b) = (holder("a", 1), holder("b", 1));
        assert_eq!(acquire(&mut table, 3, "x", &a), Response::Granted { token: 3 });
        assert_eq!(
            acquire(&mut table, 4, "x", &b),
            Response::Busy {
                node: "a".into(),
                token: 3
            }
        );
        assert_eq!(
            acquire(&mut table, 5, "x", &a),
            Response::Granted { token: 3 },
            "a retry"
        );
        let release = |token, node: &str| Command::Release {
            key: Key::Lock("x".into()),
            token,
            node: node.into(),
        };
        assert_eq!(
            table.apply(6, release(3, "b")),
            Response::NotHeld {
                held: Some(("a".into(), 3))
            }
        );
        assert_eq!(table.apply(7, release(3, "a")), Response::Released);
        assert_eq!(
            table.apply(8, release(3, "a")),
            Response::Released,
            "the same release again"
        );
        assert_eq!(table.apply(8, release(2, "a")), Response::NotHeld { held: None });
        assert_eq!(acquire(&mut table, 9, "x", &b), Response::Granted { token: 9 });
    }

    #[test]
    fn a_request_sent_again_after_its_grant_lapsed_is_told_so() {
        let mut table = Table::default();
        let (a, b) = (holder("a", 1), holder("b", 2));
        assert_eq!(acquire(&mut table, 1, "x", &a), Response::Granted { token: 1 });
        let expire = Command::Expire {
            key: Key::Lock("x".into()),
            token: 1,
            renewed_at: 1,
        };
        assert_eq!(table.apply(2, expire), Response::Freed(1));
        // Free: neither granted again, as if it never held it...
        assert_eq!(acquire(&mut table, 3, "x", &a), Response::Lapsed);
        assert!(table.get(&Key::Lock("x".into())).is_none());
        // ... nor, held by another, refused as if it never had.
        assert_eq!(acquire(&mut table, 4, "x", &b), Response::Granted { token: 4 });
        assert_eq!(acquire(&mut table, 5, "x", &a), Response::Lapsed);
        // Another request of the same node is a new one.
        assert_eq!(
            acquire(&mut table, 6, "x", &holder("a", 3)),
            Response::Busy {
                node: "b".into(),
                token: 4
            }
        );
    }

    #[test]
    fn a_snapshot_written_before_lapses_were_remembered_still_reads() {
        #[derive(Serialize)]
        struct Earlier {
            leases: BTreeMap<Key, Lease>,
            group: Option<u64>,
            released: VecDeque<(Key, u64, String)>,
        }
        let mut table = Table::default();
        acquire(&mut table, 1, "x", &holder("a", 1));
        table.group = Some(7);
        let earlier = Earlier {
            leases: table.leases.clone(),
            group: table.group,
            released: VecDeque::from([(Key::Lock("y".into()), 5, "b".into())]),
        };
        let read = Table::decode(&postcard::to_allocvec(&earlier).unwrap()).unwrap();
        assert_eq!(read.leases, table.leases);
        assert_eq!((read.group, read.released.len()), (Some(7), 1));
        assert_eq!(Table::decode(&postcard::to_allocvec(&read).unwrap()).unwrap(), read);
        assert!(Table::decode(&[0xff; 3]).is_err());
    }

    #[test]
    fn a_token_of_another_lock_releases_nothing() {
        let mut table = Table::default();
        let a = holder("a", 1);
        let Response::Granted { token } = acquire(&mut table, 1, "x", &a) else {
            panic!()
        };
        acquire(&mut table, 2, "y", &a);
        let wrong = Command::Release {
            key: Key::Lock("y".into()),
            token,
            node: "a".into(),
        };
        assert_eq!(
            table.apply(3, wrong),
            Response::NotHeld {
                held: Some(("a".into(), 2))
            }
        );
        assert!(table.get(&Key::Lock("y".into())).is_some());
    }

    #[test]
    fn an_expiry_for_an_older_renewal_is_stale() {
        let mut table = Table::default();
        let a = holder("a", 1);
        acquire(&mut table, 1, "x", &a);
        let renew = Command::Renew {
            node: "a".into(),
            incarnation: 1,
            leases: vec![(Key::Lock("x".into()), 1), (Key::Lock("gone".into()), 7)],
        };
        assert_eq!(
            table.apply(2, renew),
            Response::Renewed {
                lost: vec![Key::Lock("gone".into())]
            }
        );
        let expire = |renewed_at| Command::Expire {
            key: Key::Lock("x".into()),
            token: 1,
            renewed_at,
        };
        assert_eq!(table.apply(3, expire(1)), Response::Freed(0), "renewed since");
        assert_eq!(table.apply(4, expire(2)), Response::Freed(1));
        assert!(table.get(&Key::Lock("x".into())).is_none());
    }

    #[test]
    fn a_restarted_node_loses_what_its_earlier_life_held() {
        let mut table = Table::default();
        let old = holder("a", 1);
        let new = Holder {
            incarnation: 2,
            ..holder("a", 2)
        };
        acquire(&mut table, 1, "x", &old);
        acquire(&mut table, 2, "y", &new);
        acquire(&mut table, 3, "z", &holder("b", 1));
        let restart = Command::ReleaseNode {
            node: "a".into(),
            incarnation: 2,
            including: false,
        };
        assert_eq!(table.apply(4, restart), Response::Freed(1));
        let leave = Command::ReleaseNode {
            node: "a".into(),
            incarnation: 2,
            including: true,
        };
        assert_eq!(table.apply(5, leave), Response::Freed(1));
        assert_eq!(table.leases.len(), 1, "b keeps its lock");
    }

    #[test]
    fn names_and_locks_of_the_same_text_are_apart() {
        let mut table = Table::default();
        let a = holder("a", 1);
        acquire(&mut table, 1, "x", &a);
        let register = Command::Acquire {
            key: Key::Name("x".into()),
            holder: holder("b", 1),
            ttl_ms: 1_000,
            service: Some("Calc".into()),
        };
        assert_eq!(table.apply(2, register), Response::Granted { token: 2 });
        assert_eq!(
            table.get(&Key::Name("x".into())).and_then(|l| l.service.as_deref()),
            Some("Calc")
        );
    }

    #[test]
    fn an_abandoned_request_frees_only_what_it_was_granted() {
        let mut table = Table::default();
        let (a, b) = (holder("a", 1), holder("a", 2));
        acquire(&mut table, 1, "x", &a);
        let abandon = |who: &Holder| Command::Abandon {
            key: Key::Lock("x".into()),
            holder: who.clone(),
        };
        assert_eq!(
            table.apply(2, abandon(&b)),
            Response::NotHeld {
                held: Some(("a".into(), 1))
            },
            "another guard of the same node"
        );
        assert_eq!(table.apply(3, abandon(&a)), Response::Released);
    }

    #[test]
    fn a_group_is_named_once() {
        let mut table = Table::default();
        assert_eq!(
            table.apply(1, Command::Found { group: 7 }),
            Response::Founded { group: 7 }
        );
        assert_eq!(
            table.apply(2, Command::Found { group: 9 }),
            Response::Founded { group: 7 }
        );
    }

    #[test]
    fn malformed_requests_are_refused_without_a_change() {
        let mut table = Table::default();
        let long = "n".repeat(MAX_NAME_LEN + 1);
        for (name, ttl_ms) in [("", 1_000), (long.as_str(), 1_000), ("ok", 1), ("ok", MAX_TTL_MS + 1)] {
            let command = Command::Acquire {
                key: Key::Lock(name.into()),
                holder: holder("a", 1),
                ttl_ms,
                service: None,
            };
            assert!(
                matches!(table.apply(1, command), Response::Refused(_)),
                "{name:?} {ttl_ms}"
            );
        }
        assert!(table.leases.is_empty());
    }
}
