#[malla::service]
pub trait Peer {
    async fn clone_me(&self) -> Box<Self>;
}

fn main() {}
