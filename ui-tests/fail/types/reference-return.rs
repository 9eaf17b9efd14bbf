#[malla::service]
pub trait Store {
    async fn get(&self, key: String) -> &'static str;
}

fn main() {}
