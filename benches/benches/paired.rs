//! The network contenders alternating in short rounds, so that a change in
//! the host's load hits all of them alike; prints each one's median and the
//! median of the per-round ratios (the figure to quote on a noisy machine).
//!
//! ```text
//! cargo bench -p malla-benches --bench paired
//! MALLA_BENCH_RUNTIME=split cargo bench -p malla-benches --bench paired
//! ```
//!
//! `MALLA_BENCH_ROUNDS` sets the number of rounds (default 40).

use std::time::Duration;

use malla_benches::{CALLERS, Contender, Contenders, Layout};

/// Sequential calls per contender and round.
const ROUND_TRIPS: u64 = 1_000;
/// Calls per caller and round in the throughput measurement.
const CALLS_EACH: u64 = 100;

fn main() {
    let layout = Layout::from_env();
    let rounds: usize = std::env::var("MALLA_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(40);
    let contenders = Contenders::start(layout);
    let (request, reply) = contenders.frame_sizes();
    println!("layout {layout:?}, {rounds} rounds; malla frames: request {request} B, reply {reply} B");

    let round_trip = measure(rounds, |who| {
        per_call(contenders.round_trips(who, ROUND_TRIPS), ROUND_TRIPS)
    });
    report("round trip (µs per call, lower is better)", &round_trip, |t| t * 1e6);

    let throughput = measure(rounds, |who| {
        let calls = CALLS_EACH * CALLERS as u64;
        calls as f64 / contenders.concurrent(who, CALLS_EACH).as_secs_f64()
    });
    report(
        &format!("{CALLERS} callers, one connection (calls/s, higher is better)"),
        &throughput,
        |r| r,
    );
}

fn per_call(elapsed: Duration, calls: u64) -> f64 {
    elapsed.as_secs_f64() / calls as f64
}

/// One sample per contender and round, after a warm-up round; the order of
/// the contenders rotates from round to round.
fn measure(rounds: usize, mut sample: impl FnMut(Contender) -> f64) -> Vec<[f64; 3]> {
    for who in Contender::ALL {
        sample(who);
    }
    (0..rounds)
        .map(|round| {
            let mut row = [0.0; 3];
            for k in 0..3 {
                let i = (round + k) % 3;
                row[i] = sample(Contender::ALL[i]);
            }
            row
        })
        .collect()
}

fn report(title: &str, rows: &[[f64; 3]], scale: impl Fn(f64) -> f64) {
    let [raw, tarpc, malla] = [0, 1, 2].map(|i| median(rows.iter().map(|row| row[i])));
    let vs_raw = median(rows.iter().map(|row| row[2] / row[0]));
    let vs_tarpc = median(rows.iter().map(|row| row[2] / row[1]));
    println!("\n{title}");
    println!("  {:<8} {:>12.2}", "raw tcp", scale(raw));
    println!("  {:<8} {:>12.2}", "tarpc", scale(tarpc));
    println!("  {:<8} {:>12.2}", "malla", scale(malla));
    println!("  malla / raw tcp: {vs_raw:.3}   malla / tarpc: {vs_tarpc:.3}   (medians of per-round ratios)");
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
