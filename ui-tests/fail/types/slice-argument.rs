#[malla::service]
pub trait Store {
    async fn put(&self, key: String, value: &[u8]);
}

fn main() {}
