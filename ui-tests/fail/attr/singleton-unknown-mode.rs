#[malla::service(global, singleton = "exclusive")]
pub trait Scheduler {
    async fn tick(&self) -> u64;
}

fn main() {}
