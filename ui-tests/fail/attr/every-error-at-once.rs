// One compile reports every mistake, not just the first.
#[malla::service(globl, vsn = 3)]
pub trait Calculator {
    fn add(&self, a: i64, b: i64) -> i64;
    #[malla(idempotnt)]
    async fn get(&mut self, key: &str) -> Option<String>;
}

fn main() {}
