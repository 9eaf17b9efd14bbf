#[malla::service]
pub trait Store {
    const LIMIT: usize;
    async fn len(&self) -> u64;
}

fn main() {}
