//! One node, in process: define a service, serve it, call it through the
//! generated client, and watch a stub answer for a service that is declared
//! but served nowhere.
//!
//! ```text
//! cargo run --example calculator
//! ```

use malla::{CallOptions, Error, Node};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
}

/// A calculator, published cluster-wide.
#[malla::service(global, vsn = "1.0.0")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String>;
    #[malla(idempotent)]
    async fn stats(&self, values: Vec<f64>) -> Option<Stats>;
}

/// Declared here (a dependency would do the same), served by nobody.
#[malla::service(global, vsn = "0.3.0")]
pub trait Billing {
    async fn invoice(&self, customer: String, cents: u64) -> u64;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn divide(&self, a: i64, b: i64) -> Result<i64, String> {
        a.checked_div(b).ok_or_else(|| format!("cannot divide {a} by {b}"))
    }

    async fn stats(&self, values: Vec<f64>) -> Option<Stats> {
        (!values.is_empty()).then(|| Stats {
            count: values.len(),
            mean: values.iter().sum::<f64>() / values.len() as f64,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    println!("services compiled into this binary:");
    for manifest in malla::declared_services() {
        println!(
            "  {} vsn={:?} global={}",
            manifest.name(),
            manifest.vsn(),
            manifest.is_global()
        );
        for method in manifest.methods() {
            let args: Vec<String> = method
                .args()
                .iter()
                .map(|a| format!("{}: {}", a.name(), a.ty()))
                .collect();
            println!(
                "    {}({}) -> {}  signature={:016x}",
                method.name(),
                args.join(", "),
                method.ret(),
                method.signature()
            );
        }
    }

    let node = Node::builder("demo").start().await?;
    let calc = CalculatorClient::new(&node);

    // Before serving: the client is a stub.
    match calc.add(1, 2).await {
        Err(Error::ServiceNotAvailable { service, .. }) => println!("before serving: `{service}` is not available"),
        other => println!("unexpected: {other:?}"),
    }

    node.serve(CalculatorServer::new(Calc)).await?;
    println!("add(40, 2) = {}", calc.add(40, 2).await?);
    println!("divide(7, 0) = {:?}", calc.divide(7, 0).await?);
    println!("stats([1, 2, 6]) = {:?}", calc.stats(vec![1.0, 2.0, 6.0]).await?);

    // Declared, never served: the stub answers at once, even with a timeout set.
    let billing = BillingClient::new(&node).with_options(CallOptions::default().timeout(Duration::from_secs(1)));
    match billing.invoice("acme".into(), 1999).await {
        Err(err) => println!("billing: {err}"),
        Ok(id) => println!("billing: invoice {id}"),
    }
    Ok(())
}
