#[malla::service]
pub trait Calculator {
    #[malla(timeout_ms = 100)]
    #[malla(idempotent, timeout_ms = 200)]
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
