//! One node's part in coordination: whether it is a voter, its member of
//! the group when it runs one, and how its requests reach the leader.
//!
//! # Who is a voter
//!
//! - A node marked `voter(n)` starts a member at once and, while its log is
//!   empty, waits until it sees exactly `n` voters marked alike, all still
//!   empty, the same set two rounds in a row; then each of them starts the
//!   group with that set (Consul's `bootstrap_expect`; openraft allows every
//!   one of them to). Mark exactly `n` nodes.
//! - A node with no seeds and no connect targets, not hidden and not marked
//!   otherwise, is the first node of its cluster: it is its own group of
//!   one voter, started the first time anyone asks for a lock or a name.
//! - Every other node is a client: its requests go to the leader. Any node
//!   can be added as a voter later (`Node::add_voter`).
//!
//! A member with a data directory is the same member after a restart (its
//! id comes from its name). One without comes back as a new member, since
//! it forgot its votes: the old one must be removed (`Node::remove_voter`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::Instrument;

use super::keeper::Keeper;
use super::member::{LocalMember, Storage, Timing};
use super::table::{Command, Response};
use super::transport::{self, Failed};
use super::types::raft_id;
use super::wire::{Admin, AdminReply, Answer, GroupStatus, Method, Query, ReadReply, Refusal, WriteReply};
use crate::discovery::advert::RaftAdvert;
use crate::net::Network;
use crate::sync::lock;
use crate::telemetry::metrics;
use crate::{Error, NodeId};

/// How a node takes part in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Marked a voter; bootstraps with `expect` voters.
    Voter { expect: usize },
    /// The first node of its cluster: its own group, started on first use.
    Lone,
    /// Asks the leader.
    Client,
}

/// What coordination asks of the node: the other nodes' adverts, and
/// publishing its own (gossip).
pub(crate) trait Cluster: Send + Sync + 'static {
    fn adverts(&self) -> Vec<(NodeId, RaftAdvert)>;
    fn publish(&self, advert: RaftAdvert);
}

/// Settings of coordination, fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct CoordConfig {
    pub(crate) role: Role,
    pub(crate) storage: Storage,
    pub(crate) timing: Timing,
}

/// One node's coordination.
pub(crate) struct Coordinator {
    me: NodeId,
    incarnation: u64,
    id: u64,
    config: CoordConfig,
    network: Arc<Network>,
    cluster: Weak<dyn Cluster>,
    member: OnceCell<Arc<LocalMember>>,
    /// Who led when last heard.
    leader: Mutex<Option<NodeId>>,
    pub(crate) keeper: Arc<Keeper>,
    /// This node's earlier lives' leases were released (once, before its
    /// first request).
    released_earlier: OnceCell<()>,
    this: Weak<Coordinator>,
}

impl Coordinator {
    pub(crate) fn new(
        me: NodeId,
        incarnation: u64,
        config: CoordConfig,
        network: Arc<Network>,
        cluster: Weak<dyn Cluster>,
    ) -> Arc<Coordinator> {
        let id = match &config.storage {
            Storage::Dir(_) => raft_id(me.as_str()),
            // A member that forgets its votes on restart must not come back
            // as the one that cast them.
            Storage::Memory => raft_id(&format!("{me}#{incarnation}")),
        };
        Arc::new_cyclic(|this| Coordinator {
            me,
            incarnation,
            id,
            config,
            network,
            cluster,
            member: OnceCell::new(),
            leader: Mutex::new(None),
            keeper: Arc::new(Keeper::default()),
            released_earlier: OnceCell::new(),
            this: this.clone(),
        })
    }

