macro_rules! method {
    () => {
        async fn len(&self) -> u64;
    };
}

#[malla::service]
pub trait Store {
    method!();
}

fn main() {}
