//! Helpers the unit tests of several modules share.

use std::time::Duration;

use tokio::time::Instant;

use crate::NodeId;
use crate::handshake::Identity;

/// A node's identity as tests need it: no listen address, 1 MiB frames.
pub(crate) fn identity(name: &str, seal: bool) -> Identity {
    Identity {
        name: NodeId::from(name),
        incarnation: 1,
        hidden: false,
        listen: None,
        max_frame: 1 << 20,
        seal,
    }
}

/// Whether `condition` holds within `limit`, looking every 5 ms.
pub(crate) async fn eventually(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}
