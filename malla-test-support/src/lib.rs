//! What malla's integration tests, the soak and the bench harnesses share,
//! in one place: real nodes on loopback, each on a runtime of its own
//! (`nodes`), waiting for a condition (`wait`), cutting a node off with
//! nftables (`partition`), child processes of the running binary
//! (`process`), captured logs (`logs`), a DNS server (`dns`) and a
//! linearizability checker for histories of locks and names
//! (`linearizability`).
//!
//! Dev-only: nothing here is part of malla's API.

pub mod dns;
pub mod linearizability;
pub mod logs;
pub mod nodes;
pub mod partition;
pub mod process;
pub mod wait;
