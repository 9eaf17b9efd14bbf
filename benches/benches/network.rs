//! A small call over loopback TCP: raw TCP (the floor), tarpc and malla side
//! by side in one run (see `malla_benches::contenders`).
//!
//! Round trip: one caller, sequential calls. Throughput: 64 concurrent
//! callers on one connection. `MALLA_BENCH_RUNTIME=split` gives each side its
//! own single-worker runtime instead of one shared 2-worker runtime.
//!
//! Criterion measures each contender for 5 s, one after the other, so a
//! change in the host's load between them skews their ratio; the `paired`
//! bench alternates them in short rounds for that.
//!
//! ```text
//! cargo bench -p malla-benches --bench network
//! ```

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use malla_benches::{CALLERS, Contender, Contenders, Layout};

fn bench(c: &mut Criterion) {
    let contenders = Contenders::start(Layout::from_env());
    let (request, reply) = contenders.frame_sizes();
    eprintln!("malla frames for Bench.add(i, 2): request {request} bytes, reply {reply} bytes");

    let mut group = c.benchmark_group("round trip");
    group.measurement_time(Duration::from_secs(5));
    for who in Contender::ALL {
        group.bench_function(who.name(), |b| {
            b.iter_custom(|calls| contenders.round_trips(who, calls))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("64 callers, one connection");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CALLERS as u64));
    for who in Contender::ALL {
        group.bench_function(who.name(), |b| b.iter_custom(|calls| contenders.concurrent(who, calls)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
