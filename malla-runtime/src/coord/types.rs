//! The consensus group's types as openraft sees them, and how a node's name
//! becomes its id in the group.

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::table::{Command, Response};

openraft::declare_raft_types!(
    /// The group's types: the table's commands and answers, members by name.
    pub(crate) TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A member of the group, as its membership lists it: the node's name
/// (where it listens comes from gossip and the connections).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Member {
    pub(crate) name: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The group id of the node named `name`: stable across restarts and
/// versions (the first 8 bytes of its name's SHA-256), so that a restarted
/// voter is the same member. Two names whose ids collide cannot both be
/// members; adding the second is refused.
pub(crate) fn raft_id(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<u64>;
pub(crate) type Vote = openraft::Vote<u64>;
pub(crate) type StorageError = openraft::StorageError<u64>;
pub(crate) type StoredMembership = openraft::StoredMembership<u64, Member>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<u64, Member>;
pub(crate) type Snapshot = openraft::Snapshot<TypeConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_has_one_stable_id() {
        assert_eq!(raft_id("node1"), raft_id("node1"));
        assert_ne!(raft_id("node1"), raft_id("node2"));
        // Fixed by the hash, not by this build: restarts and upgrades agree.
        assert_eq!(raft_id("node1"), 0xca12_f31b_8cbf_5f29);
    }
}
