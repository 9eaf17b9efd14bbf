//! Global names (Erlang's `:global.register_name`): a name the group gives
//! one node's instance of a service at a time, held under a lease the node
//! renews for as long as it runs, freed when it unregisters, leaves,
//! restarts, or stops renewing (it died, or was cut off).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::coordinator::Coordinator;
use super::locks::{FencingToken, REQUEST_TIMEOUT, check_lease, lapsed, unexpected};
use super::table::{Command, Key, Response, check_name};
use super::wire::{Answer, Query};
use crate::client::NameResolver;
use crate::sync::lock;
use crate::{Error, NodeId};

/// How long a name's lease runs unless renewed: how soon a dead holder's
/// name is free again.
pub const NAME_TTL: Duration = Duration::from_secs(10);

/// A global name as the group holds it, for tools (`malla names`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredName {
    /// The name.
    pub name: String,
    /// The node holding it.
    pub node: NodeId,
    /// The service it names there.
    pub service: String,
    /// Its grant's fencing token.
    pub token: FencingToken,
}

/// What a client bound to a global name asks: where the name is, found
/// once and again when the client says it moved.
pub(crate) struct NameBinding {
    coordinator: Weak<Coordinator>,
    name: String,
    found: Mutex<Option<NodeId>>,
}

impl NameBinding {
    pub(crate) fn new(coordinator: &Arc<Coordinator>, name: &str) -> Self {
        NameBinding {
            coordinator: Arc::downgrade(coordinator),
            name: name.to_owned(),
            found: Mutex::new(None),
        }
    }
}

impl NameResolver for NameBinding {
    fn name(&self) -> &str {
        &self.name
    }

    fn holder(&self, fresh: bool) -> Pin<Box<dyn Future<Output = Result<Option<NodeId>, Error>> + Send + '_>> {
        Box::pin(async move {
            if !fresh && let Some(node) = lock(&self.found).clone() {
                return Ok(Some(node));
            }
            let coordinator = self.coordinator.upgrade().ok_or(Error::Shutdown)?;
            let holder = coordinator.whereis(&self.name).await?.map(|(node, _)| node);
            *lock(&self.found) = holder.clone();
            Ok(holder)
        })
    }
}

impl Coordinator {
    /// Registers `name` for this node's instance of `service`.
    pub(crate) async fn register(self: &Arc<Self>, name: &str, service: &str) -> Result<FencingToken, Error> {
        let key = Key::Name(name.to_owned());
        let ttl_ms = check_lease(name, NAME_TTL)?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        self.release_earlier_lives(deadline).await?;
        if let Some(token) = self.keeper.token(&key) {
            return Ok(FencingToken::new(token));
        }
        let holder = self.holder();
        let sent = Instant::now();
        let command = Command::Acquire {
            key: key.clone(),
            holder: holder.clone(),
            ttl_ms,
            service: Some(service.to_owned()),
        };
        match self.write(command, deadline, "register").await {
            Ok(Response::Granted { token }) => {
                self.keeper.hold(key, token, NAME_TTL, sent);
                tracing::info!(node = %self.me(), name, service, token, "registered a global name");
                Ok(FencingToken::new(token))
            }
            Ok(Response::Busy { node, .. }) => Err(Error::NameTaken {
                name: name.to_owned(),
                node: NodeId::from(node.as_str()),
            }),
            Ok(Response::Refused(reason)) => Err(Error::InvalidName { reason }),
            Ok(Response::Lapsed) => Err(lapsed(format!("register `{name}`"), sent.elapsed())),
            Ok(other) => Err(unexpected(&other)),
            Err(err) => {
                self.abandon(key, holder);
                Err(err)
            }
        }
    }

    /// Gives back the name `name`, registered here.
    pub(crate) async fn unregister(&self, name: &str) -> Result<(), Error> {
        check_name(name).map_err(|reason| Error::InvalidName { reason })?;
        let key = Key::Name(name.to_owned());
        let Some(token) = self.keeper.drop_lease(&key) else {
            return Err(Error::NotHeld {
                name: name.to_owned(),
                reason: "this node has not registered it (or lost it)".into(),
            });
        };
        let command = Command::Release {
            key,
            token,
            node: self.me().to_string(),
        };
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        match self.write(command, deadline, "unregister").await? {
            Response::Released => Ok(()),
            Response::NotHeld { held } => Err(self.not_held(name, FencingToken::new(token), held)),
            other => Err(unexpected(&other)),
        }
    }

    /// Where `name` is registered, read through the leader (linearizable).
    pub(crate) async fn whereis(&self, name: &str) -> Result<Option<(NodeId, FencingToken)>, Error> {
        check_name(name).map_err(|reason| Error::InvalidName { reason })?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let query = Query::Lease(Key::Name(name.to_owned()));
        match self.read(query, deadline, "whereis").await? {
            Answer::Lease(lease) => {
                Ok(lease.map(|l| (NodeId::from(l.holder.node.as_str()), FencingToken::new(l.token))))
            }
            other => Err(Error::Config(format!("unexpected answer from the group: {other:?}"))),
        }
    }

    /// Where `name` is registered as this node's replica says, if the node
    /// is a member: possibly behind the group, never ahead of it.
    pub(crate) fn whereis_local(&self, name: &str) -> Option<(NodeId, FencingToken)> {
        let member = self.member()?;
        let state = member.machine.state();
        let lease = state.table.get(&Key::Name(name.to_owned()))?;
        Some((NodeId::from(lease.holder.node.as_str()), FencingToken::new(lease.token)))
    }

    /// Every global name, read through the leader.
    pub(crate) async fn names(&self) -> Result<Vec<RegisteredName>, Error> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        match self.read(Query::All { locks: false }, deadline, "names").await? {
            Answer::All(all) => Ok(all
                .into_iter()
                .map(|(key, lease)| RegisteredName {
                    name: key.name().to_owned(),
                    node: NodeId::from(lease.holder.node.as_str()),
                    service: lease.service.unwrap_or_default(),
                    token: FencingToken::new(lease.token),
                })
                .collect()),
            other => Err(Error::Config(format!("unexpected answer from the group: {other:?}"))),
        }
    }
}
