#[malla::service]
pub trait Calculator {
    #[malla(timeout_ms = 0)]
    async fn add(&self, a: i64, b: i64) -> i64;
    #[malla(timeout_ms = "fast")]
    async fn sub(&self, a: i64, b: i64) -> i64;
}

fn main() {}
