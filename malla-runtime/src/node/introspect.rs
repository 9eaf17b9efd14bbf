//! `malla.Introspect`, the service every node serves so that other nodes
//! and `malla stats` can read its figures ([`NodeStats`]). It is published
//! nowhere: a caller names the node (`Node::stats_of`). Like any global
//! service it takes calls only from nodes holding the cookie, hidden ones
//! included; it reads counters and changes nothing.

use std::sync::{LazyLock, Weak};

use super::stats::NodeStats;
use crate::service::{ArgsDecoder, DispatchError, DispatchErrorKind, DispatchFuture, Format, encode_reply};
use crate::{MethodManifest, Service, ServiceManifest};

/// The service's wire name.
pub(super) const SERVICE: &str = "malla.Introspect";
/// Its one method: `stats() -> NodeStats`.
pub(super) const STATS: &str = "stats";

static METHODS: LazyLock<[MethodManifest; 1]> = LazyLock::new(|| {
    [MethodManifest::__new(
        STATS,
        crate::manifest::method_id(STATS),
        &[],
        "NodeStats",
        // Callers do not check it (a call by name sends 0).
        1,
        true,
        None,
    )]
});

static MANIFEST: LazyLock<ServiceManifest> =
    LazyLock::new(|| ServiceManifest::__new(SERVICE, env!("CARGO_PKG_VERSION"), true, &*METHODS));

/// Where the figures come from: the node.
pub(super) trait Figures: Send + Sync + 'static {
    fn stats(&self) -> NodeStats;
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
        if method != 0 {
            return Err(DispatchError::unknown_method(method));
        }
        ArgsDecoder::new(format, args)?.finish()?;
        let stats: Option<NodeStats> = self.node.upgrade().map(|node| node.stats());
        Ok(Box::pin(async move {
            match stats {
                Some(stats) => encode_reply(format, &stats),
                None => Err(DispatchError(DispatchErrorKind::BadReply(
                    "the node has stopped".into(),
                ))),
            }
        }))
    }
}
