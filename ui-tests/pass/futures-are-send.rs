// Implementors write plain `async fn`; the trait's futures and the client's
// futures are `Send`, so both can be spawned.
#[malla::service(global)]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn assert_send<T: Send>(_: T) {}

#[allow(dead_code)]
fn futures(calc: &Calc, client: &CalculatorClient) {
    assert_send(calc.add(1, 2));
    assert_send(client.add(1, 2));
    assert_send(client.clone());
}

fn main() {}
