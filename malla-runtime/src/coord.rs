//! Coordination: one of something, cluster-wide. An embedded Raft group
//! (openraft) carried over the nodes' own sealed connections agrees on a
//! table of locks and global names, each held under a lease, so that none
//! is ever held twice, even across a partition: without a quorum nothing is
//! granted.
//!
//! | file | what it owns |
//! |---|---|
//! | `table` | the locks and names, and the commands that change them: pure, deterministic |
//! | `store` | the log and the state machine, in memory or in a data directory |
//! | `types` | openraft's types, and a node's member id |
//! | `wire` | the `malla.Raft` service's requests and answers |
//! | `transport` | openraft's RPCs over the node's connections |
//! | `service` | the `malla.Raft` service every node serves |
//! | `member` | this node's openraft instance, and lease expiry on the leader |
//! | `coordinator` | who is a voter, bootstrapping, requests routed to the leader |
//! | `keeper` | the holder's side of leases: renewals, validity, the clock assumption |
//! | `locks` | [`LockGuard`], [`FencingToken`], lock requests |
//! | `names` | global names |

mod coordinator;
mod keeper;
mod locks;
mod member;
mod names;
mod service;
mod store;
mod table;
mod transport;
mod types;
mod wire;

pub(crate) use coordinator::{Cluster, CoordConfig, Coordinator, Role};
pub use locks::{DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_TTL, FencingToken, HeldLock, LockGuard, LockRequest};
pub(crate) use member::{Storage, Timing};
pub(crate) use names::NameBinding;
pub use names::{NAME_TTL, RegisteredName};
pub(crate) use service::RaftService;
pub(crate) use wire::Admin;

use crate::NodeId;

/// The consensus group as its leader sees it (`malla voters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The node leading it.
    pub leader: Option<NodeId>,
    /// The leader's term.
    pub term: u64,
    /// The last log entry the leader applied.
    pub commit_index: u64,
    /// Its voters.
    pub voters: Vec<NodeId>,
    /// Members that replicate but do not vote (a voter being added).
    pub learners: Vec<NodeId>,
}

impl From<wire::GroupStatus> for GroupStatus {
    fn from(status: wire::GroupStatus) -> Self {
        let ids = |names: Vec<String>| names.into_iter().map(|n| NodeId::from(n.as_str())).collect();
        GroupStatus {
            leader: status.leader.map(|n| NodeId::from(n.as_str())),
            term: status.term,
            commit_index: status.commit,
            voters: ids(status.voters),
            learners: ids(status.learners),
        }
    }
}

impl Coordinator {
    /// The group as its leader sees it, read through the leader.
    pub(crate) async fn status(&self) -> Result<GroupStatus, crate::Error> {
        let deadline = tokio::time::Instant::now() + locks::REQUEST_TIMEOUT;
        match self.read(wire::Query::Status, deadline, "status").await? {
            wire::Answer::Status(status) => Ok(status.into()),
            other => Err(crate::Error::Config(format!(
                "unexpected answer from the group: {other:?}"
            ))),
        }
    }

    /// A membership change through the leader.
    pub(crate) async fn change(&self, change: Admin) -> Result<GroupStatus, crate::Error> {
        // Adding a voter waits for it to catch up.
        let deadline = tokio::time::Instant::now() + 4 * locks::REQUEST_TIMEOUT;
        self.admin(change, deadline).await.map(Into::into)
    }
}
