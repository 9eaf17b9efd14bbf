//! A rolling restart under load, as a deploy does it: three nodes serve
//! `Counter`; eight callers call it without pause (a method that is not
//! idempotent, so a call that failed over after running would show as a
//! duplicate); each node in turn is drained (`Node::drain`), stopped and
//! started again as a new process would be. At the end: calls made, calls
//! failed (0), and how each drain went.
//!
//! ```text
//! cargo run --example rolling_restart
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use malla::{CallOptions, Error, Node};
use tokio::runtime::Runtime;

#[malla::service(global, vsn = "1.0.0")]
pub trait Counter {
    /// Takes a few milliseconds, so every node always has calls running.
    async fn bump(&self, by: u64) -> u64;
}

#[derive(Default)]
struct Count(AtomicU64);

impl Counter for Count {
    async fn bump(&self, by: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.0.fetch_add(by, Ordering::Relaxed) + by
    }
}

const COOKIE: &str = "malla-rolling-restart-demo";

/// A server node on its own runtime, as if in its own process.
struct Server {
    name: String,
    node: Node,
    runtime: Runtime,
}

impl Server {
    fn start(name: &str, seeds: &[SocketAddr]) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let builder = Node::builder(name)
            .cookie(COOKIE)
            .listen("127.0.0.1:0".parse().unwrap())
            .seeds(seeds.iter().copied());
        let node = runtime.block_on(async {
            let node = builder.start().await?;
            node.serve(CounterServer::new(Count::default())).await?;
            Ok::<_, Error>(node)
        });
        Server {
            name: name.to_owned(),
            node: node.expect("the node starts"),
            runtime,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.node.local_addr().expect("it listens")
    }
}

fn main() -> Result<(), Error> {
    let t = Instant::now();
    let say = |text: String| println!("[{:>5} ms] {text}", t.elapsed().as_millis());

    let mut servers = vec![Server::start("node1", &[])];
    let seed = servers[0].addr();
    servers.push(Server::start("node2", &[seed]));
    servers.push(Server::start("node3", &[seed]));

    let client_runtime = Runtime::new().expect("a runtime");
    let client = client_runtime.block_on(Node::builder("client").cookie(COOKIE).seeds([seed]).start())?;
    let wait_for = |count: usize| {
        client_runtime.block_on(async {
            while client.get_nodes("Counter").len() != count {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    wait_for(3);
    say(format!("client sees Counter on {:?}", client.get_nodes("Counter")));

    let counter = CounterClient::new(&client).with_options(CallOptions::default().timeout(Duration::from_secs(5)));
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (counter, stop, calls, failures) = (counter.clone(), stop.clone(), calls.clone(), failures.clone());
            client_runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match counter.bump(1).await {
                        Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            eprintln!("call failed: {err}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    say(format!(
        "8 callers running: {} calls so far",
        calls.load(Ordering::Relaxed)
    ));

    for i in 0..servers.len() {
        let old = servers.remove(i);
        let report = old.runtime.block_on(old.node.drain(Duration::from_secs(10)))?;
        say(format!(
            "{} drained: {} handlers were running, {} left unfinished, waited {:?}; client routes to {:?}",
            old.name,
            report.in_flight_at_start,
            report.unfinished,
            report.waited,
            client.get_nodes("Counter")
        ));
        old.runtime.shutdown_background();
        // The new process: same name, seeded by the nodes still up.
        let seeds: Vec<SocketAddr> = servers.iter().map(Server::addr).collect();
        let new = Server::start(&old.name, &seeds);
        servers.insert(i, new);
        wait_for(3);
        say(format!(
            "{} restarted and routed to again; {} calls so far, {} failed",
            old.name,
            calls.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed)
        ));
    }

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        client_runtime.block_on(caller).expect("a caller ends");
    }
    let (calls, failures) = (calls.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    say(format!("rolling restart done: {calls} calls, {failures} failed"));
    client_runtime.block_on(client.shutdown());
    for server in servers {
        server.runtime.block_on(server.node.shutdown());
    }
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
