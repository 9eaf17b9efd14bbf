use std::borrow::Cow;

#[malla::service]
pub trait Store {
    async fn get(&self, key: String) -> Option<Cow<'_, str>>;
}

fn main() {}
