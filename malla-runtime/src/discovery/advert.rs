//! What a node publishes about itself in gossip, and how it reads what others
//! publish. Keys:
//!
//! | key | value |
//! |---|---|
//! | `rpc` | the node's TCP address, `127.0.0.1:7000` |
//! | `status` | `running` or `leaving` |
//! | `hidden` | `true` for hidden nodes (they publish nothing else) |
//! | `svc:<name>` | `{"vsn":"1.2.0","status":"running","meta":{..}}` per global service |
//! | `manifest:<name>` | the service's manifest, JSON, for tools |
//! | `raft` | `{"id":…,"expect":3,"group":…,"leader":"n1","term":4,"member":true}`: the node's part in the consensus group |
//!
//! Values from other nodes are checked; a malformed one is skipped (and
//! logged), never trusted.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{AdminStatus, ServiceManifest};

pub(crate) const RPC_KEY: &str = "rpc";
pub(crate) const STATUS_KEY: &str = "status";
pub(crate) const HIDDEN_KEY: &str = "hidden";
pub(crate) const SERVICE_PREFIX: &str = "svc:";
pub(crate) const MANIFEST_PREFIX: &str = "manifest:";
pub(crate) const RAFT_KEY: &str = "raft";

/// Whether a node is taking part in the cluster or leaving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NodeStatus {
    Running,
    Leaving,
}

impl NodeStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Running => "running",
            NodeStatus::Leaving => "leaving",
        }
    }
}

/// The running status of a service instance, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunningStatus {
    /// Takes calls.
    Running,
    /// Admin status `Paused`: refuses calls for now.
    Paused,
    /// Admin status `Inactive`: stopped.
    Stopped,
}

impl From<AdminStatus> for RunningStatus {
    fn from(admin: AdminStatus) -> Self {
        match admin {
            AdminStatus::Active => RunningStatus::Running,
            AdminStatus::Paused => RunningStatus::Paused,
            AdminStatus::Inactive => RunningStatus::Stopped,
        }
    }
}

/// The value of a `svc:<name>` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceAdvert {
    pub(crate) vsn: String,
    pub(crate) status: RunningStatus,
    #[serde(default)]
    pub(crate) meta: BTreeMap<String, String>,
    /// `[method id, signature]` of every method, so that a caller skips an
    /// instance without the method it calls (or with another signature)
    /// before sending anything. Missing from an advert: unknown, not none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) sigs: Vec<(u32, u64)>,
}

impl ServiceAdvert {
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
}

/// The value of the `raft` key: what a node says of its part in the
/// consensus group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RaftAdvert {
    /// Its member id, were it to be one.
    pub(crate) id: u64,
    /// How many voters it expects to bootstrap the group with, if it was
    /// marked a voter (1: a lone node, its own group); 0 if not a voter.
    #[serde(default)]
    pub(crate) expect: usize,
    /// Whether it runs a member of a group now.
    #[serde(default)]
    pub(crate) member: bool,
    /// The group it is a member of, once named.
    #[serde(default)]
    pub(crate) group: Option<u64>,
    /// The leader as it knows it, and that leader's term.
    #[serde(default)]
    pub(crate) leader: Option<String>,
    #[serde(default)]
    pub(crate) term: u64,
}

impl RaftAdvert {
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
}

pub(crate) fn manifest_value(manifest: &ServiceManifest) -> String {
    serde_json::to_string(manifest).expect("plain data serializes")
}

/// What another node publishes, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advertised {
    pub(crate) rpc: Option<SocketAddr>,
    pub(crate) status: NodeStatus,
    pub(crate) hidden: bool,
    pub(crate) services: BTreeMap<String, ServiceAdvert>,
    /// Its part in the consensus group, if it says.
    pub(crate) raft: Option<RaftAdvert>,
}

impl Advertised {
    /// Reads a node's key-values, skipping what does not parse.
    pub(crate) fn parse<'a>(node: &str, key_values: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut advertised = Advertised {
            rpc: None,
            status: NodeStatus::Running,
            hidden: false,
            services: BTreeMap::new(),
            raft: None,
        };
        for (key, value) in key_values {
            match key {
                RPC_KEY => match value.parse() {
                    Ok(addr) => advertised.rpc = Some(addr),
                    Err(_) => tracing::warn!(%node, %value, "ignoring an unparsable `rpc` address in gossip"),
                },
                STATUS_KEY => {
                    advertised.status = match value {
                        "leaving" => NodeStatus::Leaving,
                        "running" => NodeStatus::Running,
                        other => {
                            tracing::warn!(%node, status = %other, "unknown node status in gossip; treating as leaving");
                            NodeStatus::Leaving
                        }
                    }
                }
                HIDDEN_KEY => advertised.hidden = value == "true",
                RAFT_KEY => match serde_json::from_str::<RaftAdvert>(value) {
                    Ok(raft) => advertised.raft = Some(raft),
                    Err(err) => tracing::warn!(%node, "ignoring a malformed consensus advert: {err}"),
                },
                _ => {
                    if let Some(service) = key.strip_prefix(SERVICE_PREFIX) {
                        match serde_json::from_str::<ServiceAdvert>(value) {
                            Ok(advert) => {
                                advertised.services.insert(service.to_owned(), advert);
                            }
                            Err(err) => tracing::warn!(%node, %service, "ignoring a malformed service advert: {err}"),
                        }
                    }
                }
            }
        }
        advertised
    }
}

