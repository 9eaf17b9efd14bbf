#[malla::service]
pub trait Audit {
    async fn with_interceptor(&self, name: String);
}

fn main() {}
