pub struct Secret(u64);

#[malla::service]
pub trait Vault {
    async fn store(&self, id: u32, secret: Secret) -> bool;
}

fn main() {}
