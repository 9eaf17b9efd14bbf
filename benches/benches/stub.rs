//! What a call costs when it never leaves the process: on a declared but
//! undiscovered service (the stub), and on a service served by this node.
//!
//! ```text
//! cargo bench -p malla-benches --bench stub
//! ```

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use malla_benches::{Adder, BenchClient, BenchServer, NowhereClient};

/// Polls a future that must be ready at once, the way a runtime would.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("not ready on first poll"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let node = rt.block_on(malla::Node::builder("bench").start()).unwrap();
    rt.block_on(node.serve(BenchServer::new(Adder))).unwrap();
    let _guard = rt.enter();

    let stub = NowhereClient::new(&node);
    c.bench_function("stub call (service not available)", |b| {
        b.iter(|| ready(stub.add(black_box(1), black_box(2))).unwrap_err())
    });

    let local = BenchClient::new(&node);
    c.bench_function("local call (served on this node)", |b| {
        b.iter(|| ready(local.add(black_box(1), black_box(2))).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
