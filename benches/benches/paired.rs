//! The network contenders alternating in short rounds, so that a change in
//! the host's load hits all of them alike; prints each one's median and the
//! median of the per-round ratios (the figure to quote on a noisy machine).
//! Round trips are timed call by call: their mean, p50 and p99 per round
//! give ratios, and p99.9 is read off all rounds' calls together.
//!
//! ```text
//! cargo bench -p malla-benches --bench paired
//! MALLA_BENCH_RUNTIME=split cargo bench -p malla-benches --bench paired
//! ```
//!
//! `MALLA_BENCH_ROUNDS` sets the number of rounds (default 40).

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

    // Each contender's calls of each round, in µs.
    let calls = measure(rounds, |who| {
        let times = contenders.latencies(who, ROUND_TRIPS);
        let mut micros: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e6).collect();
        micros.sort_by(f64::total_cmp);
        micros
    });
    let per_round = |stat: &dyn Fn(&[f64]) -> f64| -> Vec<[f64; N]> {
        calls.iter().map(|row| std::array::from_fn(|i| stat(&row[i]))).collect()
    };
    let mean = |c: &[f64]| c.iter().sum::<f64>() / c.len() as f64;
    report(
        "round trip, mean (µs per call, lower is better)",
        &per_round(&mean),
        |t| t,
    );
    report("round trip, p50 (µs)", &per_round(&|c| quantile(c, 0.50)), |t| t);
    report("round trip, p99 (µs)", &per_round(&|c| quantile(c, 0.99)), |t| t);
    println!("\nround trip over all rounds' calls (µs): p50 / p99 / p99.9");
    for (i, who) in Contender::ALL.iter().enumerate() {
        let mut all: Vec<f64> = calls.iter().flat_map(|row| row[i].iter().copied()).collect();
        all.sort_by(f64::total_cmp);
        let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|q| quantile(&all, q));
        println!("  {:<15} {p50:>9.2} {p99:>9.2} {p999:>9.2}", who.name());
    }

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

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

const N: usize = Contender::ALL.len();

/// One sample per contender and round, after a warm-up round; the order of
/// the contenders rotates from round to round.
fn measure<T: Default>(rounds: usize, mut sample: impl FnMut(Contender) -> T) -> Vec<[T; N]> {
    for who in Contender::ALL {
        sample(who);
    }
    (0..rounds)
        .map(|round| {
            let mut row: [T; N] = std::array::from_fn(|_| T::default());
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
    let (raw, mux, tarpc, sealed, unsealed, layered) = (
        Contender::Raw,
        Contender::RawMux,
        Contender::Tarpc,
        Contender::Malla,
        Contender::MallaUnsealed,
        Contender::MallaLayered,
    );
    println!(
        "  malla / raw tcp: {:.3}   malla / raw mux: {:.3}   malla unsealed / raw tcp: {:.3}   malla / malla unsealed: {:.3}   malla / tarpc: {:.3}",
        ratio(sealed, raw),
        ratio(sealed, mux),
        ratio(unsealed, raw),
        ratio(sealed, unsealed),
        ratio(sealed, tarpc),
    );
    println!("  malla+layers / malla: {:.3}", ratio(layered, sealed));
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
