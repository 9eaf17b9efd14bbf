//! Helpers the unit tests of several modules share; what the integration
//! tests share too (waiting, partitions, processes) is in `malla-test-support`.

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
