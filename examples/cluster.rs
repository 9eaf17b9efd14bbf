//! Three nodes and a client on loopback, in one process: a stub answering
//! before anything is served, discovery, calls spread over the nodes, one node
//! killed and the calls failing over. One line per step.
//!
//! ```text
//! cargo run --example cluster
//! RUST_LOG=malla_runtime=info cargo run --example cluster   # and the library's own logs
//! cargo run --example cluster -- --stay                      # keep node1 and node3 up on 127.0.0.1:7000
//! MALLA_COOKIE=malla-demo-cookie cargo run -p malla-cli -- --connect 127.0.0.1:7000 services
//! MALLA_COOKIE=malla-demo-cookie cargo run -p malla-cli -- --connect 127.0.0.1:7000 stats
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use malla::{Error, Node};
use tokio::runtime::Runtime;

/// A calculator that says which node answered.
#[malla::service(global, vsn = "1.0.0")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Safe to re-send: it changes nothing.
    #[malla(idempotent)]
    async fn whoami(&self) -> String;
}

struct Calc {
    node: String,
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn whoami(&self) -> String {
        self.node.clone()
    }
}

const COOKIE: &str = "malla-demo-cookie";

/// A server node on its own runtime, so the demo can kill it like a crash.
struct Server {
    node: Node,
    runtime: Option<Runtime>,
}

impl Server {
    fn start(name: &str, listen: SocketAddr, seeds: &[SocketAddr]) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let builder = Node::builder(name)
            .cookie(COOKIE)
            .listen(listen)
            .seeds(seeds.iter().copied());
        let node = runtime.block_on(builder.start()).expect("the node starts");
        Server {
            node,
            runtime: Some(runtime),
        }
    }

    fn serve(&self) {
        let calc = CalculatorServer::new(Calc {
            node: self.node.id().to_string(),
        });
        let runtime = self.runtime.as_ref().expect("alive");
        runtime.block_on(self.node.serve(calc)).expect("serving");
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn step(started: Instant, text: impl std::fmt::Display) {
    println!("[{:>5} ms] {text}", started.elapsed().as_millis());
}

fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let stay = std::env::args().any(|a| a == "--stay");
    let t = Instant::now();

    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let first = if stay {
        "127.0.0.1:7000".parse().unwrap()
    } else {
        any_port
    };
    let mut servers = vec![Server::start("node1", first, &[])];
    let seed = servers[0].node.local_addr().unwrap();
    servers.push(Server::start("node2", any_port, &[seed]));
    servers.push(Server::start("node3", any_port, &[seed]));
    step(
        t,
        format!("started node1, node2, node3 on 127.0.0.1, cookie `{COOKIE}`; node1 ({seed}) is the seed"),
    );

    let client_runtime = tokio::runtime::Runtime::new().expect("a runtime");
    client_runtime.block_on(async {
        let client = Node::builder("client").cookie(COOKIE).seeds([seed]).start().await?;
        let calc = CalculatorClient::new(&client);
        match calc.add(1, 2).await {
            Err(Error::ServiceNotAvailable { service, .. }) => step(
                t,
                format!("client: `{service}` is served nowhere yet, so its stub answers ServiceNotAvailable"),
            ),
            other => step(t, format!("client: unexpected answer {other:?}")),
        }

        for server in &servers {
            // Serving happens on each node's own runtime.
            std::thread::scope(|s| {
                s.spawn(|| server.serve());
            });
        }
        step(t, "node1, node2 and node3 serve Calculator");
        client
            .wait_for_services(&["Calculator"], Duration::from_secs(10))
            .await?;
        while client.get_nodes("Calculator").len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        step(
            t,
            format!("client: discovered Calculator on {:?}", client.get_nodes("Calculator")),
        );
        step(
            t,
            format!(
                "client: the same handle now routes: add(40, 2) = {}",
                calc.add(40, 2).await?
            ),
        );

        let mut answered: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..12 {
            *answered.entry(calc.whoami().await?).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        step(
            t,
            format!(
                "client: 12 calls spread over the nodes (the order is reshuffled every gossip round): {answered:?}"
            ),
        );

        let victim = servers[1].node.id().clone();
        let killed = Instant::now();
        servers[1].kill();
        step(t, format!("killed {victim} (its runtime stopped, its sockets closed)"));
        let gone = tokio::spawn({
            let (client, victim) = (client.clone(), victim.clone());
            async move {
                while client.get_nodes("Calculator").contains(&victim) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                killed.elapsed()
            }
        });
        let mut answered: BTreeMap<String, u32> = BTreeMap::new();
        let mut failures = 0;
        for _ in 0..12 {
            match calc.whoami().await {
                Ok(node) => *answered.entry(node).or_default() += 1,
                Err(err) => {
                    failures += 1;
                    step(t, format!("client: call failed: {err}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        step(
            t,
            format!("client: 12 more calls failed over, {failures} failures: {answered:?}"),
        );
        let gone = gone.await.expect("the watcher ends");
        step(
            t,
            format!(
                "client: {victim} had left get_nodes {gone:?} after the kill; now {:?}",
                client.get_nodes("Calculator")
            ),
        );
        client.shutdown().await;
        step(t, "client left the cluster");
        Ok::<(), Error>(())
    })?;
    if stay {
        step(
            t,
            format!(
                "node1 and node3 keep running; try `MALLA_COOKIE={COOKIE} cargo run -p malla-cli -- --connect {seed} stats`; Ctrl-C to stop"
            ),
        );
        client_runtime.block_on(tokio::signal::ctrl_c()).ok();
    }
    for server in &mut servers {
        server.kill();
    }
    step(t, "done");
    Ok(())
}
