//! The membership table fed by hand, without sockets: which nodes are up,
//! the routes it publishes, the events it sends, and what it forgets.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::discovery::advert::{Advertised, ServiceAdvert};
use crate::events;

struct Table {
    membership: Membership,
    registry: Arc<Registry>,
    events: Receiver<Event>,
}

fn table() -> Table {
    let registry = Arc::new(Registry::default());
    let sender = events::channel();
    let events = sender.subscribe();
    Table {
        membership: Membership::new("me".into(), Arc::clone(&registry), sender),
        registry,
        events,
    }
}

impl Table {
    fn route(&self, service: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .registry
            .slot(service)
            .route()
            .remote
            .iter()
            .map(|n| n.node.to_string())
            .collect();
        nodes.sort();
        nodes
    }

    fn drain(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(event) => seen.push(event),
                Err(TryRecvError::Empty) => return seen,
                Err(err) => panic!("{err}"),
            }
        }
    }
}

/// A node as gossip would report it, running `services`.
fn gossiped(port: u16, live: bool, services: &[(&str, RunningStatus)]) -> Gossiped {
    Gossiped {
        advertised: Advertised {
            rpc: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            status: NodeStatus::Running,
            hidden: false,
            raft: None,
            services: services
                .iter()
                .map(|(name, status)| {
                    let advert = ServiceAdvert {
                        vsn: "1.0.0".into(),
                        status: *status,
                        meta: BTreeMap::new(),
                        sigs: Vec::new(),
                    };
                    (name.to_string(), advert)
                })
                .collect(),
        },
        live,
    }
}

fn view(nodes: &[(&str, Gossiped)]) -> BTreeMap<NodeId, Gossiped> {
    nodes.iter().map(|(name, g)| (NodeId::from(*name), g.clone())).collect()
}

const RUNNING: RunningStatus = RunningStatus::Running;

#[test]
fn routes_list_the_running_instances_of_up_nodes() {
    let mut t = table();
    let change = t.membership.gossip_changed(view(&[
        ("a", gossiped(1, true, &[("Calc", RUNNING)])),
        (
            "b",
            gossiped(2, true, &[("Calc", RUNNING), ("Kv", RunningStatus::Paused)]),
        ),
        ("c", gossiped(3, false, &[("Calc", RUNNING)])),
    ]));
    assert_eq!(change, ViewChange::default());
    assert_eq!(t.route("Calc"), ["a", "b"], "c is not live");
    assert!(t.route("Kv").is_empty(), "a paused instance takes no calls");
    assert!(t.registry.slot("Calc").is_available() && !t.registry.slot("Kv").is_available());
    assert_eq!(t.membership.up_nodes(), [NodeId::from("a"), NodeId::from("b")]);
    assert_eq!(t.membership.instances("Kv").len(), 1, "listed, though paused");
    assert_eq!(
        t.membership.running_services().into_iter().collect::<Vec<_>>(),
        ["Calc"]
    );

    let events = t.drain();
    assert!(events.contains(&Event::NodeUp("a".into())));
    assert!(events.contains(&Event::ServiceUp {
        service: "Calc".into(),
        node: "b".into()
    }));
    assert!(!events.contains(&Event::NodeUp("c".into())));
}

#[test]
fn a_broken_link_takes_a_node_out_before_gossip_agrees() {
    let mut t = table();
    let both = view(&[
        ("a", gossiped(1, true, &[("Calc", RUNNING)])),
        ("b", gossiped(2, true, &[("Calc", RUNNING)])),
    ]);
    t.membership.gossip_changed(both.clone());
    t.membership.link_up(&"a".into(), false);
    t.drain();

    assert!(
        !t.membership.link_broken(&"a".into()),
        "a visible node is not forgotten"
    );
    assert_eq!(t.route("Calc"), ["b"]);
    assert_eq!(
        t.drain(),
        [
            Event::NodeDown("a".into()),
            Event::ServiceDown {
                service: "Calc".into(),
                node: "a".into()
            }
        ]
    );
    // Gossip still says a is live: it stays out until a connection is back.
    t.membership.gossip_changed(both);
    assert_eq!(t.route("Calc"), ["b"]);
    t.membership.link_up(&"a".into(), false);
    assert_eq!(t.route("Calc"), ["a", "b"]);
}

#[test]
fn a_connected_node_the_detector_stops_hearing_is_reported_dead() {
    let mut t = table();
    t.membership
        .gossip_changed(view(&[("a", gossiped(1, true, &[("Calc", RUNNING)]))]));
    t.membership.link_up(&"a".into(), false);
    let change = t
        .membership
        .gossip_changed(view(&[("a", gossiped(1, false, &[("Calc", RUNNING)]))]));
    // Still connected, so still up here; the network closes the connection.
    assert_eq!(change.dead, [NodeId::from("a")]);
    t.drain();
}

#[test]
fn leaving_and_hidden_nodes_take_no_calls() {
    let t = table();
    let mut leaving = gossiped(1, true, &[("Calc", RUNNING)]);
    leaving.advertised.status = NodeStatus::Leaving;
    let mut hidden = gossiped(2, true, &[("Calc", RUNNING)]);
    hidden.advertised.hidden = true;
    t.membership.gossip_changed(view(&[("a", leaving), ("h", hidden)]));
    assert!(t.route("Calc").is_empty());
    let members = t.membership.members();
    assert_eq!(members.len(), 1, "hidden nodes are not listed: {members:?}");
    assert_eq!(members[0].status, MemberStatus::Leaving);
}

#[test]
fn a_node_that_left_is_no_longer_listed_and_a_crashed_one_is_listed_down() {
    let t = table();
    let mut left = gossiped(1, true, &[]);
    left.advertised.status = NodeStatus::Leaving;
    t.membership
        .gossip_changed(view(&[("left", left.clone()), ("crashed", gossiped(2, true, &[]))]));
    assert_eq!(t.membership.members().len(), 2);
    // Both gone quiet; gossip keeps their state for the dead-node grace.
    left.live = false;
    t.membership
        .gossip_changed(view(&[("left", left), ("crashed", gossiped(2, false, &[]))]));
    let members = t.membership.members();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(
        (members[0].node.as_str(), members[0].status),
        ("crashed", MemberStatus::Down)
    );
}

#[test]
fn nodes_that_are_gone_are_forgotten() {
    let t = table();
    t.membership
        .gossip_changed(view(&[("a", gossiped(1, false, &[])), ("b", gossiped(2, true, &[]))]));
    t.membership.link_up(&"b".into(), false);
    // Gossip dropped both after the dead-node grace; b is still connected.
    let change = t.membership.gossip_changed(BTreeMap::new());
    assert_eq!(change.forgotten, [NodeId::from("a")]);
    let names: Vec<NodeId> = t.membership.members().into_iter().map(|m| m.node).collect();
    assert_eq!(names, [NodeId::from("b")]);

    // A hidden node (a tool) is forgotten once it disconnects.
    t.membership.link_up(&"cli".into(), true);
    assert!(t.membership.link_broken(&"cli".into()));
    let names: Vec<NodeId> = t.membership.members().into_iter().map(|m| m.node).collect();
    assert_eq!(names, [NodeId::from("b")]);
}

#[test]
fn every_change_wakes_the_waiters() {
    let t = table();
    let mut version = t.membership.subscribe();
    version.mark_unchanged();
    t.membership
        .gossip_changed(view(&[("a", gossiped(1, true, &[("Calc", RUNNING)]))]));
    assert!(version.has_changed().unwrap());
    version.mark_unchanged();
    t.membership.touch();
    assert!(version.has_changed().unwrap());
}
