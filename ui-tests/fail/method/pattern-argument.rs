#[malla::service]
pub trait Geometry {
    async fn norm(&self, (x, y): (i64, i64)) -> i64;
}

fn main() {}
