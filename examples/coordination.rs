//! One of something, cluster-wide: three voters form a consensus group; two
//! workers compete for a lock and a global name. The worker holding both is
//! killed like a crash; the other takes them over once their leases run
//! out, with higher fencing tokens, and a client bound to the name follows
//! it. Then the group's leader is killed, and locks are granted again.
//!
//! ```text
//! cargo run --example coordination
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use malla::{Error, Node, NodeBuilder};
use tokio::runtime::Runtime;

/// What a worker does; says which worker answered.
#[malla::service(global)]
pub trait Reports {
    async fn who(&self) -> String;
}

struct Worker(String);

impl Reports for Worker {
    async fn who(&self) -> String {
        self.0.clone()
    }
}

const COOKIE: &str = "malla-coordination-demo-cookie";

/// A node on its own runtime, so the demo can kill it like a crash.
struct Process {
    node: Node,
    runtime: Option<Runtime>,
}

impl Process {
    fn start(builder: NodeBuilder) -> Process {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let node = std::thread::scope(|s| s.spawn(|| runtime.block_on(builder.start())).join().unwrap())
            .expect("the node starts");
        Process {
            node,
            runtime: Some(runtime),
        }
    }

    fn run<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().expect("alive");
        std::thread::scope(|s| s.spawn(|| runtime.block_on(fut)).join().unwrap())
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn builder(name: &str, seeds: &[SocketAddr]) -> NodeBuilder {
    Node::builder(name)
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse().unwrap())
        .seeds(seeds.iter().copied())
        .gossip_interval(Duration::from_millis(100))
}

fn main() -> Result<(), Error> {
    let start = Instant::now();
    let say = |what: String| println!("{:>7.2}s  {what}", start.elapsed().as_secs_f64());

    let first = Process::start(builder("voter1", &[]).voter(3));
    let seed = first.node.local_addr().unwrap();
    let mut voters = vec![first];
    for name in ["voter2", "voter3"] {
        voters.push(Process::start(builder(name, &[seed]).voter(3)));
    }
    let mut workers: Vec<Process> = ["worker-a", "worker-b"]
        .iter()
        .map(|name| {
            let worker = Process::start(builder(name, &[seed]));
            worker
                .run(worker.node.serve(ReportsServer::new(Worker(name.to_string()))))
                .unwrap();
            worker
        })
        .collect();
    let client = Process::start(builder("client", &[seed]));
    let status = client.run(async {
        loop {
            match client.node.group_status().await {
                Ok(status) if status.voters.len() == 3 => return status,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    say(format!(
        "the group formed: voters {:?}, leader {}",
        status.voters.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        status.leader.as_ref().map_or("-", |l| l.as_str())
    ));

    // worker-a takes the lock and the name; worker-b finds them taken.
    let a = &workers[0];
    let guard = a.run(async { a.node.lock("nightly-report").ttl(Duration::from_secs(3)).await })?;
    say(format!(
        "worker-a holds `nightly-report`, fencing token {}",
        guard.token()
    ));
    let token = a.run(a.node.register_name("reports-primary", "Reports"))?;
    say(format!("worker-a registered `reports-primary`, token {token}"));
    let b = &workers[1];
    match b.run(b.node.try_lock("nightly-report"))? {
        None => say("worker-b: `nightly-report` is held elsewhere".into()),
        Some(_) => unreachable!("held once"),
    }
    if let Err(err) = b.run(b.node.register_name("reports-primary", "Reports")) {
        say(format!("worker-b: {err}"));
    }
    let reports = ReportsClient::named(&client.node, "reports-primary");
    say(format!("the named client reaches {}", client.run(reports.who())?));

    // worker-a crashes; its leases run out; worker-b takes over.
    workers[0].kill();
    // Its node is gone: the guard has nothing left to release it through.
    drop(guard);
    let killed = Instant::now();
    say("worker-a killed".into());
    let b = &workers[1];
    let taken = b.run(async {
        b.node
            .lock("nightly-report")
            .ttl(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .await
    })?;
    say(format!(
        "worker-b holds `nightly-report` after {:.1} s, token {} (higher)",
        killed.elapsed().as_secs_f64(),
        taken.token()
    ));
    let token = b.run(async {
        loop {
            match b.node.register_name("reports-primary", "Reports").await {
                Err(Error::NameTaken { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
                other => return other,
            }
        }
    })?;
    say(format!(
        "worker-b registered `reports-primary` after {:.1} s, token {token}",
        killed.elapsed().as_secs_f64()
    ));
    say(format!("the named client now reaches {}", client.run(reports.who())?));
    b.run(taken.release())?;

    // The leader crashes; the other two elect a new one.
    let leader = client.run(client.node.group_status())?.leader.expect("a leader");
    let at = voters.iter().position(|v| *v.node.id() == leader).unwrap();
    voters[at].kill();
    let killed = Instant::now();
    say(format!("{leader} (the leader) killed"));
    let again = client.run(async { client.node.lock("nightly-report").await })?;
    say(format!(
        "a lock granted again after {:.2} s, token {}",
        killed.elapsed().as_secs_f64(),
        again.token()
    ));
    let status = client.run(client.node.group_status())?;
    say(format!(
        "new leader {}, term {}",
        status.leader.as_ref().map_or("-", |l| l.as_str()),
        status.term
    ));
    client.run(again.release())?;
    for mut process in voters.into_iter().chain(workers) {
        process.kill();
    }
    Ok(())
}
