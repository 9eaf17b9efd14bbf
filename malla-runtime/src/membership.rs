//! Which nodes are up, and which of them run which service: the table behind
//! `get_nodes`, the routes of every client, and the node and service events.
//!
//! Two inputs feed it: what gossip says about nodes (their address, status
//! and services, and whether the failure detector hears from them) and the
//! state of this node's TCP connection to each of them. A node is up when it
//! is visible, its connection is not broken, and it runs by gossip: live, or
//! connected (a node that just joined is connected before the failure
//! detector has heard it twice); without gossip, when it is connected.
//! A broken connection takes a node's instances out at once, before gossip
//! agrees. Every change rebuilds the routes, with the remote nodes in a new
//! random order, and bumps a version that `wait_for_services` watches.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::seq::SliceRandom;
use rustc_hash::FxHashMap;
use tokio::sync::{broadcast, watch};

use crate::NodeId;
use crate::discovery::advert::{Gossiped, NodeStatus, RaftAdvert, RunningStatus, ServiceAdvert};
use crate::events::Event;
use crate::registry::{Registry, RemoteInstance, Route};
use crate::sync::lock;
use crate::telemetry::metrics;

/// An instance of a service on a node, as `get_instances` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The node running it.
    pub node: NodeId,
    /// The node's address, if it listens.
    pub addr: Option<SocketAddr>,
    /// Version of the service there.
    pub vsn: String,
    /// Whether it takes calls.
    pub status: RunningStatus,
    /// Metadata published with it.
    pub metadata: BTreeMap<String, String>,
}

/// Another node as this one knows it, for tools (`malla nodes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub node: NodeId,
    /// Where it listens, if known.
    pub addr: Option<SocketAddr>,
    /// Whether calls may go there.
    pub status: MemberStatus,
    /// The services it publishes, whatever their status (see
    /// [`Node::get_instances`](crate::Node::get_instances)).
    pub services: Vec<String>,
}

/// How a node stands, as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    /// Up: calls may go there.
    Up,
    /// Leaving the cluster gracefully; once gone it is no longer listed.
    Leaving,
    /// Not heard from, or its connection broke: crashed or cut off. Listed
    /// until it returns or the dead-node grace (15 minutes by default)
    /// passes.
    Down,
}

/// The state of this node's connection to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Up {
        hidden: bool,
    },
    /// The last connection died or the last dial failed; cleared by a new
    /// connection.
    Broken,
}

/// The membership table of one node. It publishes what changes: new routes
/// into the registry's service slots, node and service events on the event
/// channel; and returns what the network should do about it.
pub(crate) struct Membership {
    me: NodeId,
    registry: Arc<Registry>,
    events: broadcast::Sender<Event>,
    state: Mutex<State>,
    version: watch::Sender<u64>,
}

/// What a new gossip view asks of the network.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ViewChange {
    /// Connected nodes the failure detector stopped hearing from: close
    /// their connections, so calls in flight there fail now.
    pub(crate) dead: Vec<NodeId>,
    /// Nodes that gossip forgot (past the dead-node grace) and that are not
    /// connected: forget them too.
    pub(crate) forgotten: Vec<NodeId>,
}

#[derive(Default)]
struct State {
    /// Nodes gossip knows, other than this one.
    gossip: BTreeMap<NodeId, Gossiped>,
    links: FxHashMap<NodeId, Link>,
    up: BTreeSet<NodeId>,
    /// `(service, node)` of every running remote instance on an up node.
    running: BTreeSet<(String, NodeId)>,
    /// Every remote instance on an up node, by service.
    instances: BTreeMap<String, Vec<Instance>>,
}

impl State {
    /// Every visible node known, sorted by name, with its status.
    fn member_statuses(&self) -> impl Iterator<Item = (&NodeId, MemberStatus)> {
        let known: BTreeSet<&NodeId> = self.gossip.keys().chain(self.links.keys()).collect();
        known.into_iter().filter_map(|id| {
            let gossiped = self.gossip.get(id);
            let hidden_by_gossip = gossiped.is_some_and(|g| g.advertised.hidden);
            if hidden_by_gossip || matches!(self.links.get(id), Some(Link::Up { hidden: true })) {
                return None;
            }
            let connected = matches!(self.links.get(id), Some(Link::Up { .. }));
            let status = if self.up.contains(id) {
                MemberStatus::Up
            } else if gossiped.is_some_and(|g| g.advertised.status == NodeStatus::Leaving) {
                // Once its leave has gossiped and it is gone, it has left:
                // not a member any more, though gossip keeps its state
                // for the dead-node grace.
                if !gossiped.is_some_and(|g| g.live) && !connected {
                    return None;
                }
                MemberStatus::Leaving
            } else {
                MemberStatus::Down
            };
            Some((id, status))
        })
    }

