//! This node as a member of the group: its openraft instance over its
//! store, and the two tasks a member runs beside it: lease expiry (on the
//! leader only) and the reports of how the group stands (metrics, and what
//! the node says of itself in gossip).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::time::Instant;

use super::store::log::LogStore;
use super::store::machine::Machine;
use super::table::{Command, Key, Response};
use super::transport::Transport;
use super::types::{Member, Raft};
use super::wire::{Admin, Answer, GroupStatus, Query, Refusal};
use crate::Error;
use crate::net::Network;
use crate::telemetry::metrics;

/// Where a member keeps its log and snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Storage {
    /// Gone when the process is. A member that restarts comes back as a
    /// new member (see `Coordinator::raft_id`).
    Memory,
    /// In `<dir>/raft/`, synced before anything is acknowledged.
    Dir(PathBuf),
}

/// Timing of the group, fixed at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) heartbeat: Duration,
    pub(crate) election_min: Duration,
    pub(crate) election_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        // A dead leader is replaced within about a second on a LAN: its
        // followers stop hearing it for 400–800 ms, then vote.
        Timing {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(400),
            election_max: Duration::from_millis(800),
        }
    }
}

/// This node's openraft instance and its state machine.
pub(crate) struct LocalMember {
    pub(crate) raft: Raft,
    pub(crate) machine: Machine,
    pub(crate) id: u64,
    node: String,
}

impl LocalMember {
    /// Starts the member `id` of the node `node` over `storage`; its RPCs
    /// go through `network`.
    pub(crate) async fn start(
        id: u64,
        node: &str,
        storage: &Storage,
        network: Arc<Network>,
        timing: Timing,
    ) -> Result<Arc<LocalMember>, Error> {
        let config = openraft::Config {
            cluster_name: "malla".into(),
            heartbeat_interval: timing.heartbeat.as_millis() as u64,
            election_timeout_min: timing.election_min.as_millis() as u64,
            election_timeout_max: timing.election_max.as_millis() as u64,
            install_snapshot_timeout: 5_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(format!("consensus settings: {e}")))?;
        let storage_error = |e: std::io::Error| Error::Config(format!("the consensus group's storage: {e}"));
        let (log, machine) = match storage {
            Storage::Memory => (LogStore::in_memory(), Machine::open(None).map_err(storage_error)?),
            Storage::Dir(dir) => {
                let dir = dir.join("raft");
                let log = LogStore::open(&dir).map_err(storage_error)?;
                (log, Machine::open(Some(dir)).map_err(storage_error)?)
            }
        };
        let raft = Raft::new(id, Arc::new(config), Transport { network }, log, machine.clone())
            .await
            .map_err(|e| Error::Config(format!("the consensus group did not start: {e}")))?;
        let member = Arc::new(LocalMember {
            raft,
            machine,
            id,
            node: node.to_owned(),
        });
        tokio::spawn(expire_leases(Arc::downgrade(&member)));
        Ok(member)
    }

    /// Whether this member has joined a group (initialized, or replicated to).
    pub(crate) async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Starts a new group of `members` (id, name), this one among them.
    /// Harmless if the group exists already; every one of `members` may
    /// call it with the same list.
    pub(crate) async fn initialize(&self, members: &BTreeMap<u64, String>) -> Result<(), Error> {
        let members: BTreeMap<u64, Member> = members
            .iter()
            .map(|(id, name)| (*id, Member { name: name.clone() }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Config(format!("the consensus group did not form: {e}"))),
        }
    }

    /// Commits `command` if this member leads.
    pub(crate) async fn write(&self, command: Command) -> Result<Response, Refusal> {
        match self.raft.client_write(command).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => Err(Refusal::NotLeader {
                leader: to.leader_node.map(|n| n.name),
            }),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Refusal::Invalid(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(Refusal::Failed(e.to_string())),
        }
    }