/// A node as gossip knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gossiped {
    pub(crate) advertised: Advertised,
    /// Whether the failure detector has heard from it recently enough.
    pub(crate) live: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adverts_round_trip_and_garbage_is_skipped() {
        let advert = ServiceAdvert {
            vsn: "1.2.0".into(),
            status: RunningStatus::Paused,
            meta: BTreeMap::from([("zone".into(), "eu".into())]),
            sigs: Vec::new(),
        };
        let encoded = advert.encode();
        assert_eq!(encoded, r#"{"vsn":"1.2.0","status":"paused","meta":{"zone":"eu"}}"#);
        let keys = [
            ("rpc", "127.0.0.1:7000"),
            ("status", "running"),
            ("svc:Calculator", encoded.as_str()),
            ("svc:Broken", "{not json"),
            ("svc:Odd", r#"{"vsn":"1","status":"exploded"}"#),
            ("something-else", "ignored"),
        ];
        let parsed = Advertised::parse("n1", keys.into_iter());
        assert_eq!(parsed.rpc, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(parsed.status, NodeStatus::Running);
        assert_eq!(parsed.services.keys().collect::<Vec<_>>(), ["Calculator"]);
        assert_eq!(parsed.services["Calculator"], advert);
        let bad_rpc = Advertised::parse("n1", [("rpc", "nowhere"), ("status", "??")].into_iter());
        assert_eq!((bad_rpc.rpc, bad_rpc.status), (None, NodeStatus::Leaving));
    }

    #[test]
    fn signatures_are_published_and_read_back() {
        let advert = ServiceAdvert {
            vsn: "2.0.0".into(),
            status: RunningStatus::Running,
            meta: BTreeMap::new(),
            sigs: vec![(7, 0xfeed), (9, 0xbeef)],
        };
        let encoded = advert.encode();
        assert_eq!(
            encoded,
            r#"{"vsn":"2.0.0","status":"running","meta":{},"sigs":[[7,65261],[9,48879]]}"#
        );
        let parsed = Advertised::parse("n1", [("svc:Calc", encoded.as_str())].into_iter());
        assert_eq!(parsed.services["Calc"], advert);
    }

    #[test]
    fn an_older_or_newer_advert_still_reads() {
        // An older node: no metadata, no signatures (unknown, not none).
        let old = r#"{"vsn":"1.0.0","status":"running"}"#;
        // A newer node: a field this version does not know.
        let new = r#"{"vsn":"3.0.0","status":"stopped","meta":{},"sigs":[],"weight":5}"#;
        let parsed = Advertised::parse("n1", [("svc:Old", old), ("svc:New", new)].into_iter());
        assert!(parsed.services["Old"].meta.is_empty() && parsed.services["Old"].sigs.is_empty());
        assert_eq!(parsed.services["New"].status, RunningStatus::Stopped);
    }

    #[test]
    fn hidden_leaving_and_defaults() {
        let parsed = Advertised::parse("n1", std::iter::empty());
        assert_eq!(
            (parsed.rpc, parsed.status, parsed.hidden, parsed.services.len()),
            (None, NodeStatus::Running, false, 0)
        );
        let tool = Advertised::parse("cli", [("hidden", "true"), ("status", "leaving")].into_iter());
        assert!(tool.hidden);
        assert_eq!(tool.status, NodeStatus::Leaving);
        assert!(
            !Advertised::parse("n1", [("hidden", "yes")].into_iter()).hidden,
            "only `true` hides"
        );
    }

    #[test]
    fn adverts_with_wrong_types_are_skipped() {
        for bad in [
            r#"{"vsn":1,"status":"running"}"#,
            r#"{"vsn":"1","status":"running","sigs":[["a",1]]}"#,
            r#"{"vsn":"1","status":"running","sigs":[[4294967296,1]]}"#,
            r#"{"vsn":"1","status":"running","meta":{"k":1}}"#,
            r#"[]"#,
            "",
        ] {
            let parsed = Advertised::parse("n1", [("svc:Calc", bad)].into_iter());
            assert!(parsed.services.is_empty(), "{bad:?} was read");
        }
    }
}
