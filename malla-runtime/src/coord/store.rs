//! Where the group keeps what it agreed on: the log (`log`) and the state
//! machine with its snapshots (`machine`), in memory or in a data directory.

pub(crate) mod log;
pub(crate) mod machine;
