//! The state machine: the table the log's commands build, as openraft's
//! `RaftStateMachine`, with its snapshots (in memory, and with a data
//! directory in `<data dir>/raft/snapshot`), and each lease's local
//! deadline, which the leader reads to expire leases (see `leases`).

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::log::{read_small, write_value};
use crate::coord::table::{Command, Key, Response, Table};
use crate::coord::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::sync::lock;

/// The state machine; clones share it with the node's readers.
#[derive(Clone)]
pub(crate) struct Machine {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every apply: readers waiting for a change watch it.
    applied: watch::Sender<u64>,
    /// Where snapshots are kept, if the node has a data directory.
    dir: Option<PathBuf>,
}

/// What the log's commands built.
pub(crate) struct State {
    pub(crate) table: Table,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
    /// When each lease runs out here: this replica's apply time plus the
    /// lease's length. Not replicated; every replica applies after the
    /// holder sent its request, so this is never earlier than the holder
    /// was promised (see `leases`).
    pub(crate) deadlines: HashMap<Key, Deadline>,
    snapshot: Option<Stored>,
}

/// A lease's local deadline, and which grant or renewal set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) token: u64,
    pub(crate) renewed_at: u64,
}

/// A snapshot as kept: its metadata and the encoded table.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl Machine {
    /// A state machine, from the snapshot kept in `dir` if there is one.
    pub(crate) fn open(dir: Option<PathBuf>) -> std::io::Result<Self> {
        let mut state = State {
            table: Table::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            deadlines: HashMap::new(),
            snapshot: None,
        };
        if let Some(dir) = &dir
            && let Some(stored) = read_small::<Stored>(&dir.join("snapshot"))?
        {
            state.restore(&stored)?;
        }
        Ok(Machine {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                applied: watch::Sender::new(0),
                dir,
            }),
        })
    }

    /// The state now, to read.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Wakes on every apply.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }
}

impl State {
    fn restore(&mut self, stored: &Stored) -> std::io::Result<()> {
        let table = Table::decode(&stored.data).map_err(std::io::Error::other)?;
        // Deadlines start over, the whole lease from now: never earlier
        // than promised.
        let now = Instant::now();
        self.deadlines = table
            .leases
            .iter()
            .map(|(key, lease)| {
                let deadline = Deadline {
                    at: now + Duration::from_millis(lease.ttl_ms),
                    token: lease.token,
                    renewed_at: lease.renewed_at,
                };
                (key.clone(), deadline)
            })
            .collect();
        self.table = table;
        self.last_applied = stored.meta.last_log_id;
        self.membership = stored.meta.last_membership.clone();
        self.snapshot = Some(stored.clone());
        Ok(())
    }

    fn apply(&mut self, entry: Entry, now: Instant) -> Response {
        self.last_applied = Some(entry.log_id);
        let index = entry.log_id.index;
        match entry.payload {
            EntryPayload::Blank => Response::Freed(0),
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                Response::Freed(0)
            }
            EntryPayload::Normal(command) => {
                let keys = touched(&command);
                let response = self.table.apply(index, command);
                for key in keys {
                    match self.table.get(&key) {
                        Some(lease) => {
                            let deadline = Deadline {
                                at: now + Duration::from_millis(lease.ttl_ms),
                                token: lease.token,
                                renewed_at: lease.renewed_at,
                            };
                            // Only a grant or renewal moves a deadline.
                            if self
                                .deadlines
                                .get(&key)
                                .is_none_or(|d| d.renewed_at != lease.renewed_at)
                            {
                                self.deadlines.insert(key, deadline);
                            }
                        }
                        None => {
                            self.deadlines.remove(&key);
                        }
                    }
                }
                if matches!(response, Response::Freed(n) if n > 0) {
                    let table = &self.table;
                    self.deadlines.retain(|key, _| table.get(key).is_some());
                }
                response
            }
        }
    }

    /// Every lease's deadline moved to a whole lease from now: for a replica
    /// that becomes leader, which cannot know when the others last saw a
    /// renewal. Only ever later, so never unsafe.
    pub(crate) fn restart_deadlines(&mut self, now: Instant) {
        for (key, deadline) in self.deadlines.iter_mut() {
            if let Some(lease) = self.table.get(key) {
                deadline.at = deadline.at.max(now + Duration::from_millis(lease.ttl_ms));
            }
        }
    }
}

/// The keys a command may grant, renew or free.
fn touched(command: &Command) -> Vec<Key> {
    match command {
        Command::Acquire { key, .. }
        | Command::Release { key, .. }
        | Command::Abandon { key, .. }
        | Command::Expire { key, .. } => {
            vec![key.clone()]
        }
        Command::Renew { leases, .. } => leases.iter().map(|(key, _)| key.clone()).collect(),
        Command::ReleaseNode { .. } | Command::Found { .. } => Vec::new(),
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.state();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let now = Instant::now();
        let responses: Vec<Response> = {
            let mut state = self.state();
            entries.into_iter().map(|entry| state.apply(entry, now)).collect()
        };
        self.shared.applied.send_modify(|n| *n += 1);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stored = Stored {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        self.keep(&stored).await?;
        self.state()
            .restore(&stored)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.shared.applied.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.state().snapshot.clone().map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let stored = {
            let state = self.state();
            let data = postcard::to_allocvec(&state.table).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            let last = state.last_applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: state.membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    last.map_or(0, |l| l.leader_id.term),
                    last.map_or(0, |l| l.index)
                ),
            };
            Stored { meta, data }
        };
        self.keep(&stored).await?;
        self.state().snapshot = Some(stored.clone());
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl Machine {
    /// Writes a snapshot to the data directory, if there is one, before
    /// openraft may purge the log it replaces.
    async fn keep(&self, stored: &Stored) -> Result<(), StorageError> {
        let Some(dir) = self.shared.dir.clone() else {
            return Ok(());
        };
        let stored = stored.clone();
        let signature = stored.meta.signature();
        tokio::task::spawn_blocking(move || write_value(&dir.join("snapshot"), &stored, true))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }
}
