//! What nodes say to each other about the group, as calls of the built-in
//! `malla.Raft` service: openraft's own RPCs between members, and the
//! requests any node sends the leader (writes, linearizable reads,
//! membership changes). Bodies are postcard.
//!
//! A node holding the cookie may send any of these, as it may call any
//! service; an outsider cannot reach them (they ride the sealed
//! connections). A member checks nothing more than openraft does: the
//! cookie is the cluster's trust boundary.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::table::{Command, Key, Lease, Response};
use crate::manifest::method_id;
use crate::{MethodManifest, ServiceManifest};

/// The service's wire name.
pub(crate) const SERVICE: &str = "malla.Raft";

/// The service's methods, in manifest order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// openraft's append-entries (and heartbeats).
    Append,
    /// openraft's vote request.
    Vote,
    /// openraft's snapshot chunk.
    Snapshot,
    /// A command for the leader to commit.
    Write,
    /// A read through the leader.
    Read,
    /// A membership change, or the members.
    Admin,
}

impl Method {
    pub(crate) const ALL: [Method; 6] = [
        Method::Append,
        Method::Vote,
        Method::Snapshot,
        Method::Write,
        Method::Read,
        Method::Admin,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Append => "append",
            Method::Vote => "vote",
            Method::Snapshot => "snapshot",
            Method::Write => "write",
            Method::Read => "read",
            Method::Admin => "admin",
        }
    }

    pub(crate) fn id(self) -> u32 {
        method_id(self.name())
    }

    pub(crate) fn from_index(index: usize) -> Option<Method> {
        Method::ALL.get(index).copied()
    }
}

static METHODS: LazyLock<Vec<MethodManifest>> = LazyLock::new(|| {
    Method::ALL
        .iter()
        // Callers send no signature (0): the service is the runtime's own.
        .map(|m| MethodManifest::__new(m.name(), m.id(), &[], "", 1, false, None))
        .collect()
});

pub(crate) static MANIFEST: LazyLock<ServiceManifest> =
    LazyLock::new(|| ServiceManifest::__new(SERVICE, env!("CARGO_PKG_VERSION"), true, &METHODS));

/// Why the node asked could not do what a request wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// Not the leader; the leader it knows, if any.
    NotLeader { leader: Option<String> },
    /// Not a member of a group (or its group is not running here).
    NoGroup,
    /// The request cannot be done at all, as said.
    Invalid(String),
    /// The group failed here (storage, shutdown).
    Failed(String),
}

/// A read of the table, answered by the leader after it confirmed it still
/// leads (linearizable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Query {
    /// One lock or name.
    Lease(Key),
    /// Every lock (`true`) or every name (`false`).
    All { locks: bool },
    /// The group as the leader sees it.
    Status,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer {
    Lease(Option<Lease>),
    All(Vec<(Key, Lease)>),
    Status(GroupStatus),
}

/// The group as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupStatus {
    pub(crate) group: Option<u64>,
    pub(crate) leader: Option<String>,
    pub(crate) term: u64,
    pub(crate) commit: u64,
    pub(crate) voters: Vec<String>,
    pub(crate) learners: Vec<String>,
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Admin {
    /// Add the node as a voter (a learner first, caught up, then a voter).
    AddVoter(String),
    /// Remove a voter (it may be dead).
    RemoveVoter(String),
}

/// A write and its answer, for the `write` method.
pub(crate) type WriteReply = Result<Response, Refusal>;
/// The `read` method's answer.
pub(crate) type ReadReply = Result<Answer, Refusal>;
/// The `admin` method's answer: the group after the change.
pub(crate) type AdminReply = Result<GroupStatus, Refusal>;

/// The `write` method's request.
pub(crate) type WriteRequest = Command;
