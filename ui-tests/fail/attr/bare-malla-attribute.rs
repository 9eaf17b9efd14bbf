#[malla::service]
pub trait Calculator {
    #[malla]
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
