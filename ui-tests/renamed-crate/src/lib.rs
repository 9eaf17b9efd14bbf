//! `#[malla::service]` when the crate is renamed in `Cargo.toml`: the
//! `crate = "…"` option tells generated code where malla is. This crate has
//! no dependency called `malla`, so it only builds if generated code never
//! names `::malla` directly.

#[rpc::service(global, crate = "::rpc")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

/// An implementation, to serve.
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_work_under_the_new_name() {
        let node = rpc::Node::builder("n1").start().await.unwrap();
        node.serve(CalculatorServer::new(Calc)).await.unwrap();
        assert_eq!(CalculatorClient::new(&node).add(2, 3).await.unwrap(), 5);
    }
}
