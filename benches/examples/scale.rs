//! The scale harness: starts N node processes on loopback, each on its own
//! address (127.0.1.1, 127.0.1.2, …), and measures from outside, for each N
//! given:
//!
//! - mesh: from the last start until every node sees every other;
//! - serve: from `serve` on one node until every node routes to it;
//! - kill: from SIGKILL of a serving node until it is out of every route;
//! - partition: from cutting a serving node off (nftables) until it is out
//!   of every route;
//! - per idle node: CPU (% of one core), RSS, gossip bytes sent per second.
//!
//! ```sh
//! cargo run --release -p malla-benches --example scale -- 25 50 100
//! ```
//!
//! Needs root and `nft` for the partition (without them that column says
//! so). Each node process is this binary again, told its part through
//! `SCALE_*` variables; it reports its view on stdout as it changes and
//! answers `serve` and `stats` on stdin.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use malla::Node;
use malla_test_support::partition::Partition;
use malla_test_support::process::{clock_ticks_per_second, cpu_ticks, rss_kib, this_binary};

const COOKIE: &str = "scale-harness-cookie";
const PORT: u16 = 7400;

#[malla::service(global)]
pub trait Probe {
    async fn ping(&self) -> u32;
}

struct Pong;

impl Probe for Pong {
    async fn ping(&self) -> u32 {
        1
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8), PORT))
}

fn main() {
    if std::env::var_os("SCALE_ROLE").is_some() {
        return node_process();
    }
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![25, 50, 100] } else { sizes };
    println!(
        "| nodes | mesh | serve | kill | partition | idle CPU per node (mean / max) | RSS per node | gossip sent per node |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let row = measure(n);
        println!("{row}");
    }
}

/// One node: starts, reports, obeys.
fn node_process() {
    let i: usize = std::env::var("SCALE_INDEX")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("SCALE_INDEX");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let node = Node::builder(format!("n{i}"))
            .cookie(COOKIE)
            .listen(addr(i))
            .seeds([addr(0), addr(1)])
            .start()
            .await
            .expect("the node starts");
        let mut events = node.events();
        let watcher = node.clone();
        tokio::spawn(async move {
            let (mut nodes, mut probes) = (usize::MAX, usize::MAX);
            loop {
                let (now_nodes, now_probes) = (watcher.nodes().len(), watcher.get_nodes("Probe").len());
                if (now_nodes, now_probes) != (nodes, probes) {
                    (nodes, probes) = (now_nodes, now_probes);
                    println!("view {nodes} {probes}");
                }
                // Any event may change the view; a lagged receiver looks again.
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                    return;
                }
            }
        });
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        while let Ok(Some(line)) = lines.next_line().await {
            match line.trim() {
                "serve" => node.serve(ProbeServer::new(Pong)).await.expect("Probe is served"),
                "stats" => {
                    let stats = node.gossip_stats().unwrap_or_default();
                    println!("stats {} {}", stats.sent_bytes, stats.received_bytes);
                }
                _ => {}
            }
        }
    });
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    alive: bool,
    nodes: usize,
    probes: usize,
    sent_bytes: u64,
}

enum Report {
    View(usize, usize),
    Stats(u64),
}

struct Cluster {
    procs: Vec<Proc>,
    reports: mpsc::Receiver<(usize, Report)>,
}

