//! Cluster membership and service discovery on chitchat (scuttlebutt gossip
//! with a phi-accrual failure detector): what this node publishes, and a task
//! that turns what the others publish into the membership table.

pub(crate) mod advert;
pub(crate) mod envelope;
pub(crate) mod sealed_udp;
mod task;
#[cfg(test)]
mod tests;
pub(crate) mod validate;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use self::advert::{
    HIDDEN_KEY, MANIFEST_PREFIX, NodeStatus, RAFT_KEY, RPC_KEY, RaftAdvert, SERVICE_PREFIX, STATUS_KEY, ServiceAdvert,
};
use self::sealed_udp::{GossipCounters, GossipStats, SealedUdp, Sealer};
pub(crate) use self::task::{GossipConfig, ViewSink};
use self::task::{Running, Spec};
use self::validate::NodeKey;
use crate::handshake::Keyring;
use crate::{Error, NodeId, ServiceManifest};

/// Who this node is in gossip.
pub(crate) struct Whoami<'a> {
    pub(crate) name: &'a NodeId,
    /// Grows across restarts, so gossip tells a restarted node's state from
    /// the old one.
    pub(crate) generation: u64,
    /// Where others gossip with it.
    pub(crate) advertise: SocketAddr,
    /// Where others connect to it (none for a hidden node).
    pub(crate) rpc: Option<SocketAddr>,
    pub(crate) hidden: bool,
}

/// A running gossip member.
pub(crate) struct Discovery {
    current: Arc<ArcSwap<Running>>,
    counters: Arc<GossipCounters>,
    pub(crate) interval: Duration,
    stop: CancellationToken,
}

impl Discovery {
    /// Joins the cluster: chitchat on `socket`, telling `sink` of every
    /// change, and a watchdog that starts it again if it ends.
    pub(crate) async fn start(
        me: Whoami<'_>,
        socket: tokio::net::UdpSocket,
        keyring: &Keyring,
        config: &GossipConfig,
        sink: Weak<dyn ViewSink>,
    ) -> Result<Discovery, Error> {
        let listen_addr = socket.local_addr()?;
        let counters = Arc::new(GossipCounters::new(me.name.as_str()));
        let key = NodeKey {
            name: me.name.as_str().to_owned(),
            generation: me.generation,
            gossip: me.advertise,
        };
        let transport = SealedUdp {
            sealer: Sealer::new(keyring),
            counters: Arc::clone(&counters),
            reply_to: me.advertise,
            bound: std::sync::Mutex::new(Some(socket)),
            me: std::sync::Mutex::new(key),
            // A dead node stays in chitchat's state for the grace period,
            // then as deleted for as long again.
            forget_after: config.dead_node_grace * 2 + Duration::from_secs(60),
        };
        let spec = Arc::new(Spec {
            name: me.name.as_str().to_owned(),
            generation: AtomicU64::new(me.generation),
            advertise: me.advertise,
            listen_addr,
            config: config.clone(),
            transport,
            sink,
        });
        let mut initial = vec![(STATUS_KEY.to_owned(), NodeStatus::Running.as_str().to_owned())];
        if me.hidden {
            initial.push((HIDDEN_KEY.to_owned(), "true".to_owned()));
        } else if let Some(rpc) = me.rpc {
            initial.push((RPC_KEY.to_owned(), rpc.to_string()));
        }
        let stop = CancellationToken::new();
        let running = spec
            .spawn(initial, &stop)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let current = Arc::new(ArcSwap::from_pointee(running));
        tokio::spawn(task::watch(
            spec,
            Arc::clone(&current),
            Arc::clone(&counters),
            stop.clone(),
        ));
        tracing::info!(node = %me.name, gossip = %listen_addr, seeds = ?config.seeds, "gossip started");
        Ok(Discovery {
            current,
            counters,
            interval: config.interval,
            stop,
        })
    }

    /// The chitchat running now.
    fn handle(&self) -> Arc<Running> {
        self.current.load_full()
    }

