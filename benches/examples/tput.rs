//! Throughput of one contender, for profiling:
//! `MALLA_BENCH_RUNTIME=split cargo run --release -p malla-benches --example tput -- malla 200`.

use malla_benches::{CALLERS, Contender, Contenders, Layout};

fn main() {
    let mut args = std::env::args().skip(1);
    let who = match args.next().as_deref() {
        Some("raw") => Contender::Raw,
        Some("tarpc") => Contender::Tarpc,
        Some("unsealed") => Contender::MallaUnsealed,
        _ => Contender::Malla,
    };
    let rounds: u32 = args.next().and_then(|r| r.parse().ok()).unwrap_or(100);
    let contenders = Contenders::start(Layout::from_env());
    let calls_each = 100;
    let mut total = std::time::Duration::ZERO;
    for _ in 0..rounds {
        total += contenders.concurrent(who, calls_each);
    }
    let calls = rounds as f64 * (calls_each * CALLERS as u64) as f64;
    println!("{}: {:.0} calls/s", who.name(), calls / total.as_secs_f64());
}