impl Cluster {
    fn start(n: usize) -> (Cluster, Instant) {
        let (tx, reports) = mpsc::channel();
        let mut procs = Vec::new();
        for i in 0..n {
            let mut child = this_binary()
                .env("SCALE_ROLE", "node")
                .env("SCALE_INDEX", i.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("a node process starts");
            let stdout = child.stdout.take().expect("piped");
            let stdin = child.stdin.take().expect("piped");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let report = match words.as_slice() {
                        ["view", nodes, probes] => {
                            Report::View(nodes.parse().unwrap_or(0), probes.parse().unwrap_or(0))
                        }
                        ["stats", sent, _] => Report::Stats(sent.parse().unwrap_or(0)),
                        _ => continue,
                    };
                    if tx.send((i, report)).is_err() {
                        return;
                    }
                }
            });
            procs.push(Proc {
                child,
                stdin,
                alive: true,
                nodes: 0,
                probes: 0,
                sent_bytes: 0,
            });
            // The two seeds first, so that the others find someone.
            if i < 2 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        (Cluster { procs, reports }, Instant::now())
    }

    /// Applies reports until `done` holds for every live process (or the
    /// limit passes); returns how long that took from `since`.
    fn wait(&mut self, since: Instant, limit: Duration, done: impl Fn(usize, &Proc) -> bool) -> Option<Duration> {
        let end = Instant::now() + limit;
        loop {
            if self.procs.iter().enumerate().all(|(i, p)| !p.alive || done(i, p)) {
                return Some(since.elapsed());
            }
            let left = end.checked_duration_since(Instant::now())?;
            match self.reports.recv_timeout(left) {
                Ok((i, Report::View(nodes, probes))) => {
                    self.procs[i].nodes = nodes;
                    self.procs[i].probes = probes;
                }
                Ok((i, Report::Stats(sent))) => self.procs[i].sent_bytes = sent,
                Err(_) => return None,
            }
        }
    }

    fn tell(&mut self, i: usize, command: &str) {
        let _ = writeln!(self.procs[i].stdin, "{command}");
    }

    fn kill(&mut self, i: usize) {
        let _ = self.procs[i].child.kill();
        let _ = self.procs[i].child.wait();
        self.procs[i].alive = false;
    }

    /// Every live process's gossip bytes sent so far.
    fn gossip_sent(&mut self) -> Vec<u64> {
        for p in &mut self.procs {
            p.sent_bytes = u64::MAX;
        }
        for i in 0..self.procs.len() {
            if self.procs[i].alive {
                self.tell(i, "stats");
            }
        }
        self.wait(Instant::now(), Duration::from_secs(5), |_, p| p.sent_bytes != u64::MAX);
        self.procs.iter().filter(|p| p.alive).map(|p| p.sent_bytes).collect()
    }

    fn cpu_ticks(&self) -> Vec<u64> {
        self.procs
            .iter()
            .filter(|p| p.alive)
            .map(|p| cpu_ticks(p.child.id()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

fn measure(n: usize) -> String {
    let (mut cluster, started) = Cluster::start(n);
    let limit = Duration::from_secs(60);
    let show = |d: Option<Duration>| d.map_or_else(|| "> 60 s".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    let mesh = cluster.wait(started, limit, |_, p| p.nodes == n - 1);

    let (a, b) = (n - 1, n - 2);
    let t = Instant::now();
    cluster.tell(a, "serve");
    let serve = cluster.wait(t, limit, |_, p| p.probes >= 1);
    cluster.tell(b, "serve");
    cluster.wait(Instant::now(), limit, |_, p| p.probes >= 2);

    // Idle: nothing changes for a while, then ten seconds are measured.
    std::thread::sleep(Duration::from_secs(5));
    let (cpu0, sent0, t0) = (cluster.cpu_ticks(), cluster.gossip_sent(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu1, sent1, secs) = (cluster.cpu_ticks(), cluster.gossip_sent(), t0.elapsed().as_secs_f64());
    let ticks = clock_ticks_per_second() as f64;
    let cpu: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| (b - a) as f64 / ticks / secs * 100.0)
        .collect();
    let cpu_mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    let cpu_max = cpu.iter().cloned().fold(0.0, f64::max);
    let rss: f64 = cluster.procs.iter().map(|p| rss_kib(p.child.id()) as f64).sum::<f64>() / n as f64 / 1024.0;
    let gossip: f64 = sent0
        .iter()
        .zip(&sent1)
        .map(|(a, b)| b.saturating_sub(*a) as f64)
        .sum::<f64>()
        / n as f64
        / secs;

    let t = Instant::now();
    cluster.kill(a);
    let kill = cluster.wait(t, limit, |_, p| p.probes == 1);

    let ip = match addr(b).ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => unreachable!("the harness listens on IPv4"),
    };
    let partition = match Partition::isolate(ip) {
        Ok(cut) => {
            let t = Instant::now();
            let left = cluster.wait(t, limit, |i, p| i == b || p.probes == 0);
            drop(cut);
            show(left)
        }
        Err(why) => format!("not measured ({why})"),
    };
    format!(
        "| {n} | {} | {} | {} | {partition} | {cpu_mean:.2} % / {cpu_max:.2} % | {rss:.1} MiB | {gossip:.0} B/s |",
        show(mesh),
        show(serve),
        show(kill),
    )
}
