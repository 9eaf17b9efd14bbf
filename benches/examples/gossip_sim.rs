//! Gossip beyond one machine's processes: N chitchat members in one process,
//! over chitchat's in-memory transport, with malla's settings (500 ms
//! rounds, phi 8) and the keys a malla node serving one service publishes
//! (`status`, `rpc`, `svc:<name>`, `manifest:<name>`). It measures, for each
//! N, how long until every member sees every other, what a member sends per
//! second, the mean message size, and whether messages still fit the
//! 65,507-byte datagram chitchat assumes (a message that does not is refused
//! by the transport, as the network would refuse it).
//!
//! ```sh
//! cargo run --release -p malla-benches --example gossip_sim -- 250 500 1000
//! ```
//!
//! Only gossip is simulated: no TCP mesh, no sealing. All members share this
//! process's two cores, so its CPU column says how much of them the whole
//! simulated cluster needed; past 100 % of both, the figures describe an
//! overloaded host, not a member.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chitchat::transport::{ChannelTransport, Socket, Transport};
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, ChitchatMessage, FailureDetectorConfig, Serializable, spawn_chitchat,
};

/// The largest UDP payload, which chitchat sizes its messages by.
const DATAGRAM: usize = 65_507;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8), 7400))
}

/// What a node serving one service publishes, in sizes like malla's.
fn keys(i: usize) -> Vec<(String, String)> {
    let manifest = format!(
        r#"{{"name":"Calculator","vsn":"1.0.0","global":true,"methods":[{{"name":"add","id":{},"signature":{},"idempotent":false,"timeout_ms":5000,"args":["i64","i64"],"reply":"i64"}},{{"name":"get","id":{},"signature":{},"idempotent":true,"timeout_ms":5000,"args":["String"],"reply":"Option<String>"}}]}}"#,
        3_735_928_559u32, 12_297_829_382_473_034_410u64, 2_863_311_530u32, 6_148_914_691_236_517_205u64
    );
    vec![
        ("status".into(), "running".into()),
        ("rpc".into(), addr(i).to_string()),
        (
            "svc:Calculator".into(),
            r#"{"vsn":"1.0.0","status":"running","meta":{}}"#.into(),
        ),
        ("manifest:Calculator".into(), manifest),
    ]
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![100, 250, 500, 1000]
    } else {
        sizes
    };
    println!(
        "| members | round | all see all | sent per member (at 500 ms rounds) | mean message | largest message | refused (over a datagram) | CPU of the process |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        println!("{}", rt.block_on(simulate(n)));
    }
}

async fn simulate(n: usize) -> String {
    let channels = ChannelTransport::default();
    let transport = Datagrams {
        inner: channels.clone(),
        sizes: Arc::default(),
    };
    // Members of one process share its cores, and the whole cluster's work
    // grows with N²: rounds lengthen as (N / 250)² so that the host keeps
    // up. Sizes do not depend on it; times are also given in rounds.
    let slower = (n as u64).div_ceil(250).max(1);
    let interval = Duration::from_millis(500 * slower * slower);
    let started = Instant::now();
    let mut members: Vec<ChitchatHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("node-{i:04}"), 1, addr(i)),
            cluster_id: "malla".into(),
            gossip_interval: interval,
            listen_addr: addr(i),
            seed_nodes: (0..3.min(n)).map(|s| addr(s).to_string()).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                initial_interval: interval,
                dead_node_grace_period: Duration::from_secs(900),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(900),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        members.push(
            spawn_chitchat(config, keys(i), &transport)
                .await
                .expect("a member starts"),
        );
    }
    eprintln!("{n} members started in {:.1} s", started.elapsed().as_secs_f64());
    let limit = interval * 40;
    let converged = loop {
        let mut seeing_all = 0;
        for member in &members {
            if member.chitchat().lock().await.live_nodes().count() == n {
                seeing_all += 1;
            }
        }
        eprintln!("{:.1} s: {seeing_all} of {n} see all", started.elapsed().as_secs_f64());
        if seeing_all == n {
            break Some(started.elapsed());
        }
        if started.elapsed() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Steady state: ten seconds of rounds with nothing changing.
    let before = channels.statistics();
    let (cpu1, t1) = (process_cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = channels.statistics();
    let secs = t1.elapsed().as_secs_f64();
    let cpu = (process_cpu() - cpu1) / secs * 100.0;
    let cpu_per_member = cpu / n as f64 * (interval.as_secs_f64() / 0.5);
    let bytes = (after.num_bytes_total - before.num_bytes_total) as f64;
    let messages = (after.num_messages_total - before.num_messages_total) as f64;
    let refused = transport.sizes.refused.load(Ordering::Relaxed);
    let largest = transport.sizes.largest.load(Ordering::Relaxed);
    for member in members {
        member.abort();
    }
    let rounds_per_second = 1.0 / interval.as_secs_f64();
    format!(
        "| {n} | {} ms | {} | {:.1} kB/s | {:.0} B | {largest} B | {refused} | {cpu:.0} % of a core ({:.2} % per member at 500 ms rounds) |",
        interval.as_millis(),
        converged.map_or_else(
            || format!("not in {} s", limit.as_secs()),
            |d| format!(
                "{:.1} s ({:.0} rounds)",
                d.as_secs_f64(),
                d.as_secs_f64() * rounds_per_second
            )
        ),
        bytes / n as f64 / secs / 1000.0 * (2.0 / rounds_per_second),
        if messages > 0.0 { bytes / messages } else { 0.0 },
        cpu_per_member,
    )
}

/// Sizes of what members send, and the messages that do not fit a datagram.
#[derive(Default)]
struct Sizes {
    largest: AtomicUsize,
    refused: AtomicU64,
}

/// Chitchat's in-memory transport, behaving as UDP would with messages
/// larger than a datagram: they are lost.
struct Datagrams {
    inner: ChannelTransport,
    sizes: Arc<Sizes>,
}

#[async_trait]
impl Transport for Datagrams {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(DatagramSocket {
            inner: self.inner.open(listen_addr).await?,
            sizes: Arc::clone(&self.sizes),
        }))
    }
}

struct DatagramSocket {
    inner: Box<dyn Socket>,
    sizes: Arc<Sizes>,
}

#[async_trait]
impl Socket for DatagramSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let len = message.serialized_len();
        self.sizes.largest.fetch_max(len, Ordering::Relaxed);
        if len > DATAGRAM {
            self.sizes.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner.send(to, message).await
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.inner.recv().await
    }
}

/// CPU seconds this process has used.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |k: usize| fields.get(k).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / 100.0
}