    fn is_up(&self, id: &NodeId) -> bool {
        let link = self.links.get(id);
        let connected = matches!(link, Some(Link::Up { .. }));
        let gossiped = self.gossip.get(id);
        let hidden = gossiped.is_some_and(|g| g.advertised.hidden) || matches!(link, Some(Link::Up { hidden: true }));
        if hidden || link == Some(&Link::Broken) {
            return false;
        }
        match gossiped {
            Some(g) => (g.live || connected) && g.advertised.status == NodeStatus::Running,
            None => connected,
        }
    }
}

impl Membership {
    pub(crate) fn new(me: NodeId, registry: Arc<Registry>, events: broadcast::Sender<Event>) -> Self {
        Membership {
            me,
            registry,
            events,
            state: Mutex::new(State::default()),
            version: watch::Sender::new(0),
        }
    }

    /// Takes in what gossip now says about every other node.
    pub(crate) fn gossip_changed(&self, view: BTreeMap<NodeId, Gossiped>) -> ViewChange {
        let mut state = self.lock();
        let connected = |state: &State, id: &NodeId| matches!(state.links.get(id), Some(Link::Up { .. }));
        let dead = state
            .gossip
            .iter()
            .filter(|(id, before)| before.live && !view.get(*id).is_some_and(|now| now.live))
            .filter(|(id, _)| connected(&state, id))
            .map(|(id, _)| id.clone())
            .collect();
        let forgotten: Vec<NodeId> = state
            .gossip
            .keys()
            .filter(|id| !view.contains_key(*id) && !connected(&state, id))
            .cloned()
            .collect();
        for id in &forgotten {
            state.links.remove(id);
        }
        state.gossip = view;
        self.rebuild(&mut state);
        ViewChange { dead, forgotten }
    }

    /// A connection to `peer` is up.
    pub(crate) fn link_up(&self, peer: &NodeId, hidden: bool) {
        let mut state = self.lock();
        if state.links.insert(peer.clone(), Link::Up { hidden }) != Some(Link::Up { hidden }) {
            self.rebuild(&mut state);
        }
    }

    /// The connection to `peer` died, or dialing it failed. Returns true if
    /// the node is forgotten: a hidden node (a tool) that disconnected is
    /// not kept.
    pub(crate) fn link_broken(&self, peer: &NodeId) -> bool {
        let mut state = self.lock();
        let hidden = matches!(state.links.get(peer), Some(Link::Up { hidden: true }))
            || state.gossip.get(peer).is_some_and(|g| g.advertised.hidden);
        let changed = if hidden {
            state.links.remove(peer).is_some()
        } else {
            state.links.insert(peer.clone(), Link::Broken) != Some(Link::Broken)
        };
        if changed {
            self.rebuild(&mut state);
        }
        hidden
    }

