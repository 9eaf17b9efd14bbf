//! The network: authenticated connections to other nodes, dialed or
//! accepted, one per peer (duplicates resolved), kept up in the background,
//! and retired on shutdown. It owns its settings, runs requests through the
//! [`Services`](crate::connection::Services) it is given, and posts what
//! happens to links as [`LinkEvent`](crate::connection::LinkEvent)s.

mod admission;
mod dial;
mod network;
mod peer;

pub(crate) use network::{NetConfig, Network, accept_loop};
