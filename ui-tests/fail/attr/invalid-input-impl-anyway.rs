// A mistake in the trait is reported once; code that uses the generated
// types does not turn into a cascade of "cannot find type" errors.
#[malla::service(global)]
pub trait Calculator {
    async fn add(&self, a: &str) -> i64;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, _a: &str) -> i64 {
        0
    }
}

#[allow(dead_code)]
fn uses(node: &malla::Node) {
    let _server = CalculatorServer::new(Calc);
    let _ = node;
    let _client: Option<CalculatorClient> = None;
}

fn main() {}
