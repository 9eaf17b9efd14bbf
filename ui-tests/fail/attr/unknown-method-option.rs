#[malla::service]
pub trait Calculator {
    #[malla(idempotnt)]
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
