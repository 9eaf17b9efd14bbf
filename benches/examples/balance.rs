//! How the three balancing strategies spread calls over three nodes when
//! one of them is slow, and what that does to the tail: one process, four
//! nodes on loopback (a caller and three servers, each on its own runtime);
//! the servers' handler sleeps 1 ms, the slow one's `SLOW_MS`. For each
//! strategy, 16 callers call for `SECS` seconds; printed: each node's share
//! of the calls, and the latency percentiles the callers saw.
//!
//! ```text
//! cargo run --release -p malla-benches --example balance -- [SLOW_MS=200] [SECS=4]
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use malla::{Balance, CallOptions, Node};
use tokio::runtime::Runtime;

#[malla::service(global, vsn = "1.0.0")]
pub trait Work {
    /// Sleeps as long as its node is set to; returns the node's name.
    #[malla(idempotent)]
    async fn work(&self) -> String;
}

struct Worker {
    name: String,
    takes: Duration,
}

impl Work for Worker {
    async fn work(&self) -> String {
        tokio::time::sleep(self.takes).await;
        self.name.clone()
    }
}

const COOKIE: &str = "malla-balance-bench";
const CALLERS: usize = 16;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn main() -> Result<(), malla::Error> {
    let mut args = std::env::args().skip(1);
    let slow_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);

    let caller_rt = runtime();
    let caller = caller_rt.block_on(
        Node::builder("caller")
            .cookie(COOKIE)
            .listen("127.0.0.1:0".parse().unwrap())
            .start(),
    )?;
    let seed = caller.local_addr().expect("it listens");
    let mut servers = Vec::new();
    for (name, takes) in [("fast-a", 1), ("fast-b", 1), ("slow", slow_ms)] {
        let rt = runtime();
        let node = rt.block_on(async {
            let node = Node::builder(name)
                .cookie(COOKIE)
                .listen("127.0.0.1:0".parse().unwrap())
                .seeds([seed])
                .start()
                .await?;
            let worker = Worker {
                name: name.to_owned(),
                takes: Duration::from_millis(takes),
            };
            node.serve(WorkServer::new(worker)).await?;
            Ok::<_, malla::Error>(node)
        })?;
        servers.push((rt, node));
    }
    caller_rt.block_on(async {
        while caller.get_nodes("Work").len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    println!(
        "3 nodes serve Work: fast-a and fast-b take 1 ms, slow takes {slow_ms} ms; {CALLERS} callers, {secs} s per strategy"
    );
    println!();
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8} {:>9}",
        "strategy", "calls", "fast-a", "fast-b", "slow", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"
    );
    for balance in [Balance::LocalFirst, Balance::RoundRobin, Balance::LeastLoaded] {
        let client = WorkClient::new(&caller).with_options(CallOptions::default().balance(balance));
        let samples: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
        let until = Instant::now() + Duration::from_secs(secs);
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (client, samples) = (client.clone(), Arc::clone(&samples));
                caller_rt.spawn(async move {
                    let mut mine = Vec::new();
                    while Instant::now() < until {
                        let start = Instant::now();
                        let node = client.work().await.expect("every node answers");
                        mine.push((node, start.elapsed()));
                    }
                    samples.lock().unwrap().extend(mine);
                })
            })
            .collect();
        for caller in callers {
            caller_rt.block_on(caller).expect("a caller ends");
        }
        let samples = std::mem::take(&mut *samples.lock().unwrap());
        let mut by_node: BTreeMap<&str, usize> = BTreeMap::new();
        for (node, _) in &samples {
            *by_node.entry(node.as_str()).or_default() += 1;
        }
        let mut latencies: Vec<Duration> = samples.iter().map(|(_, took)| *took).collect();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let share = |node: &str| 100.0 * *by_node.get(node).unwrap_or(&0) as f64 / samples.len() as f64;
        println!(
            "{:<12} {:>8} {:>7.1}% {:>7.1}% {:>7.1}%   {:>8.2} {:>8.2} {:>8.2} {:>9.2}",
            format!("{balance:?}"),
            samples.len(),
            share("fast-a"),
            share("fast-b"),
            share("slow"),
            ms(at(0.50)),
            ms(at(0.90)),
            ms(at(0.99)),
            ms(at(0.999)),
        );
    }
    caller_rt.block_on(caller.shutdown());
    for (rt, node) in servers {
        rt.block_on(node.shutdown());
    }
    Ok(())
}
