//! The node's coordination API: locks, global names and the consensus
//! group's membership (Erlang's `:global`, on a quorum).

use std::future::Future;

use super::api::Node;
use crate::coord::{Admin, FencingToken, GroupStatus, HeldLock, LockGuard, LockRequest, RegisteredName};
use crate::{Error, NodeId};

impl Node {
    /// Takes the lock `name`, cluster-wide: no other holder has it while
    /// this one does, even across a partition (nothing is granted without a
    /// quorum of the consensus group). Waits up to 15 s if it is held
    /// (`.timeout(..)`); the lease is 10 s (`.ttl(..)`), renewed by the
    /// guard until it is dropped or released.
    ///
    /// Fails with [`Error::LockBusy`] if another holder keeps it past the
    /// timeout (this request never held it), [`Error::NoQuorum`] if the
    /// group cannot be reached or the request's grant ran out before its
    /// answer could be used (it may have held the lock for a while),
    /// [`Error::InvalidName`] for an empty name, one over 256 bytes or a
    /// lease out of bounds.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(node: malla_runtime::Node) -> Result<(), malla_runtime::Error> {
    /// let guard = node.lock("billing-run").ttl(Duration::from_secs(30)).await?;
    /// // Pass guard.token() to whatever the lock protects.
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, name: impl Into<String>) -> LockRequest {
        LockRequest::new(self.parts.coord.clone(), name.into())
    }

    /// Takes the lock `name` if it is free now; `None` if someone holds it.
    pub async fn try_lock(&self, name: impl Into<String>) -> Result<Option<LockGuard>, Error> {
        match self.lock(name).timeout(std::time::Duration::ZERO).await {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::LockBusy { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Gives back the lock `name` held by this node with `token` (a guard
    /// does it on release or drop; this is for a token kept elsewhere).
    ///
    /// Fails with [`Error::NotHeld`] if this node does not hold it with that
    /// token: never held, already released, lost, or a token of another
    /// grant or another lock.
    pub async fn unlock(&self, name: &str, token: FencingToken) -> Result<(), Error> {
        self.parts.coord.unlock(name, token).await
    }

    /// Runs `work` holding the lock `name` (Erlang's `:global.trans`), and
    /// gives the lock back after. If the lock is lost while `work` runs (its
    /// lease could not be renewed), `work` is dropped and the call fails
    /// with [`Error::LockLost`].
    pub async fn trans<F: Future>(&self, name: impl Into<String>, work: F) -> Result<F::Output, Error> {
        let mut guard = self.lock(name).await?;
        let output = tokio::select! {
            output = work => output,
            () = guard.lost() => return Err(Error::LockLost { name: guard.name().to_owned() }),
        };
        if let Err(err) = guard.release().await {
            tracing::debug!(node = %self.id(), "a transaction's lock was not released (its lease will run out): {err}");
        }
        Ok(output)
    }

    /// Registers `name`, cluster-wide, for this node's instance of
    /// `service` (Erlang's `:global.register_name`); returns the grant's
    /// fencing token. The name is this node's until it unregisters it,
    /// leaves (drain or shutdown), restarts, or cannot renew it for 10 s.
    ///
    /// Fails with [`Error::NameTaken`] if another node holds it,
    /// [`Error::NotServed`] if `service` is not served here,
    /// [`Error::NoQuorum`] if the group cannot be reached.
    pub async fn register_name(&self, name: &str, service: &str) -> Result<FencingToken, Error> {
        if self.parts.registry.local(service).is_none() {
            return Err(Error::NotServed(service.to_owned()));
        }
        self.parts.coord.register(name, service).await
    }

    /// Gives back the global name `name`, registered by this node.
    pub async fn unregister_name(&self, name: &str) -> Result<(), Error> {
        self.parts.coord.unregister(name).await
    }

    /// Where the global name `name` is registered: the node and the
    /// grant's token, or `None`. Read through the leader, linearizable: no
    /// registration or release that completed before this call is missed.
    pub async fn whereis_name(&self, name: &str) -> Result<Option<(NodeId, FencingToken)>, Error> {
        self.parts.coord.whereis(name).await
    }

    /// Where the global name `name` is registered, as this node's replica
    /// of the group says: no round trip, but possibly behind (`None` on a
    /// node that is not a member of the group).
    pub fn whereis_name_local(&self, name: &str) -> Option<(NodeId, FencingToken)> {
        self.parts.coord.whereis_local(name)
    }

    /// Every lock the group holds (`malla locks`).
    pub async fn locks(&self) -> Result<Vec<HeldLock>, Error> {
        self.parts.coord.locks().await
    }

    /// Every global name (`malla names`).
    pub async fn names(&self) -> Result<Vec<RegisteredName>, Error> {
        self.parts.coord.names().await
    }

    /// The consensus group as its leader sees it: leader, term, voters.
    pub async fn group_status(&self) -> Result<GroupStatus, Error> {
        self.parts.coord.status().await
    }

    /// Adds `node` to the consensus group as a voter: it catches up as a
    /// learner first, then the group moves to the new membership through
    /// joint consensus (openraft's). Safe while calls run.
    pub async fn add_voter(&self, node: &NodeId) -> Result<GroupStatus, Error> {
        self.parts.coord.change(Admin::AddVoter(node.to_string())).await
    }

    /// Removes `node` from the consensus group's voters (for one that died
    /// for good, or to shrink the group), through joint consensus.
    pub async fn remove_voter(&self, node: &NodeId) -> Result<GroupStatus, Error> {
        self.parts.coord.change(Admin::RemoveVoter(node.to_string())).await
    }
}
