//! A service started somewhere (`Node::spawn_somewhere`) on three node
//! processes: one runs an instance, callers reach it from anywhere; SIGKILL
//! that process and another builds a fresh instance, which calls fail over
//! to. In strict mode the new instance's fencing token is larger and the
//! old owner is gone before it starts; the time to a new answer is printed.
//! A drained owner's instance is dropped and rebuilt elsewhere.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use malla::{CallOptions, Node, ServeOptions, Singleton, SingletonMode};
use malla_test_support::nodes::NodeRuntime;
use malla_test_support::process::{Killed, role};
use malla_test_support::wait::wait_until_blocking;

const COOKIE: &str = "placement-test-cookie";

#[malla::service(global)]
pub trait Worker {
    /// `node#build` (the instance's build on its node) and its token.
    async fn whoami(&self) -> (String, Option<u64>);
}

struct Instance {
    name: String,
    token: Option<u64>,
}

impl Worker for Instance {
    async fn whoami(&self) -> (String, Option<u64>) {
        (self.name.clone(), self.token)
    }
}

fn mode(name: &str) -> SingletonMode {
    match name {
        "strict" => SingletonMode::Strict,
        _ => SingletonMode::Gossip,
    }
}

/// Factory of `Worker` instances named after `node` and their build.
fn factory(node: String) -> impl Fn(Option<u64>) -> WorkerServer<Instance> + Send + Sync + 'static {
    let builds = AtomicU64::new(0);
    move |token| {
        let build = builds.fetch_add(1, Ordering::Relaxed) + 1;
        WorkerServer::new(Instance {
            name: format!("{node}#{build}"),
            token,
        })
    }
}

/// One node offering the worker, run as a child process of this binary.
#[test]
#[ignore = "a role: started by the tests below"]
fn placement_node_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let listen: SocketAddr = var("MALLA_PLACE_LISTEN").parse().unwrap();
    let seeds: Vec<SocketAddr> = var("MALLA_PLACE_SEEDS")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let mode = mode(&var("MALLA_PLACE_MODE"));
    let lease = Duration::from_millis(var("MALLA_PLACE_LEASE_MS").parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let name = var("MALLA_PLACE_NAME");
        let builder = Node::builder(name.clone())
            .cookie(COOKIE)
            .listen(listen)
            .seeds(seeds)
            .gossip_interval(Duration::from_millis(100));
        let builder = match mode {
            SingletonMode::Strict => builder.voter(3),
            _ => builder,
        };
        let node = builder.start().await.expect("the node starts");
        let options = ServeOptions::default().singleton(Singleton::new(mode).lease(lease));
        node.spawn_somewhere(factory(name), options).await.expect("offered");
        eprintln!("node {} up", node.id());
        std::future::pending::<()>().await;
    });
}

/// A port free on each of `ips`, TCP and UDP.
fn free_port(ips: &[Ipv4Addr]) -> u16 {
    'search: for _ in 0..100 {
        let probe = std::net::TcpListener::bind((ips[0], 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        for ip in ips {
            let addr = SocketAddr::from((*ip, port));
            if std::net::TcpListener::bind(addr).is_err() || std::net::UdpSocket::bind(addr).is_err() {
                continue 'search;
            }
        }
        return port;
    }
    panic!("no free port on the nodes' addresses");
}

/// Three node processes in `mode` (strict: leases of `lease`) on
/// 127.0.0.`first`.., and a caller.
fn cluster(prefix: &str, first: u8, mode: &str, lease: Duration) -> (Vec<(String, Killed)>, NodeRuntime) {
    let ips: Vec<Ipv4Addr> = (0..3).map(|i| Ipv4Addr::new(127, 0, 0, first + i)).collect();
    let port = free_port(&ips);
    let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::from((*ip, port))).collect();
    let seeds = addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",");
    let children = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let name = format!("{prefix}-{i}");
            let child = role("placement_node_process")
                .env("MALLA_PLACE_NAME", &name)
                .env("MALLA_PLACE_LISTEN", addr.to_string())
                .env("MALLA_PLACE_SEEDS", &seeds)
                .env("MALLA_PLACE_MODE", mode)
                .env("MALLA_PLACE_LEASE_MS", lease.as_millis().to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("the node process starts");
            (name, Killed(child))
        })
        .collect();
    let caller = NodeRuntime::start(
        Node::builder(format!("{prefix}-caller"))
            .cookie(COOKIE)
            .listen((Ipv4Addr::LOCALHOST, 0).into())
            .seeds(addrs)
            .gossip_interval(Duration::from_millis(100)),
    );
    (children, caller)
}

fn worker(caller: &NodeRuntime) -> Arc<WorkerClient> {
    let options = CallOptions::default()
        .timeout(Duration::from_secs(20))
        .sna_retries(200)
        .retry_interval(Duration::from_millis(50));
    Arc::new(WorkerClient::new(&caller.node).with_options(options))
}