    pub(crate) fn me(&self) -> &NodeId {
        &self.me
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Starts what runs from the start: the renewal of leases, and for a
    /// marked voter, its member and the bootstrap.
    pub(crate) fn start(self: &Arc<Self>) {
        tokio::spawn(renew(Arc::downgrade(self)));
        self.advertise(None);
        if let Role::Voter { expect } = self.config.role {
            tokio::spawn(bootstrap(Arc::downgrade(self), expect));
        }
    }

    /// This node's member, if it runs one.
    pub(crate) fn member(&self) -> Option<&Arc<LocalMember>> {
        self.member.get()
    }

    /// This node's member, started (empty, waiting to be initialized or
    /// replicated to) if it was not running.
    pub(crate) async fn ensure_member(&self) -> Result<Arc<LocalMember>, Error> {
        let member = self
            .member
            .get_or_try_init(|| async {
                let member = LocalMember::start(
                    self.id,
                    self.me.as_str(),
                    &self.config.storage,
                    Arc::clone(&self.network),
                    self.config.timing,
                )
                .await?;
                tracing::info!(node = %self.me, id = member.id, "consensus member started");
                if let Some(this) = self.this.upgrade() {
                    tokio::spawn(advertise_changes(Arc::downgrade(&this), Arc::downgrade(&member)));
                }
                Ok::<_, Error>(member)
            })
            .await?;
        Ok(Arc::clone(member))
    }

    /// The member, for a request that only a group can answer: a lone node
    /// starts its group of one now.
    async fn member_for_request(&self) -> Result<Arc<LocalMember>, Refusal> {
        if let Some(member) = self.member.get() {
            return Ok(Arc::clone(member));
        }
        if self.config.role != Role::Lone {
            return Err(Refusal::NoGroup);
        }
        let member = self.ensure_member().await.map_err(|e| Refusal::Failed(e.to_string()))?;
        if !member.is_initialized().await {
            let alone = BTreeMap::from([(self.id, self.me.to_string())]);
            member
                .initialize(&alone)
                .await
                .map_err(|e| Refusal::Failed(e.to_string()))?;
            tracing::info!(node = %self.me, "this node is its own consensus group (a lone node)");
        }
        Ok(member)
    }

    /// Publishes this node's part in the group.
    fn advertise(&self, status: Option<&GroupStatus>) {
        let Some(cluster) = self.cluster.upgrade() else { return };
        let expect = match self.config.role {
            Role::Voter { expect } => expect,
            Role::Lone => 1,
            Role::Client => 0,
        };
        cluster.publish(RaftAdvert {
            id: self.id,
            expect,
            member: status.is_some(),
            group: status.and_then(|s| s.group),
            leader: status.and_then(|s| s.leader.clone()),
            term: status.map_or(0, |s| s.term),
        });
    }

    /// The nodes to ask, most likely leader first.
    fn candidates(&self) -> Result<Vec<NodeId>, String> {
        let adverts = self.cluster.upgrade().map(|c| c.adverts()).unwrap_or_default();
        let groups: BTreeSet<u64> = adverts.iter().filter_map(|(_, a)| a.group).collect();
        let mine = self.member.get().and_then(|m| m.machine.state().table.group);
        let all: BTreeSet<u64> = groups.iter().copied().chain(mine).collect();
        if all.len() > 1 {
            return Err(format!(
                "this cluster holds {} consensus groups, started apart ({all:?}): remove the extra voters",
                all.len()
            ));
        }
        let mut order: Vec<NodeId> = Vec::new();
        let mut add = |node: NodeId| {
            if !order.contains(&node) {
                order.push(node);
            }
        };
        if let Some(leader) = lock(&self.leader).clone() {
            add(leader);
        }
        let mut led: Vec<(u64, NodeId)> = adverts
            .iter()
            .filter_map(|(_, a)| Some((a.term, NodeId::from(a.leader.as_deref()?))))
            .collect();
        led.sort_by_key(|(term, _)| std::cmp::Reverse(*term));
        for (_, leader) in led {
            add(leader);
        }
        if self.member.get().is_some() || self.config.role == Role::Lone {
            add(self.me.clone());
        }
        for (node, advert) in &adverts {
            if advert.member || advert.expect > 0 {
                add(node.clone());
            }
        }
        Ok(order)
    }

    /// Commits `command` through the leader, trying until `deadline`.
    pub(crate) async fn write(&self, command: Command, deadline: Instant, op: &'static str) -> Result<Response, Error> {
        let span = tracing::debug_span!("malla.coord", op, node = %self.me);
        let outcome = self
            .ask(deadline, op, |target| {
                let command = command.clone();
                async move {
                    match target {
                        Target::Me => self.serve_write(command).await,
                        Target::Node(node, ttl) => self.rpc(&node, Method::Write, &command, ttl).await,
                    }
                }
            })
            .instrument(span)
            .await;
        metrics::coord_request(self.me.as_str(), op, if outcome.is_ok() { "ok" } else { "failed" });
        outcome
    }

    /// A linearizable read through the leader.
    pub(crate) async fn read(&self, query: Query, deadline: Instant, op: &'static str) -> Result<Answer, Error> {
        let span = tracing::debug_span!("malla.coord", op, node = %self.me);
        self.ask(deadline, op, |target| {
            let query = query.clone();
            async move {
                match target {
                    Target::Me => self.serve_read(query).await,
                    Target::Node(node, ttl) => self.rpc(&node, Method::Read, &query, ttl).await,
                }
            }
        })
        .instrument(span)
        .await
    }

    /// A membership change through the leader.
    pub(crate) async fn admin(&self, change: Admin, deadline: Instant) -> Result<GroupStatus, Error> {
        self.ask(deadline, "admin", |target| {
            let change = change.clone();
            async move {
                match target {
                    Target::Me => self.serve_admin(change).await,
                    Target::Node(node, ttl) => self.rpc(&node, Method::Admin, &change, ttl).await,
                }
            }
        })
        .await
    }

    /// Asks the leader (`request` at each candidate in turn) until one
    /// answers or `deadline` passes.
    async fn ask<T, F, Fut>(&self, deadline: Instant, op: &'static str, request: F) -> Result<T, Error>
    where
        F: Fn(Target) -> Fut,
        Fut: Future<Output = Result<T, Refusal>>,
    {
        let started = Instant::now();
        let mut reason = "no voter is known".to_owned();
        let mut pause = Duration::from_millis(20);
        loop {
            let candidates = match self.candidates() {
                Ok(candidates) => candidates,
                Err(why) => {
                    return Err(Error::NoQuorum {
                        operation: op.to_owned(),
                        waited: started.elapsed(),
                        reason: why,
                    });
                }
            };
            let mut redirected = false;
            for node in candidates {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let target = if node == self.me {
                    Target::Me
                } else {
                    Target::Node(node.clone(), (deadline - now).min(Duration::from_secs(3)))
                };
                // Bounded here too when this node serves it: a leader cut
                // off from its quorum would otherwise wait on a commit that
                // never comes, and a renewal so stuck would tell its lock's
                // holder late that the lock is lost.
                let answer = tokio::time::timeout_at(deadline, request(target))
                    .await
                    .unwrap_or_else(|_| Err(Refusal::Failed("no answer before the deadline".into())));
                match answer {
                    Ok(answer) => {
                        *lock(&self.leader) = Some(node);
                        return Ok(answer);
                    }
                    Err(Refusal::NotLeader { leader: Some(leader) }) if leader != node.as_str() => {
                        *lock(&self.leader) = Some(NodeId::from(leader.as_str()));
                        reason = format!("`{node}` is not the leader; `{leader}` is");
                        redirected = true;
                        break;
                    }
                    Err(Refusal::Invalid(why)) => return Err(Error::InvalidName { reason: why }),
                    Err(refusal) => {
                        if lock(&self.leader).as_ref() == Some(&node) {
                            *lock(&self.leader) = None;
                        }
                        reason = match refusal {
                            Refusal::NotLeader { .. } => "no leader is elected yet".into(),
                            Refusal::NoGroup => format!("`{node}` is not a member of a group"),
                            Refusal::Failed(why) => format!("`{node}`: {why}"),
                            Refusal::Invalid(_) => unreachable!("returned above"),
                        };
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NoQuorum {
                    operation: op.to_owned(),
                    waited: started.elapsed(),
                    reason,
                });
            }
            if !redirected {
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }

    async fn rpc<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        node: &NodeId,
        method: Method,
        request: &Q,
        ttl: Duration,
    ) -> Result<A, Refusal> {
        let reply: Result<A, Refusal> = transport::call(&self.network, node, method, request, ttl)
            .await
            .map_err(|failed| match failed {
                Failed::Unreachable(why) | Failed::Network(why) => Refusal::Failed(why.to_string()),
            })?;
        reply
    }

    /// Before this node's first request: whatever its earlier lives held is
    /// freed (they are gone; a name is never two nodes' at once).
    pub(crate) async fn release_earlier_lives(&self, deadline: Instant) -> Result<(), Error> {
        self.released_earlier
            .get_or_try_init(|| async {
                let command = Command::ReleaseNode {
                    node: self.me.to_string(),
                    incarnation: self.incarnation,
                    including: false,
                };
                self.write(command, deadline, "release").await.map(|_| ())
            })
            .await
            .map(|_| ())
    }

    /// Frees everything this node holds, as it leaves.
    pub(crate) async fn leave(&self) {
        if self.keeper.held().is_empty() {
            return;
        }
        self.keeper.clear();
        let command = Command::ReleaseNode {
            node: self.me.to_string(),
            incarnation: self.incarnation,
            including: true,
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        if let Err(err) = self.write(command, deadline, "release").await {
            tracing::warn!(node = %self.me, "could not release this node's locks and names as it left: {err}");
        }
    }

    /// Stops this node's member.
    pub(crate) async fn shutdown(&self) {
        if let Some(member) = self.member.get() {
            member.shutdown().await;
        }
    }

    /// A `write` request from a peer, or from this node.
    pub(crate) async fn serve_write(&self, command: Command) -> WriteReply {
        self.member_for_request().await?.write(command).await
    }

    /// A `read` request from a peer, or from this node.
    pub(crate) async fn serve_read(&self, query: Query) -> ReadReply {
        self.member_for_request().await?.read(query).await
    }

    /// An `admin` request from a peer, or from this node.
    pub(crate) async fn serve_admin(&self, change: Admin) -> AdminReply {
        let member = self.member_for_request().await?;
        if !member.is_leader() {
            return Err(Refusal::NotLeader {
                leader: member.status().leader,
            });
        }
        let target = match &change {
            Admin::AddVoter(name) if name == self.me.as_str() => Some(self.id),
            Admin::AddVoter(name) => self
                .cluster
                .upgrade()
                .and_then(|c| c.adverts().into_iter().find(|(n, _)| n.as_str() == name))
                .map(|(_, advert)| advert.id),
            Admin::RemoveVoter(_) => None,
        };
        member.admin(change, target).await
    }

    /// The member to hand one of openraft's RPCs to: started, empty, if the
    /// leader is adding this node.
    pub(crate) async fn member_for_rpc(&self) -> Result<Arc<LocalMember>, Error> {
        self.ensure_member().await
    }
}

/// Where one request of `ask` goes.
enum Target {
    Me,
    Node(NodeId, Duration),
}

/// Starts a marked voter's group once exactly `expect` empty voters are
/// visible, the same set two rounds in a row.
async fn bootstrap(coordinator: Weak<Coordinator>, expect: usize) {
    let Some(member) = coordinator.upgrade() else { return };
    let member = match member.ensure_member().await {
        Ok(member) => member,
        Err(err) => {
            tracing::error!(node = %member.me, "the consensus member did not start: {err}");
            return;
        }
    };
    let mut previous: Option<BTreeMap<u64, String>> = None;
    let mut said = false;
    loop {
        if member.is_initialized().await {
            return;
        }
        let Some(coord) = coordinator.upgrade() else { return };
        let adverts = coord.cluster.upgrade().map(|c| c.adverts()).unwrap_or_default();
        let formed = adverts.iter().any(|(_, a)| a.group.is_some());
        let mut voters: BTreeMap<u64, String> = adverts
            .iter()
            .filter(|(_, a)| a.expect == expect && !a.member_with_group())
            .map(|(node, a)| (a.id, node.to_string()))
            .collect();
        voters.insert(coord.id, coord.me.to_string());
        if formed {
            if !std::mem::replace(&mut said, true) {
                tracing::info!(node = %coord.me, "a consensus group exists: waiting to be added to it");
            }
        } else if voters.len() == expect {
            if previous.as_ref() == Some(&voters) {
                let names: Vec<&String> = voters.values().collect();
                tracing::info!(node = %coord.me, voters = ?names, "starting the consensus group");
                if let Err(err) = member.initialize(&voters).await {
                    tracing::error!(node = %coord.me, "{err}");
                }
                return;
            }
            previous = Some(voters);
        } else {
            if voters.len() > expect && !std::mem::replace(&mut said, true) {
                tracing::error!(
                    node = %coord.me,
                    seen = voters.len(),
                    expect,
                    "more voters are marked than expected: the group does not start; mark exactly {expect}"
                );
            }
            previous = None;
        }
        drop(coord);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl RaftAdvert {
    /// Whether it is a member of a group that has formed.
    fn member_with_group(&self) -> bool {
        self.member && self.group.is_some()
    }
}

/// Publishes the member's view of the group whenever it changes, and names
/// the group once its first leader leads.
async fn advertise_changes(coordinator: Weak<Coordinator>, member: Weak<LocalMember>) {
    let Some(mut metrics) = member.upgrade().map(|m| m.raft.metrics()) else {
        return;
    };
    let mut last: Option<GroupStatus> = None;
    loop {
        let (Some(coord), Some(member)) = (coordinator.upgrade(), member.upgrade()) else {
            return;
        };
        if member.is_leader() && member.machine.state().table.group.is_none() {
            let group = rand::random::<u64>();
            let _ = member.write(Command::Found { group }).await;
        }
        let status = member.status();
        if last.as_ref() != Some(&status) {
            coord.advertise(Some(&status));
            last = Some(status);
        }
        drop((coord, member));
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Renews what `coordinator`'s node holds, for as long as the node runs.
pub(crate) async fn renew(coordinator: Weak<Coordinator>) {
    loop {
        let Some(coord) = coordinator.upgrade() else { return };
        let keeper = Arc::clone(&coord.keeper);
        let next = keeper.lapse(Instant::now(), coord.me().as_str());
        let now = Instant::now();
        match next {
            Some(at) if at <= now => {
                let leases = keeper.held();
                let earliest = leases
                    .iter()
                    .filter_map(|(key, _)| keeper.valid_until(key))
                    .min()
                    .unwrap_or(now + Duration::from_secs(1));
                let sent = Instant::now();
                let command = Command::Renew {
                    node: coord.me().to_string(),
                    incarnation: coord.incarnation(),
                    leases: leases.clone(),
                };
                // Up to the first lapse: past it, renewing is too late.
                let deadline = earliest.max(sent + Duration::from_millis(50));
                match coord.write(command, deadline, "renew").await {
                    Ok(Response::Renewed { lost }) => keeper.renewed(sent, &leases, &lost, coord.me().as_str()),
                    Ok(other) => tracing::warn!(node = %coord.me(), "unexpected answer to a renewal: {other:?}"),
                    Err(err) => {
                        tracing::debug!(node = %coord.me(), "renewal failed: {err}");
                        drop(coord);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            Some(at) => {
                let wake = Arc::clone(&keeper);
                drop(coord);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.wake.notified() => {}
                }
            }
            None => {
                let wake = Arc::clone(&keeper);
                drop(coord);
                wake.wake.notified().await;
            }
        }
    }
}
