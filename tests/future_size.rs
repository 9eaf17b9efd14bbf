//! Holds the size of a typed call's future. Every call's future is as large
//! as the largest state of the call path it may reach; the rare, large ones
//! (dialing, waiting for room, retry sleeps, spans) are boxed so that the
//! common call stays small. A change that inlines one of them again makes
//! every call carry it, and shows here.

#[malla::service(global)]
pub trait Sized {
    async fn add(&self, a: i64, b: i64) -> i64;
}

/// Measured at 984 bytes in the test profile (rustc 1.95, x86_64). It was
/// 1,768 while the remote attempt's state (its connection's send and reply),
/// a local call's timer, the dispatcher's path for stubs and a second copy
/// of the call's arguments sat inline in every call's future; they are
/// boxed (out of line, so that the common path's stack frame does not hold
/// them either) or gone since. A little slack for compiler versions.
const MEASURED: usize = 984;
const LIMIT: usize = MEASURED + MEASURED / 10;

#[test]
fn a_typed_call_future_stays_under_its_measured_size() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let node = rt.block_on(malla::Node::builder("sized").start()).unwrap();
    let client = SizedClient::new(&node);
    let call = client.add(1, 2);
    let size = std::mem::size_of_val(&call);
    println!("a typed call's future: {size} bytes (limit {LIMIT})");
    assert!(
        size <= LIMIT,
        "a typed call's future grew to {size} bytes (limit {LIMIT}): box the new rare path"
    );
}
