#[malla::service]
pub trait Registry {
    async fn named(&self, name: String) -> u64;
}

fn main() {}