    /// Answers `query` if this member leads, after confirming with a quorum
    /// that it still does: linearizable.
    pub(crate) async fn read(&self, query: Query) -> Result<Answer, Refusal> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                return Err(Refusal::NotLeader {
                    leader: to.leader_node.map(|n| n.name),
                });
            }
            Err(RaftError::APIError(e)) => return Err(Refusal::Failed(e.to_string())),
            Err(RaftError::Fatal(e)) => return Err(Refusal::Failed(e.to_string())),
        }
        Ok(self.read_local(query))
    }

    /// Answers `query` from this member's replica, as it is: possibly behind.
    pub(crate) fn read_local(&self, query: Query) -> Answer {
        match query {
            Query::Lease(key) => Answer::Lease(self.machine.state().table.get(&key).cloned()),
            Query::All { locks } => Answer::All(
                self.machine
                    .state()
                    .table
                    .leases
                    .iter()
                    .filter(|(key, _)| matches!(key, Key::Lock(_)) == locks)
                    .map(|(key, lease)| (key.clone(), lease.clone()))
                    .collect(),
            ),
            Query::Status => Answer::Status(self.status()),
        }
    }

    /// The group as this member sees it.
    pub(crate) fn status(&self) -> GroupStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<u64> = membership.voter_ids().collect();
        let name_of = |id: &u64| membership.get_node(id).map(|m| m.name.clone());
        let leader = metrics.current_leader.and_then(|id| name_of(&id));
        GroupStatus {
            group: self.machine.state().table.group,
            leader,
            term: metrics.current_term,
            commit: metrics.last_applied.map_or(0, |l| l.index),
            voters: voter_ids.iter().filter_map(name_of).collect(),
            learners: membership.learner_ids().filter_map(|id| name_of(&id)).collect(),
        }
    }

    /// Whether this member leads now, as far as it knows.
    pub(crate) fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// A membership change, on the leader: joint consensus (openraft's).
    pub(crate) async fn admin(&self, change: Admin, target_id: Option<u64>) -> Result<GroupStatus, Refusal> {
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let refuse_write = |e: RaftError<u64, ClientWriteError<u64, Member>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => Refusal::NotLeader {
                leader: to.leader_node.map(|n| n.name),
            },
            RaftError::APIError(e) => Refusal::Invalid(e.to_string()),
            RaftError::Fatal(e) => Refusal::Failed(e.to_string()),
        };
        match change {
            Admin::AddVoter(name) => {
                let id = target_id.ok_or_else(|| Refusal::Invalid(format!("`{name}` publishes no member id")))?;
                if let Some(other) = membership.get_node(&id).filter(|m| m.name != name) {
                    return Err(Refusal::Invalid(format!(
                        "`{name}` has the member id of `{}`; rename one of them",
                        other.name
                    )));
                }
                if membership.voter_ids().any(|v| v == id) {
                    return Ok(self.status());
                }
                self.raft
                    .add_learner(id, Member { name }, true)
                    .await
                    .map_err(refuse_write)?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                    .await
                    .map_err(refuse_write)?;
            }
            Admin::RemoveVoter(name) => {
                let ids: BTreeSet<u64> = membership
                    .nodes()
                    .filter(|(_, m)| m.name == name)
                    .map(|(id, _)| *id)
                    .collect();
                if ids.is_empty() {
                    return Err(Refusal::Invalid(format!("`{name}` is not a member of the group")));
                }
                let voters: BTreeSet<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| membership.voter_ids().any(|v| v == *id))
                    .collect();
                if !voters.is_empty() {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(voters), false)
                        .await
                        .map_err(refuse_write)?;
                }
                let learners: BTreeSet<u64> = ids
                    .into_iter()
                    .filter(|id| membership.learner_ids().any(|l| l == *id))
                    .collect();
                if !learners.is_empty() {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(learners), false)
                        .await
                        .map_err(refuse_write)?;
                }
            }
        }
        Ok(self.status())
    }

    /// Stops the member (the node shuts down).
    pub(crate) async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// On the leader, commits an `Expire` for every lease whose deadline has
/// passed here; every member runs it, and it acts while its member leads.
/// Also reports the group's figures as metrics.
async fn expire_leases(member: Weak<LocalMember>) {
    let (mut metrics_rx, mut applied) = match member.upgrade() {
        Some(m) => (m.raft.metrics(), m.machine.subscribe()),
        None => return,
    };
    let mut was_leader = false;
    loop {
        let Some(member) = member.upgrade() else { return };
        let (leading, term, commit) = {
            let metrics = metrics_rx.borrow();
            if metrics.running_state.is_err() {
                return;
            }
            (
                metrics.state == ServerState::Leader,
                metrics.current_term,
                metrics.last_applied.map_or(0, |l| l.index),
            )
        };
        metrics::raft(&member.node, leading, term, commit);
        let now = Instant::now();
        if leading && !was_leader {
            member.machine.state().restart_deadlines(now);
        }
        was_leader = leading;
        let mut next = now + Duration::from_secs(1);
        if leading {
            let expired: Vec<Command> = {
                let state = member.machine.state();
                next = state
                    .deadlines
                    .values()
                    .map(|d| d.at)
                    .min()
                    .map_or(next, |at| at.min(next));
                state
                    .deadlines
                    .iter()
                    .filter(|(_, d)| d.at <= now)
                    .map(|(key, d)| Command::Expire {
                        key: key.clone(),
                        token: d.token,
                        renewed_at: d.renewed_at,
                    })
                    .collect()
            };
            for command in expired {
                let kind = match &command {
                    Command::Expire { key: Key::Lock(_), .. } => "lock",
                    _ => "name",
                };
                if let Ok(Response::Freed(1)) = member.write(command).await {
                    metrics::lease_expired(&member.node, kind);
                    tracing::info!(node = %member.node, kind, "a lease ran out");
                }
            }
            // Pick up what the expiries changed before waiting.
            if next <= Instant::now() {
                next = Instant::now() + Duration::from_millis(10);
            }
        }
        drop(member);
        tokio::select! {
            changed = metrics_rx.changed() => if changed.is_err() { return },
            _ = applied.changed() => {}
            () = tokio::time::sleep_until(next) => {}
        }
    }
}
