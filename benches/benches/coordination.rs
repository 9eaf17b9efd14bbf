//! What a lock costs: acquire and release through the consensus group,
//! side by side with an uncontended `tokio::sync::Mutex` (the floor: no
//! network, no agreement), in one run. Each figure is the median of many
//! acquire + release round trips; throughput is many lockers on distinct
//! locks at once.
//!
//! ```text
//! cargo bench -p malla-benches --bench coordination
//! MALLA_BENCH_DURABLE=1 cargo bench -p malla-benches --bench coordination   # voters fsync to /tmp
//! ```
//!
//! Layouts: a lone node (its own group of one: one local commit); a
//! client of a three-voter group (a round trip to the leader, which commits
//! with a quorum, twice); the group's leader itself. Every node is in this
//! process, on loopback, with its own runtime.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use malla::{Node, NodeBuilder};

const COOKIE: &str = "coordination-bench-cookie";
const ROUNDS: usize = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

fn report(what: &str, times: Vec<Duration>) {
    let (p50, p99) = median(times);
    println!(
        "  {what:<44} p50 {:>9.1} µs   p99 {:>9.1} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

/// `ROUNDS` acquire + release round trips of one lock through `node`.
fn lock_round_trips(rt: &tokio::runtime::Runtime, node: &Node, name: &str) -> Vec<Duration> {
    rt.block_on(async {
        let mut times = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let guard = node.lock(name).into_future().await.unwrap();
            guard.release().await.unwrap();
            times.push(started.elapsed());
        }
        times
    })
}

/// Acquire + release per second, `lockers` at once on locks of their own.
fn throughput(rt: &tokio::runtime::Runtime, node: &Node, lockers: usize) -> f64 {
    rt.block_on(async {
        let each = 200;
        let started = Instant::now();
        let tasks: Vec<_> = (0..lockers)
            .map(|i| {
                let node = node.clone();
                tokio::spawn(async move {
                    for _ in 0..each {
                        let guard = node.lock(format!("t{i}")).into_future().await.unwrap();
                        guard.release().await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        (lockers * each) as f64 / started.elapsed().as_secs_f64()
    })
}

fn builder(name: &str, durable: Option<&std::path::Path>) -> NodeBuilder {
    let b = Node::builder(name)
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .gossip_interval(Duration::from_millis(100));
    match durable {
        Some(dir) => b.data_dir(dir.join(name)),
        None => b,
    }
}

fn main() {
    let durable = std::env::var_os("MALLA_BENCH_DURABLE").is_some();
    let scratch = std::env::temp_dir().join(format!("malla-bench-coord-{}", std::process::id()));
    let dir = durable.then_some(scratch.as_path());
    println!(
        "storage: {}",
        if durable { "durable (fsync, /tmp)" } else { "in memory" }
    );

    // The floor.
    let rt = runtime();
    let mutex = tokio::sync::Mutex::new(0u64);
    let floor = rt.block_on(async {
        let mut times = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            *mutex.lock().await += 1;
            times.push(started.elapsed());
        }
        times
    });
    println!("acquire + release, one at a time");
    report("tokio::sync::Mutex, uncontended", floor);

    // A lone node: its own group.
    let lone_rt = runtime();
    let lone = lone_rt.block_on(builder("lone", dir).start()).unwrap();
    lock_round_trips(&lone_rt, &lone, "warm");
    report("lone node (group of one)", lock_round_trips(&lone_rt, &lone, "x"));

    // Three voters and a client, each on its own runtime.
    let rts: Vec<_> = (0..4).map(|_| runtime()).collect();
    let first = rts[0].block_on(builder("v0", dir).voter(3).start()).unwrap();
    let seed = first.local_addr().unwrap();
    let mut voters = vec![first];
    for (i, rt) in rts.iter().enumerate().take(3).skip(1) {
        voters.push(
            rt.block_on(builder(&format!("v{i}"), dir).voter(3).seeds([seed]).start())
                .unwrap(),
        );
    }
    let client = rts[3].block_on(builder("client", dir).seeds([seed]).start()).unwrap();
    let status = rts[3].block_on(async {
        let started = Instant::now();
        loop {
            match client.group_status().await {
                Ok(s) if s.voters.len() == 3 => return s,
                _ if started.elapsed() > Duration::from_secs(30) => panic!("no group"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let leader = voters
        .iter()
        .position(|v| Some(v.id()) == status.leader.as_ref())
        .expect("a leader among the voters");
    lock_round_trips(&rts[3], &client, "warm");
    report("client of a 3-voter group", lock_round_trips(&rts[3], &client, "y"));
    report(
        "the 3-voter group's leader",
        lock_round_trips(&rts[leader], &voters[leader], "z"),
    );

    println!("acquire + release per second, distinct locks");
    for lockers in [1, 16, 64] {
        println!(
            "  {lockers:>2} lockers, client of a 3-voter group   {:>9.0} /s",
            throughput(&rts[3], &client, lockers)
        );
    }
    for lockers in [1, 64] {
        println!(
            "  {lockers:>2} lockers, lone node                    {:>9.0} /s",
            throughput(&lone_rt, &lone, lockers)
        );
    }
    drop((client, voters, lone));
    let _ = std::fs::remove_dir_all(&scratch);
}
