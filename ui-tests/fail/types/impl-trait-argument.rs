#[malla::service]
pub trait Store {
    async fn put(&self, value: impl serde::Serialize);
}

fn main() {}
