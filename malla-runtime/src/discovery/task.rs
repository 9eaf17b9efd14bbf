//! The gossip task: chitchat started, watched, and started again if it
//! ends; its settings, and the view it reports.
//!
//! chitchat runs in one tokio task; if it ends (a panic on input that
//! [`validate`](super::validate) did not foresee, a socket error), nothing
//! in chitchat says so and the node silently stops gossiping: its routes go
//! stale and the others see it die. So a watchdog awaits the task's end,
//! logs and counts it, and starts chitchat again under a new generation
//! (the others keep the old one's state until it times out, and would take
//! nothing from a restart at lower versions), with this node's own keys as
//! they were and every node the old task knew told of it at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use chitchat::transport::Transport;
use chitchat::{Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ListenerHandle};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::advert::{Advertised, Gossiped};
use super::sealed_udp::{GossipCounters, SealedUdp};
use super::validate::NodeKey;
use crate::NodeId;
use crate::sync::lock;
use crate::telemetry::metrics;

/// Receives what gossip says about the other nodes, whenever it changes and
/// at least once a round.
pub(crate) trait ViewSink: Send + Sync + 'static {
    fn gossip_changed(&self, view: BTreeMap<NodeId, Gossiped>);
}

/// Gossip settings, from the node builder.
#[derive(Debug, Clone)]
pub(crate) struct GossipConfig {
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) interval: Duration,
    pub(crate) phi_threshold: f64,
    pub(crate) dead_node_grace: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            seeds: Vec::new(),
            interval: Duration::from_millis(500),
            phi_threshold: 8.0,
            dead_node_grace: Duration::from_secs(15 * 60),
        }
    }
}

/// The longest wait between two attempts to start chitchat again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What starting chitchat takes, kept to start it again.
pub(super) struct Spec {
    pub(super) name: String,
    pub(super) generation: AtomicU64,
    pub(super) advertise: SocketAddr,
    pub(super) listen_addr: SocketAddr,
    pub(super) config: GossipConfig,
    pub(super) transport: SealedUdp,
    pub(super) sink: Weak<dyn ViewSink>,
}

/// One run of chitchat, and the task that turns its state into the view.
pub(super) struct Running {
    pub(super) handle: ChitchatHandle,
    _listener: ListenerHandle,
    refresh: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.refresh.cancel();
        self.handle.abort();
    }
}

impl Spec {
    /// Starts chitchat with `keys` as this node's state.
    pub(super) async fn spawn(&self, keys: Vec<(String, String)>, stop: &CancellationToken) -> anyhow::Result<Running> {
        let generation = self.generation.load(Ordering::Relaxed);
        *lock(&self.transport.me) = NodeKey {
            name: self.name.clone(),
            generation,
            gossip: self.advertise,
        };
        let config = &self.config;
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(self.name.clone(), generation, self.advertise),
            cluster_id: "malla".into(),
            gossip_interval: config.interval,
            listen_addr: self.listen_addr,
            seed_nodes: config.seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                initial_interval: config.interval,
                dead_node_grace_period: config.dead_node_grace,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: config.dead_node_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let handle = chitchat::spawn_chitchat(chitchat_config, keys, &self.transport as &dyn Transport).await?;
        let changed = Arc::new(Notify::new());
        let chitchat = handle.chitchat();
        let listener = {
            let changed = Arc::clone(&changed);
            chitchat.lock().await.subscribe_event("", move |_| changed.notify_one())
        };
        let refresh = stop.child_token();
        tokio::spawn(refresh_view(
            self.sink.clone(),
            chitchat,
            changed,
            config.interval,
            refresh.clone(),
        ));
        Ok(Running {
            handle,
            _listener: listener,
            refresh,
        })
    }
}

/// Awaits the end of the running chitchat and starts it again, until `stop`.
pub(super) async fn watch(
    spec: Arc<Spec>,
    current: Arc<ArcSwap<Running>>,
    counters: Arc<GossipCounters>,
    stop: CancellationToken,
) {
    loop {
        let ended = current.load().handle.termination_watcher();
        let why = tokio::select! {
            () = stop.cancelled() => return,
            ended = ended => ended,
        };
        if stop.is_cancelled() {
            return;
        }
        counters.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::gossip_restarted(&spec.name);
        let why = why.err().map_or_else(|| "it returned".to_owned(), |e| e.to_string());
        tracing::error!(node = %spec.name, "the gossip task ended ({why}); starting it again");
        let old = current.load_full();
        let (keys, peers) = old
            .handle
            .with_chitchat(|chitchat| {
                let me = chitchat.self_chitchat_id().clone();
                let keys = chitchat
                    .self_node_state()
                    .key_values()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>();
                let peers = chitchat
                    .node_states()
                    .keys()
                    .filter(|id| **id != me)
                    .map(|id| id.gossip_advertise_addr)
                    .collect::<std::collections::BTreeSet<_>>();
                (keys, peers)
            })
            .await;
        let mut backoff = spec.config.interval;
        let running = loop {
            spec.generation.fetch_add(1, Ordering::Relaxed);
            match spec.spawn(keys.clone(), &stop).await {
                Ok(running) => break running,
                Err(err) => {
                    tracing::warn!(node = %spec.name, "gossip could not start again: {err}; retrying in {backoff:?}");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        for addr in peers {
            let _ = running.handle.gossip(addr);
        }
        current.store(Arc::new(running));
        tracing::info!(node = %spec.name, "gossip started again");
    }
}

/// Rebuilds the membership table whenever gossip changes (a key, a node's
/// liveness) and at least once a round.
async fn refresh_view(
    sink: Weak<dyn ViewSink>,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    changed: Arc<Notify>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut live = chitchat.lock().await.live_nodes_watcher();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = changed.notified() => {}
            changed = live.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {}
        }
        let view: BTreeMap<_, _> = read_view(&chitchat).await;
        let Some(sink) = sink.upgrade() else { return };
        sink.gossip_changed(view);
    }
}

/// What every node other than this one publishes, and whether the failure
/// detector considers it live. A restarted node may be listed twice for a
/// while: its latest generation wins.
async fn read_view(chitchat: &tokio::sync::Mutex<Chitchat>) -> BTreeMap<NodeId, Gossiped> {
    let chitchat = chitchat.lock().await;
    let me = chitchat.self_chitchat_id();
    let live: std::collections::BTreeSet<&ChitchatId> = chitchat.live_nodes().collect();
    let mut latest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
    for id in chitchat.node_states().keys().filter(|id| id.node_id != me.node_id) {
        let entry = latest.entry(&id.node_id).or_insert(id);
        if id.generation_id > entry.generation_id {
            *entry = id;
        }
    }
    latest
        .into_iter()
        .filter_map(|(name, id)| {
            let state = chitchat.node_state(id)?;
            let gossiped = Gossiped {
                advertised: Advertised::parse(name, state.key_values()),
                live: live.contains(id),
            };
            Some((NodeId::from(name), gossiped))
        })
        .collect()
}
