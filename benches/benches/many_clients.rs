//! Many clients, one server: 8 client nodes, each with 8 callers, call one
//! malla server node over loopback; beside them, 8 tarpc clients (one
//! connection each) call one tarpc server, alternating in rounds. Prints the
//! aggregate calls/s with every caller calling as fast as it can, and p50 /
//! p99 of the calls at a fixed offered load (open loop: calls are started on
//! a 1 ms clock whatever the answers do, so a slow server shows as latency).
//!
//! ```text
//! cargo bench -p malla-benches --bench many_clients
//! ```
//!
//! `MALLA_BENCH_ROUNDS` sets the rounds (default 10), `MALLA_BENCH_LOAD` the
//! offered load in calls/s (default 40 000).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use malla_benches::{BenchClient, TarpcBenchClient, malla_client, malla_server, tarpc_client, tarpc_server};

const CLIENTS: usize = 8;
const CALLERS_EACH: usize = 8;
const SATURATE_FOR: Duration = Duration::from_millis(300);
const LOAD_FOR: Duration = Duration::from_millis(400);

type Call = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

fn malla_call(client: BenchClient) -> Call {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            client.add(40, 2).await.unwrap();
        })
    })
}

fn tarpc_call(client: TarpcBenchClient) -> Call {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            client.add(tarpc::context::current(), 40, 2).await.unwrap();
        })
    })
}

fn main() {
    let rounds: usize = env("MALLA_BENCH_ROUNDS", 10);
    let load: u64 = env("MALLA_BENCH_LOAD", 40_000);
    // One two-worker runtime for servers and clients, as `#[tokio::main]`
    // gives on this machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (malla_nodes, contenders) = rt.block_on(async {
        let addr = malla_server("server", true).await;
        let mut nodes = Vec::new();
        let mut malla = Vec::new();
        for i in 0..CLIENTS {
            let (node, client) = malla_client(&format!("client-{i}"), addr, "server", true).await;
            nodes.push(node);
            malla.push(malla_call(client));
        }
        let tarpc_addr = tarpc_server().await;
        let mut tarpc = Vec::new();
        for _ in 0..CLIENTS {
            tarpc.push(tarpc_call(tarpc_client(tarpc_addr).await));
        }
        (nodes, [("malla", malla), ("tarpc", tarpc)])
    });
    println!(
        "{CLIENTS} clients x {CALLERS_EACH} callers against one server; {rounds} rounds; offered load {load} calls/s"
    );

    let mut rates = vec![Vec::new(); 2];
    let mut latencies = vec![Vec::new(); 2];
    let mut per_round_p99 = vec![Vec::new(); 2];
    for round in 0..rounds {
        for k in 0..2 {
            let i = (round + k) % 2;
            let clients = &contenders[i].1;
            rates[i].push(rt.block_on(saturate(clients)));
            let mut times = rt.block_on(offered(clients, load));
            times.sort_by(f64::total_cmp);
            per_round_p99[i].push(quantile(&times, 0.99));
            latencies[i].extend(times);
        }
    }
    println!("\naggregate calls/s (median of rounds), every caller as fast as it can");
    for (i, (name, _)) in contenders.iter().enumerate() {
        println!("  {name:<6} {:>12.0}", median(&rates[i]));
    }
    let ratio: Vec<f64> = rates[0].iter().zip(&rates[1]).map(|(m, t)| m / t).collect();
    println!("  malla / tarpc: {:.3} (median of per-round ratios)", median(&ratio));
    println!("\nat {load} calls/s offered: p50 / p99 over all rounds' calls (µs)");
    for (i, (name, _)) in contenders.iter().enumerate() {
        let all = {
            let mut all = latencies[i].clone();
            all.sort_by(f64::total_cmp);
            all
        };
        println!("  {name:<6} {:>9.1} {:>9.1}", quantile(&all, 0.5), quantile(&all, 0.99));
    }
    let ratio: Vec<f64> = per_round_p99[0]
        .iter()
        .zip(&per_round_p99[1])
        .map(|(m, t)| m / t)
        .collect();
    println!(
        "  malla p99 / tarpc p99: {:.3} (median of per-round ratios)",
        median(&ratio)
    );
    drop(malla_nodes);
}

/// Calls/s with every caller of every client calling back to back.
async fn saturate(clients: &[Call]) -> f64 {
    let calls = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + SATURATE_FOR;
    let mut tasks = Vec::new();
    for client in clients {
        for _ in 0..CALLERS_EACH {
            let (client, calls) = (Arc::clone(client), Arc::clone(&calls));
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    client().await;
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    calls.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The latency (µs) of every call started at `load` calls/s in all, spread
/// over the clients, on a 1 ms clock.
async fn offered(clients: &[Call], load: u64) -> Vec<f64> {
    let per_ms = (load as f64 / 1000.0 / clients.len() as f64).max(1.0);
    let mut tasks = Vec::new();
    for client in clients {
        let client = Arc::clone(client);
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(1));
            let (start, mut started, mut calls) = (Instant::now(), 0.0f64, Vec::new());
            while start.elapsed() < LOAD_FOR {
                ticker.tick().await;
                let due = start.elapsed().as_secs_f64() * 1000.0 * per_ms;
                while started < due {
                    started += 1.0;
                    let client = Arc::clone(&client);
                    calls.push(tokio::spawn(async move {
                        let at = Instant::now();
                        client().await;
                        at.elapsed().as_secs_f64() * 1e6
                    }));
                }
            }
            let mut times = Vec::with_capacity(calls.len());
            for call in calls {
                times.push(call.await.unwrap());
            }
            times
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
