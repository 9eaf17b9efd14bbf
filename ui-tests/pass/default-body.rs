#[malla::service]
pub trait Greeter {
    async fn name(&self) -> String;
    async fn greet(&self, greeting: String) -> String {
        format!("{greeting}, {}", self.name().await)
    }
}

struct English;

impl Greeter for English {
    async fn name(&self) -> String {
        "world".into()
    }
}

fn main() {
    let _server = GreeterServer::new(English);
}
