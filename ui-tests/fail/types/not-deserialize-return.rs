#[derive(serde::Serialize)]
pub struct Report {
    pub lines: Vec<String>,
}

#[malla::service]
pub trait Reporter {
    async fn report(&self) -> Report;
}

fn main() {}
