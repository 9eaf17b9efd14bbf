#[malla::service]
pub trait Counter {
    async fn incr(&mut self) -> u64;
}

fn main() {}
