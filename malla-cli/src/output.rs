//! What the commands print: aligned tables for people, JSON for scripts.

use std::time::SystemTime;

use malla::{
    Error, GroupStatus, HeldLock, Member, MemberStatus, Node, NodeId, NodeStats, RegisteredName, RunningStatus,
    ServiceManifest,
};
use malla_build::{MethodEntry, ServiceEntry};
use serde_json::json;

pub(crate) fn nodes(members: &[Member], as_json: bool) -> String {
    if as_json {
        let rows: Vec<_> = members
            .iter()
            .map(|m| {
                json!({
                    "node": m.node.as_str(),
                    "address": m.addr.map(|a| a.to_string()),
                    "status": member_status(m.status),
                    "services": m.services,
                })
            })
            .collect();
        return serde_json::to_string_pretty(&rows).expect("JSON prints");
    }
    let rows = members
        .iter()
        .map(|m| {
            vec![
                m.node.to_string(),
                m.addr.map_or("-".into(), |a| a.to_string()),
                member_status(m.status).into(),
                m.services.join(", "),
            ]
        })
        .collect();
    let mut out = table(&["NODE", "ADDRESS", "STATUS", "SERVICES"], rows);
    if members.iter().any(|m| m.status == MemberStatus::Down) {
        // Nodes that leave gracefully drop out; a crashed one cannot say so.
        out.push_str("\ndown: not heard from (crashed or cut off); listed until it returns or the dead-node grace (15 min by default) ends");
    }
    out
}

pub(crate) fn services(node: &Node, as_json: bool) -> String {
    let mut names: Vec<String> = node.members().into_iter().flat_map(|m| m.services).collect();
    names.sort();
    names.dedup();
    let instances: Vec<_> = names
        .iter()
        .flat_map(|s| node.get_instances(s).into_iter().map(move |i| (s, i)))
        .collect();
    if as_json {
        let rows: Vec<_> = instances
            .iter()
            .map(|(service, i)| {
                json!({
                    "service": service,
                    "node": i.node.as_str(),
                    "vsn": i.vsn,
                    "status": running_status(i.status),
                    "metadata": i.metadata,
                })
            })
            .collect();
        return serde_json::to_string_pretty(&rows).expect("JSON prints");
    }
    let rows = instances
        .iter()
        .map(|(service, i)| {
            let meta: Vec<String> = i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                (*service).clone(),
                i.node.to_string(),
                if i.vsn.is_empty() { "-".into() } else { i.vsn.clone() },
                running_status(i.status).into(),
                meta.join(","),
            ]
        })
        .collect();
    table(&["SERVICE", "NODE", "VSN", "STATUS", "METADATA"], rows)
}

/// The manifest of a running service, as `malla_build::precompile` reads it.
pub(crate) fn manifest(manifest: &ServiceManifest, from: &NodeId) -> String {
    let entry = ServiceEntry {
        name: manifest.name().to_owned(),
        rust_name: None,
        vsn: manifest.vsn().to_owned(),
        global: manifest.is_global(),
        methods: manifest
            .methods()
            .iter()
            .map(|m| MethodEntry {
                name: m.name().to_owned(),
                args: m
                    .args()
                    .iter()
                    .map(|a| (a.name().to_owned(), a.ty().to_owned()))
                    .collect(),
                returns: m.ret().to_owned(),
                idempotent: m.is_idempotent(),
                timeout_ms: m.timeout_ms(),
                doc: None,
            })
            .collect(),
    };
    let header = format!(
        "Published by node `{from}` for `{}`.\n\
         Types the methods use must exist in the crate that precompiles this\n\
         manifest, with the same serde shape: add `use = [\"…\"]` for them.",
        manifest.name()
    );
    malla_build::write_manifest(&header, &[], &[entry])
        .trim_end()
        .to_owned()
}

