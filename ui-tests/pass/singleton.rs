//! Both singleton forms compile, and the server says which mode it asks for.

use malla::__private::SingletonMode;

#[malla::service(global, singleton)]
pub trait Scheduler {
    async fn tick(&self) -> u64;
}

#[malla::service(global, singleton = "strict", vsn = "1.0.0")]
pub trait Ledger {
    async fn append(&self, entry: String) -> u64;
}

struct S;

impl Scheduler for S {
    async fn tick(&self) -> u64 {
        1
    }
}

impl Ledger for S {
    async fn append(&self, _entry: String) -> u64 {
        1
    }
}

fn main() {
    use malla::Service;
    assert_eq!(SchedulerServer::new(S).singleton(), Some(SingletonMode::Gossip));
    assert_eq!(LedgerServer::new(S).singleton(), Some(SingletonMode::Strict));
}
