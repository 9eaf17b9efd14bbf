//! `malla.Introspect`, the service every node serves so that other nodes
//! and `malla stats` can read its figures ([`NodeStats`]) and `malla
//! singletons` the state of the singletons it serves. It is published
//! nowhere: a caller names the node (`Node::stats_of`). Like any global
//! service it takes calls only from nodes holding the cookie, hidden ones
//! included; it reads counters and changes nothing.

use std::sync::{LazyLock, Weak};

use super::stats::NodeStats;
use crate::service::{ArgsDecoder, DispatchError, DispatchErrorKind, DispatchFuture, Format, encode_reply};
use crate::{MethodManifest, Service, ServiceManifest, SingletonStatus};

/// The service's wire name.
pub(super) const SERVICE: &str = "malla.Introspect";
/// Its methods: `stats() -> NodeStats`, `singletons() -> Vec<SingletonStatus>`
/// (added later: a node from before answers "unknown method").
pub(super) const STATS: &str = "stats";
pub(super) const SINGLETONS: &str = "singletons";

static METHODS: LazyLock<[MethodManifest; 2]> = LazyLock::new(|| {
    // Callers do not check the signatures (a call by name sends 0).
    let method =
        |name, returns| MethodManifest::__new(name, crate::manifest::method_id(name), &[], returns, 1, true, None);
    [method(STATS, "NodeStats"), method(SINGLETONS, "Vec<SingletonStatus>")]
});

static MANIFEST: LazyLock<ServiceManifest> =
    LazyLock::new(|| ServiceManifest::__new(SERVICE, env!("CARGO_PKG_VERSION"), true, &*METHODS));

/// Where the figures come from: the node.
pub(super) trait Figures: Send + Sync + 'static {
    fn stats(&self) -> NodeStats;
    fn singletons(&self) -> Vec<SingletonStatus>;
}

/// The service, reading the node it belongs to (weakly: the node's registry
/// holds the service).
pub(super) struct Introspect {
    pub(super) node: Weak<dyn Figures>,
}

impl Service for Introspect {
    fn manifest(&self) -> &'static ServiceManifest {
        &MANIFEST
    }

    fn dispatch(&self, method: usize, format: Format, args: &[u8]) -> Result<DispatchFuture, DispatchError> {
        ArgsDecoder::new(format, args)?.finish()?;
        let Some(node) = self.node.upgrade() else {
            return Err(DispatchError(DispatchErrorKind::BadReply(
                "the node has stopped".into(),
            )));
        };
        let reply = match method {
            0 => encode_reply(format, &node.stats()),
            1 => encode_reply(format, &node.singletons()),
            other => return Err(DispatchError::unknown_method(other)),
        };
        Ok(Box::pin(async move { reply }))
    }
}
