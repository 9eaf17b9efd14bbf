//! Real nodes on loopback, each on its own tokio runtime, so a test can kill
//! one the way a crash would: its runtime stops and its sockets close.

use std::future::Future;
use std::net::SocketAddr;

use malla::{Node, NodeBuilder};
use tokio::runtime::Runtime;

/// A node and the runtime its tasks run on.
pub struct NodeRuntime {
    pub node: Node,
    rt: Option<Runtime>,
}

impl NodeRuntime {
    /// Starts `builder` on a new two-worker runtime.
    pub fn start(builder: NodeBuilder) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let node = off_runtime(|| rt.block_on(builder.start())).expect("the node starts");
        NodeRuntime { node, rt: Some(rt) }
    }

    /// Runs `fut` on the node's runtime and waits for it.
    pub fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let rt = self.rt.as_ref().expect("the node is alive");
        off_runtime(|| rt.block_on(fut))
    }

    /// Spawns `fut` on the node's runtime.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.as_ref().expect("the node is alive").spawn(fut)
    }

    pub fn addr(&self) -> SocketAddr {
        self.node.local_addr().expect("the node listens")
    }

    /// Kills the node: its runtime stops, every task and socket with it.
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `f` on a plain thread: `block_on` refuses to run inside a runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("no panic"))
}

/// Waits until a node could listen on `addr` again (TCP and gossip's UDP):
/// a killed node's runtime drops its sockets in the background, so its peers
/// may see it gone before its port is free.
pub fn wait_until_free(addr: SocketAddr, limit: std::time::Duration) -> bool {
    wait_until_blocking(limit, || {
        std::net::TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok()
    })
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A node builder listening on a free loopback port with cookie `cookie`.
pub fn listening(name: &str, cookie: &str) -> NodeBuilder {
    Node::builder(name).cookie(cookie).listen(localhost())
}

/// Starts `n` nodes named `{prefix}0..` on their own runtimes, every one
/// seeded with the first, and waits until each sees all the others.
pub fn cluster(prefix: &str, n: usize, cookie: &str) -> Vec<NodeRuntime> {
    let first = NodeRuntime::start(listening(&format!("{prefix}0"), cookie));
    let seed = first.addr();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(NodeRuntime::start(
            listening(&format!("{prefix}{i}"), cookie).seeds([seed]),
        ));
    }
    let formed = wait_until_blocking(std::time::Duration::from_secs(10), || {
        nodes.iter().all(|n| n.node.nodes().len() == nodes.len() - 1)
    });
    assert!(
        formed,
        "the cluster did not form: {:?}",
        nodes.iter().map(|n| n.node.nodes()).collect::<Vec<_>>()
    );
    nodes
}

/// Polls `done` every 5 ms until it holds or `limit` passes; returns whether
/// it held. For code outside async contexts.
pub fn wait_until_blocking(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    done()
}

/// Polls `done` every 5 ms until it holds or `limit` passes; returns how long
/// it took, or `None`.
pub async fn time_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    done().then(|| start.elapsed())
}

/// Drops every packet to or from one loopback address, with an nftables
/// table of its own (needs root and `nft`): a node listening there stops
/// answering without closing anything. Removed on drop.
pub struct Partition {
    table: String,
}

impl Partition {
    pub fn isolate(ip: std::net::Ipv4Addr) -> Result<Self, String> {
        let table = format!("malla_test_{}_{}", std::process::id(), ip.to_string().replace('.', "_"));
        let script = format!(
            "table ip {table} {{\n\
               chain input {{ type filter hook input priority -10; policy accept;\n\
                 ip saddr {ip} drop\n ip daddr {ip} drop\n }}\n\
               chain output {{ type filter hook output priority -10; policy accept;\n\
                 ip saddr {ip} drop\n ip daddr {ip} drop\n }}\n\
             }}\n"
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "nft refused the rules: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(Partition { table })
    }

    /// Lifts the partition.
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .status();
    }
}
