//! The cluster-wide service API of a node, Malla.Node's: where a service
//! runs, what runs where, waiting for services, calling every instance.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Node;
use crate::discovery::gossip::GossipStats;
use crate::membership::{Instance, Member};
use crate::{CallOptions, Error, NodeId, ServiceManifest};

impl Node {
    /// The nodes with a running instance of `service`, in the order calls try
    /// them: this node first if it runs it, then the others in a random order
    /// drawn again on every change of the cluster.
    ///
    /// ```no_run
    /// # fn demo(node: &malla_runtime::Node) {
    /// match node.get_nodes("Calculator").first() {
    ///     None => println!("not available anywhere"),
    ///     Some(first) => println!("calls go to {first} first"),
    /// }
    /// # }
    /// ```
    pub fn get_nodes(&self, service: &str) -> Vec<NodeId> {
        let route = self.inner.registry.slot(service).route_full();
        let local = route
            .local
            .as_ref()
            .filter(|l| l.is_active())
            .map(|_| self.inner.id.clone());
        local.into_iter().chain(route.remote.iter().cloned()).collect()
    }

    /// Every instance of `service` on this node and on the nodes that are up,
    /// paused ones included (see [`Instance::status`]).
    pub fn get_instances(&self, service: &str) -> Vec<Instance> {
        let local = self.inner.registry.local(service).map(|local| Instance {
            node: self.inner.id.clone(),
            addr: self.inner.net.identity.listen,
            vsn: local.manifest.vsn().to_owned(),
            status: local.admin_status().into(),
            metadata: local.metadata.clone(),
        });
        local
            .into_iter()
            .chain(self.inner.membership.instances(service))
            .collect()
    }

    /// Every service with a running instance anywhere in the cluster, sorted.
    pub fn get_services(&self) -> Vec<String> {
        let mut services: BTreeSet<String> = self.inner.membership.running_services();
        for local in self.inner.registry.locals() {
            if local.is_active() {
                services.insert(local.name().to_owned());
            }
        }
        services.into_iter().collect()
    }

    /// Waits until every service in `services` has a running instance
    /// somewhere, or fails with [`Error::Timeout`] after `timeout`. Returns as
    /// soon as the last one appears.
    pub async fn wait_for_services(&self, services: &[&str], timeout: Duration) -> Result<(), Error> {
        let mut changes = self.inner.membership.subscribe();
        let all_up = |node: &Node| services.iter().all(|s| !node.get_nodes(s).is_empty());
        let wait = async {
            loop {
                if all_up(self) {
                    return;
                }
                if changes.changed().await.is_err() {
                    // The node is gone; nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| Error::Timeout {
            service: services.join(",").into(),
            method: "wait_for_services".into(),
            timeout,
        })
    }

    /// Calls `service.method` on every node that runs it (Malla's
    /// `call_cb_all`), concurrently; each result is the node's own, and one
    /// failing does not stop the others.
    pub async fn call_all<A, R>(
        &self,
        service: &str,
        method: &str,
        args: &A,
        options: CallOptions,
    ) -> Vec<(NodeId, Result<R, Error>)>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let calls = self.get_nodes(service).into_iter().map(|node| {
            let options = options.clone().nodes([node.clone()]);
            async move { (node, self.remote(service, method, args, options).await) }
        });
        join_all(calls).await
    }

    /// The manifest a node running `service` publishes, if any node does.
    pub async fn service_manifest(&self, service: &str) -> Option<ServiceManifest> {
        if let Some(local) = self.inner.registry.local(service) {
            return Some(local.manifest.clone());
        }
        let discovery = self.inner.discovery.get()?;
        for instance in self.inner.membership.instances(service) {
            if let Some(manifest) = discovery.manifest(&instance.node, service).await {
                return Some(manifest);
            }
        }
        None
    }

    /// Every other visible node this one knows, with its address, status and
    /// services, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.inner.membership.members()
    }

    /// Gossip traffic this node has seen, if it gossips.
    pub fn gossip_stats(&self) -> Option<GossipStats> {
        self.inner.discovery.get().map(|d| d.stats())
    }
}
