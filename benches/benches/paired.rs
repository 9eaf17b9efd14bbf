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

const N: usize = Contender::ALL.len();

/// One sample per contender and round, after a warm-up round; the order of
/// the contenders rotates from round to round.
fn measure(rounds: usize, mut sample: impl FnMut(Contender) -> f64) -> Vec<[f64; N]> {
    for who in Contender::ALL {
        sample(who);
    }
    (0..rounds)
        .map(|round| {
            let mut row = [0.0; N];
            for k in 0..N {
                let i = (round + k) % N;
                row[i] = sample(Contender::ALL[i]);
            }
            row
        })
        .collect()
}

fn report(title: &str, rows: &[[f64; N]], scale: impl Fn(f64) -> f64) {
    let index = |who: Contender| Contender::ALL.iter().position(|c| *c == who).expect("a contender");
    let ratio = |a: Contender, b: Contender| median(rows.iter().map(|row| row[index(a)] / row[index(b)]));
    println!("\n{title}");
    for (i, who) in Contender::ALL.iter().enumerate() {
        println!(
            "  {:<15} {:>12.2}",
            who.name(),
            scale(median(rows.iter().map(|row| row[i])))
        );
    }
    let (raw, tarpc, sealed, unsealed) = (
        Contender::Raw,
        Contender::Tarpc,
        Contender::Malla,
        Contender::MallaUnsealed,
    );
    println!(
        "  malla / raw tcp: {:.3}   malla unsealed / raw tcp: {:.3}   malla / malla unsealed: {:.3}   malla / tarpc: {:.3}",
        ratio(sealed, raw),
        ratio(unsealed, raw),
        ratio(sealed, unsealed),
        ratio(sealed, tarpc),
    );
    println!("  (medians of per-round ratios)");
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