pub(crate) fn locks(locks: &[HeldLock], as_json: bool) -> String {
    if as_json {
        let rows: Vec<_> = locks
            .iter()
            .map(|l| json!({"lock": l.name, "node": l.node.as_str(), "token": l.token.value(), "ttl_ms": l.ttl.as_millis() as u64}))
            .collect();
        return serde_json::to_string_pretty(&rows).expect("JSON prints");
    }
    let rows = locks
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.node.to_string(),
                l.token.to_string(),
                format!("{:?}", l.ttl),
            ]
        })
        .collect();
    table(&["LOCK", "HOLDER", "TOKEN", "LEASE"], rows)
}

pub(crate) fn names(names: &[RegisteredName], as_json: bool) -> String {
    if as_json {
        let rows: Vec<_> = names
            .iter()
            .map(|n| json!({"name": n.name, "node": n.node.as_str(), "service": n.service, "token": n.token.value()}))
            .collect();
        return serde_json::to_string_pretty(&rows).expect("JSON prints");
    }
    let rows = names
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.node.to_string(),
                n.service.clone(),
                n.token.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "NODE", "SERVICE", "TOKEN"], rows)
}

pub(crate) fn group(status: &GroupStatus, as_json: bool) -> String {
    let names = |nodes: &[NodeId]| nodes.iter().map(NodeId::to_string).collect::<Vec<_>>();
    if as_json {
        let value = json!({
            "leader": status.leader.as_ref().map(NodeId::as_str),
            "term": status.term,
            "commit_index": status.commit_index,
            "voters": names(&status.voters),
            "learners": names(&status.learners),
        });
        return serde_json::to_string_pretty(&value).expect("JSON prints");
    }
    let rows = status
        .voters
        .iter()
        .map(|v| (v, "voter"))
        .chain(status.learners.iter().map(|l| (l, "learner")))
        .map(|(node, role)| {
            let leads = if status.leader.as_ref() == Some(node) {
                "leader"
            } else {
                ""
            };
            vec![node.to_string(), role.into(), leads.into()]
        })
        .collect();
    let mut out = table(&["NODE", "ROLE", ""], rows);
    out.push_str(&format!("\nterm {}, commit index {}", status.term, status.commit_index));
    out
}

fn member_status(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::Up => "up",
        MemberStatus::Leaving => "leaving",
        MemberStatus::Down => "down",
    }
}

fn running_status(status: RunningStatus) -> &'static str {
    match status {
        RunningStatus::Running => "running",
        RunningStatus::Paused => "paused",
        RunningStatus::Stopped => "stopped",
    }
}

