//! The service every benchmark serves, so each compares the same work, and
//! the contenders it is compared with over the network.

mod contenders;
mod raw_mux;

pub use contenders::{
    CALLERS, Contender, Contenders, Layout, TarpcBenchClient, malla_client, malla_server, tarpc_client, tarpc_server,
};

/// Adds two numbers: the smallest call that still carries arguments and a reply.
#[malla::service(global)]
pub trait Bench {
    async fn add(&self, a: i64, b: i64) -> i64;
}

/// Declared and never served: what a stub costs.
#[malla::service(global)]
pub trait Nowhere {
    async fn add(&self, a: i64, b: i64) -> i64;
}

/// The implementation served in every benchmark.
pub struct Adder;

impl Bench for Adder {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}
