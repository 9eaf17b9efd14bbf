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

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A node builder listening on a free loopback port with cookie `cookie`.
pub fn listening(name: &str, cookie: &str) -> NodeBuilder {
    Node::builder(name).cookie(cookie).listen(localhost())
}