/// Whose instance answers now, waiting for one.
fn answer(caller: &NodeRuntime, worker: &WorkerClient) -> (String, Option<u64>) {
    let mut last = None;
    let answered = wait_until_blocking(Duration::from_secs(30), || match caller.run(worker.whoami()) {
        Ok(answer) => {
            last = Some(answer);
            true
        }
        Err(_) => false,
    });
    assert!(answered, "some node runs the worker");
    last.unwrap()
}

fn node_of(instance: &str) -> &str {
    instance.split('#').next().unwrap()
}

fn killed_owner_is_restarted_elsewhere(mode_name: &str, first: u8, lease: Duration) {
    let prefix = format!("place-{mode_name}-{}", lease.as_millis());
    let (mut children, caller) = cluster(&prefix, first, mode_name, lease);
    let worker = worker(&caller);
    let (instance, token) = answer(&caller, &worker);
    println!("{mode_name}: {instance} runs it, token {token:?}");
    if mode_name == "strict" {
        assert!(instance.ends_with("#1"), "built once, on its first activation");
    }
    assert_eq!(token.is_some(), mode_name == "strict");
    // It stays where it is.
    for _ in 0..20 {
        assert_eq!(caller.run(worker.whoami()).unwrap().0, instance);
    }

    let owner = node_of(&instance).to_owned();
    let at = children.iter().position(|(name, _)| *name == owner).unwrap();
    let killed_at = Instant::now();
    children[at].1.kill();
    let (next, next_token) = answer(&caller, &worker);
    let took = killed_at.elapsed();
    println!(
        "{mode_name} mode (lease {lease:?}): owner SIGKILLed, {next} answers after {took:?} (token {next_token:?})"
    );
    assert_ne!(node_of(&next), owner, "another node runs it");
    if mode_name == "strict" {
        // Only ever one activation: no node built an instance before.
        assert!(next.ends_with("#1"), "a fresh instance: {next}");
        assert!(
            next_token > token,
            "the new lease fences the old: {next_token:?} > {token:?}"
        );
    }
    for _ in 0..20 {
        assert_eq!(caller.run(worker.whoami()).unwrap().0, next, "one instance answers");
    }
}

#[test]
fn gossip_mode_a_sigkilled_owner_is_restarted_elsewhere() {
    killed_owner_is_restarted_elsewhere("gossip", 111, Duration::from_secs(2));
}

/// With the default lease (2 s) and a shorter one: the failover is the
/// lease, plus an election when the owner also led the group.
#[test]
fn strict_mode_a_sigkilled_owner_is_restarted_elsewhere() {
    killed_owner_is_restarted_elsewhere("strict", 121, malla::DEFAULT_SINGLETON_LEASE);
    killed_owner_is_restarted_elsewhere("strict", 141, Duration::from_secs(1));
}

#[test]
fn a_drained_owner_drops_its_instance_and_another_node_builds_one() {
    let builder = |name: String, ip: u8, seed: Option<SocketAddr>| {
        let builder = Node::builder(name)
            .cookie(COOKIE)
            .listen((Ipv4Addr::new(127, 0, 0, ip), 0).into())
            .gossip_interval(Duration::from_millis(100));
        builder.seeds(seed)
    };
    let mut nodes: Vec<NodeRuntime> = Vec::new();
    for i in 0..3u8 {
        let seed = nodes.first().map(NodeRuntime::addr);
        nodes.push(NodeRuntime::start(builder(format!("drop-{i}"), 131 + i, seed)));
    }
    for node in &nodes {
        let name = node.node.id().to_string();
        node.run(node.node.spawn_somewhere(factory(name), ServeOptions::default()))
            .unwrap();
    }
    let caller = &NodeRuntime::start(builder("drop-caller".into(), 1, Some(nodes[0].addr())));
    // Until the views meet, each node may run its own (gossip mode).
    let one = || nodes.iter().filter(|n| n.node.singletons()[0].active).count() == 1;
    assert!(wait_until_blocking(Duration::from_secs(10), one), "one instance runs");
    let worker = worker(caller);
    let (instance, _) = answer(caller, &worker);
    let owner = nodes
        .iter()
        .find(|n| n.node.id().as_str() == node_of(&instance))
        .unwrap();
    owner.run(owner.node.drain(Duration::from_secs(5))).unwrap();
    let moved = wait_until_blocking(Duration::from_secs(15), || {
        caller
            .run(worker.whoami())
            .is_ok_and(|(next, _)| node_of(&next) != node_of(&instance))
    });
    assert!(moved, "another node builds an instance");
    let (next, _) = caller.run(worker.whoami()).unwrap();
    println!("drained {instance}, now {next}");
    let one = || nodes.iter().filter(|n| n.node.singletons()[0].active).count() == 1;
    assert!(wait_until_blocking(Duration::from_secs(10), one), "one instance runs");
}
