#[malla::service]
pub trait Store<K> {
    async fn len(&self) -> u64;
}

fn main() {}