    /// Something local changed (a service served, an admin status).
    pub(crate) fn touch(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every visible node known, sorted by name.
    pub(crate) fn members(&self) -> Vec<Member> {
        let state = self.lock();
        state
            .member_statuses()
            .map(|(id, status)| {
                let gossiped = state.gossip.get(id);
                Member {
                    node: id.clone(),
                    addr: gossiped.and_then(|g| g.advertised.rpc),
                    status,
                    services: gossiped
                        .map(|g| g.advertised.services.keys().cloned().collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Where the nodes that are up listen, as gossip says.
    pub(crate) fn up_addrs(&self) -> Vec<SocketAddr> {
        let state = self.lock();
        state
            .up
            .iter()
            .filter_map(|id| state.gossip.get(id)?.advertised.rpc)
            .collect()
    }

    pub(crate) fn up_nodes(&self) -> Vec<NodeId> {
        self.lock().up.iter().cloned().collect()
    }

    pub(crate) fn instances(&self, service: &str) -> Vec<Instance> {
        self.lock().instances.get(service).cloned().unwrap_or_default()
    }

    /// What the nodes that are up say of their part in the consensus group.
    pub(crate) fn raft_adverts(&self) -> Vec<(NodeId, RaftAdvert)> {
        let state = self.lock();
        state
            .up
            .iter()
            .filter_map(|id| Some((id.clone(), state.gossip.get(id)?.advertised.raft.clone()?)))
            .collect()
    }

    /// Services with a running instance on some up node.
    pub(crate) fn running_services(&self) -> BTreeSet<String> {
        self.lock().running.iter().map(|(service, _)| service.clone()).collect()
    }

    /// Gossip-live visible nodes that run and publish an address: the ones
    /// to stay connected to.
    pub(crate) fn connect_targets(&self) -> Vec<NodeId> {
        self.lock()
            .gossip
            .iter()
            .filter(|(_, g)| g.live && !g.advertised.hidden && g.advertised.status == NodeStatus::Running)
            .filter(|(_, g)| g.advertised.rpc.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn rebuild(&self, state: &mut State) {
        let candidates: BTreeSet<NodeId> = state.gossip.keys().chain(state.links.keys()).cloned().collect();
        let up: BTreeSet<NodeId> = candidates.into_iter().filter(|id| state.is_up(id)).collect();
        for id in up.difference(&state.up) {
            tracing::info!(node = %self.me, peer = %id, "node up");
            let _ = self.events.send(Event::NodeUp(id.clone()));
        }
        for id in state.up.difference(&up) {
            tracing::info!(node = %self.me, peer = %id, "node down");
            let _ = self.events.send(Event::NodeDown(id.clone()));
        }

        let mut instances: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        let mut running = BTreeSet::new();
        for id in &up {
            let Some(Gossiped { advertised, .. }) = state.gossip.get(id) else {
                continue;
            };
            for (service, advert) in &advertised.services {
                instances.entry(service.clone()).or_default().push(Instance {
                    node: id.clone(),
                    addr: advertised.rpc,
                    vsn: advert.vsn.clone(),
                    status: advert.status,
                    metadata: advert.meta.clone(),
                });
                if advert.status == RunningStatus::Running {
                    running.insert((service.clone(), id.clone()));
                }
            }
        }
        for (service, id) in running.difference(&state.running) {
            tracing::debug!(node = %self.me, %service, peer = %id, "service up");
            let _ = self.events.send(Event::ServiceUp {
                service: service.clone(),
                node: id.clone(),
            });
        }
        for (service, id) in state.running.difference(&running) {
            tracing::debug!(node = %self.me, %service, peer = %id, "service down");
            let _ = self.events.send(Event::ServiceDown {
                service: service.clone(),
                node: id.clone(),
            });
        }

        // New routes for every service that runs, or ran, somewhere.
        let services: BTreeSet<&String> = running.iter().chain(&state.running).map(|(s, _)| s).collect();
        let mut rng = rand::rng();
        for service in services {
            let mut nodes: Vec<RemoteInstance> = running
                .range((service.clone(), NodeId::from(""))..)
                .take_while(|(s, _)| s == service)
                .map(|(_, id)| {
                    remote_instance(
                        id,
                        state.gossip.get(id).and_then(|g| g.advertised.services.get(service)),
                    )
                })
                .collect();
            nodes.shuffle(&mut rng);
            let remote: Arc<[RemoteInstance]> = nodes.into();
            self.registry.slot(service).update(|route| Route {
                local: route.local.clone(),
                remote: Arc::clone(&remote),
            });
        }

        state.up = up;
        state.running = running;
        state.instances = instances;
        let mut by_status = [0; 3];
        for (_, status) in state.member_statuses() {
            by_status[match status {
                MemberStatus::Up => 0,
                MemberStatus::Leaving => 1,
                MemberStatus::Down => 2,
            }] += 1;
        }
        metrics::members(self.me.as_str(), by_status);
        self.touch();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// The route's entry for `node`'s instance, from its advert.
fn remote_instance(node: &NodeId, advert: Option<&ServiceAdvert>) -> RemoteInstance {
    let mut signatures: Vec<(u32, u64)> = advert.map(|a| a.sigs.clone()).unwrap_or_default();
    signatures.sort_unstable();
    RemoteInstance {
        node: node.clone(),
        vsn: advert.and_then(|a| a.vsn.parse().ok()),
        signatures: signatures.into(),
    }
}

#[cfg(test)]
mod tests;
