#[malla::service(singleton)]
pub trait Scheduler {
    async fn tick(&self) -> u64;
}

fn main() {}