/// One row per node (totals over its services), then one per service on
/// each node; JSON holds every figure.
pub(crate) fn stats(all: &[(NodeId, Result<NodeStats, Error>)], as_json: bool) -> String {
    if as_json {
        let rows: Vec<_> = all
            .iter()
            .map(|(node, stats)| match stats {
                Ok(stats) => serde_json::to_value(stats).expect("stats are JSON"),
                Err(err) => json!({ "node": node.as_str(), "error": err.to_string() }),
            })
            .collect();
        return serde_json::to_string_pretty(&rows).expect("JSON prints");
    }
    let mut nodes = Vec::new();
    let mut services = Vec::new();
    for (node, stats) in all {
        let stats = match stats {
            Ok(stats) => stats,
            Err(err) => {
                let mut row = vec![node.to_string()];
                row.extend(std::iter::repeat_n("-".to_owned(), 12));
                row.push(format!("no answer: {err}"));
                nodes.push(row);
                continue;
            }
        };
        let total = |f: fn(&malla::ServiceStats) -> u64| stats.services.iter().map(f).sum::<u64>().to_string();
        let gossip = stats.gossip.unwrap_or_default();
        nodes.push(vec![
            node.to_string(),
            format!("{}s", stats.uptime.as_secs()),
            stats.connections.to_string(),
            total(|s| s.served),
            total(|s| s.in_flight),
            total(|s| s.serve_errors),
            total(|s| s.refused),
            total(|s| s.calls),
            total(|s| s.call_errors),
            total(|s| s.failovers),
            gossip.sent.to_string(),
            gossip.received.to_string(),
            (gossip.rejected + gossip.malformed + gossip.replayed + gossip.invalid).to_string(),
            // A gossip task that had to be started again is news: its log
            // says why.
            match gossip.restarts {
                0 => "ok".to_owned(),
                n => format!("restarted:{n}"),
            },
        ]);
        for s in &stats.services {
            services.push(vec![
                node.to_string(),
                s.service.clone(),
                s.served.to_string(),
                s.in_flight.to_string(),
                s.serve_errors.to_string(),
                s.refused.to_string(),
                s.calls.to_string(),
                s.call_errors.to_string(),
                s.failovers.to_string(),
            ]);
        }
    }
    let header = [
        "NODE",
        "UPTIME",
        "CONNS",
        "SERVED",
        "IN FLIGHT",
        "ERRORS",
        "REFUSED",
        "CALLS",
        "CALL ERRORS",
        "FAILOVERS",
        "GOSSIP SENT",
        "GOSSIP RECV",
        "GOSSIP REFUSED",
        "GOSSIP",
    ];
    let by_service = [
        "NODE",
        "SERVICE",
        "SERVED",
        "IN FLIGHT",
        "ERRORS",
        "REFUSED",
        "CALLS",
        "CALL ERRORS",
        "FAILOVERS",
    ];
    format!("{}\n\n{}", table(&header, nodes), table(&by_service, services))
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(rows.iter().map(|row| line(row.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// Singletons as the hidden node sees them: a gossip singleton's owner is
/// the one its view names (as every node with the same view does); a
/// strict one's is the holder of its lease, read from the consensus group.
pub(crate) async fn singletons(node: &Node, as_json: bool) -> Result<String, String> {
    let mut names: Vec<String> = node.members().into_iter().flat_map(|m| m.services).collect();
    names.sort();
    names.dedup();
    let mut rows = Vec::new();
    let mut locks = None;
    for service in names {
        let instances = node.get_instances(&service);
        let Some(mode) = instances
            .iter()
            .find_map(|i| i.metadata.get(malla::SINGLETON_METADATA).cloned())
        else {
            continue;
        };
        let (owner, token) = if mode == "strict" {
            if locks.is_none() {
                locks = Some(node.locks().await.map_err(|e| e.to_string())?);
            }
            let lock = malla::singleton_lock(&service);
            let held = locks.iter().flatten().find(|l| l.name == lock);
            (held.map(|l| l.node.clone()), held.map(|l| l.token.value()))
        } else {
            (node.singleton_owner(&service), None)
        };
        let standby: Vec<String> = instances
            .iter()
            .filter(|i| Some(&i.node) != owner.as_ref())
            .map(|i| i.node.to_string())
            .collect();
        // The owner's own word on when it became active; none from a node
        // that cannot be reached or is older than the question.
        let since = match &owner {
            Some(owner) => node
                .singletons_of(owner)
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|s| s.service == service && s.active))
                .map(|s| s.since),
            None => None,
        };
        rows.push((service, mode, owner, token, since, standby));
    }
    if as_json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(service, mode, owner, token, since, standby)| {
                let since_unix_ms = since.map(unix_ms);
                json!({"service": service, "mode": mode, "owner": owner.as_ref().map(NodeId::as_str), "token": token, "since_unix_ms": since_unix_ms, "standby": standby})
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&rows).expect("JSON prints"));
    }
    let rows = rows
        .into_iter()
        .map(|(service, mode, owner, token, since, standby)| {
            vec![
                service,
                mode,
                owner.map_or("-".into(), |o| o.to_string()),
                token.map_or("-".into(), |t| t.to_string()),
                since.map_or("-".into(), ago),
                if standby.is_empty() {
                    "-".into()
                } else {
                    standby.join(",")
                },
            ]
        })
        .collect();
    Ok(table(&["SERVICE", "MODE", "OWNER", "TOKEN", "SINCE", "STANDBY"], rows))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long ago `at` was, on this machine's clock (the owner's may differ).
fn ago(at: SystemTime) -> String {
    match SystemTime::now().duration_since(at) {
        Ok(d) => format!("{}s ago", d.as_secs()),
        Err(_) => "just now".into(),
    }
}
