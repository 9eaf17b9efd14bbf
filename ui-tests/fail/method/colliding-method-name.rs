#[malla::service]
pub trait Factory {
    async fn new(&self, name: String) -> u64;
    async fn on_node(&self) -> String;
}

fn main() {}
