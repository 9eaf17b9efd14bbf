//! Real nodes on loopback, each on its own tokio runtime, so a test can kill
//! one the way a crash would: its runtime stops and its sockets close.

use std::future::Future;
use std::net::SocketAddr;

use malla::{Node, NodeBuilder};
use tokio::runtime::Runtime;

use crate::wait::wait_until_blocking;

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

    /// Where the node listens.
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

/// A free port on 127.0.0.1, picked when bound.
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

/// The loopback address 127.0.0.`i`: nodes on addresses of their own can be
/// partitioned one by one.
pub fn loopback(i: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, i)
}