    /// Ends the gossip task as a crash would, for the watchdog's tests.
    #[cfg(test)]
    pub(crate) fn kill_gossip_task(&self) {
        self.current.load().handle.abort();
    }

    /// This node as chitchat names it now.
    #[cfg(test)]
    pub(crate) fn key(&self) -> NodeKey {
        let id = self.current.load().handle.chitchat_id().clone();
        NodeKey {
            name: id.node_id.to_string(),
            generation: id.generation_id,
            gossip: id.gossip_advertise_addr,
        }
    }

    /// Publishes (or updates) a served global service; `also` are addresses
    /// to gossip with at once besides the nodes gossip knows.
    pub(crate) async fn publish_service(
        &self,
        manifest: &ServiceManifest,
        advert: &ServiceAdvert,
        also: impl IntoIterator<Item = SocketAddr>,
    ) {
        let name = manifest.name();
        self.handle()
            .handle
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                state.set(format!("{SERVICE_PREFIX}{name}"), advert.encode());
                if state.get(&format!("{MANIFEST_PREFIX}{name}")).is_none() {
                    state.set(format!("{MANIFEST_PREFIX}{name}"), advert::manifest_value(manifest));
                }
            })
            .await;
        self.spread(also).await;
    }

    /// Publishes (or updates) this node's part in the consensus group.
    pub(crate) async fn publish_raft(&self, advert: &RaftAdvert) {
        let value = advert.encode();
        let changed = self
            .handle()
            .handle
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                let changed = state.get(RAFT_KEY) != Some(value.as_str());
                if changed {
                    state.set(RAFT_KEY, value.clone());
                }
                changed
            })
            .await;
        if changed {
            self.spread([]).await;
        }
    }

    /// Tells the cluster this node is leaving.
    pub(crate) async fn leave(&self, also: impl IntoIterator<Item = SocketAddr>) {
        self.handle()
            .handle
            .with_chitchat(|chitchat| {
                chitchat.self_node_state().set(STATUS_KEY, NodeStatus::Leaving.as_str());
            })
            .await;
        self.spread(also).await;
    }

    /// Gossips with every known node now instead of at the next round, so a
    /// change reaches everyone in about one round trip.
    async fn spread(&self, also: impl IntoIterator<Item = SocketAddr>) {
        let mut peers: std::collections::BTreeSet<SocketAddr> = self
            .handle()
            .handle
            .with_chitchat(|chitchat| {
                // Every known node, not just those the failure detector
                // already trusts: a node that just joined needs it most.
                let me = chitchat.self_chitchat_id().clone();
                chitchat
                    .node_states()
                    .keys()
                    .filter(|id| **id != me)
                    .map(|id| id.gossip_advertise_addr)
                    .collect::<std::collections::BTreeSet<_>>()
            })
            .await;
        peers.extend(also);
        for addr in peers {
            let _ = self.handle().handle.gossip(addr);
        }
    }

    /// Gossips with `addr` now: how `connect` makes a node known.
    pub(crate) fn introduce(&self, addr: SocketAddr) {
        let _ = self.handle().handle.gossip(addr);
    }

    /// The published manifest of `service` on `node`, if gossip has it.
    pub(crate) async fn manifest(&self, node: &NodeId, service: &str) -> Option<ServiceManifest> {
        let key = format!("{MANIFEST_PREFIX}{service}");
        let value = self
            .handle()
            .handle
            .with_chitchat(|chitchat| {
                chitchat
                    .node_states()
                    .iter()
                    .filter(|(id, _)| *id.node_id == *node.as_str())
                    .max_by_key(|(id, _)| id.generation_id)
                    .and_then(|(_, state)| state.get(&key).map(str::to_owned))
            })
            .await?;
        serde_json::from_str(&value).ok()
    }

    pub(crate) fn stats(&self) -> GossipStats {
        self.counters.snapshot()
    }

    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let _ = self.handle().handle.initiate_shutdown();
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.cancel();
        self.current.load().handle.abort();
    }
}
