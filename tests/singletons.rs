//! Singleton services on real nodes (each on its own runtime; partitions
//! cut with nftables on loopback addresses of their own): one instance
//! active, callers failing over to it from standbys, a killed owner
//! replaced, and what a partition does in each mode: in gossip mode both
//! sides have an owner for a while (the test counts it), in strict mode a
//! checker over the activation log finds no two active leases overlapping.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use malla::{CallOptions, Deactivation, NodeBuilder, ServeOptions, Singleton, SingletonHooks, SingletonMode};
use malla_test_support::nodes::NodeRuntime;
use malla_test_support::partition::Partition;
use malla_test_support::wait::wait_until_blocking;

const COOKIE: &str = "singletons-test-cookie";

#[malla::service(global)]
pub trait Ticker {
    /// The node whose instance answered.
    async fn who(&self) -> String;
}

struct Named(String);

impl Ticker for Named {
    async fn who(&self) -> String {
        self.0.clone()
    }
}

/// Every activation and deactivation of every node, on one clock: node,
/// active, when, token.
#[derive(Default)]
struct Log(Mutex<Vec<Change>>);

type Change = (String, bool, Instant, Option<u64>);

impl Log {
    /// Each node's active intervals: (node, from, until or now, token).
    fn intervals(&self) -> Vec<(String, Instant, Instant, Option<u64>)> {
        let log = self.0.lock().unwrap();
        let mut open: Vec<(String, Instant, Option<u64>)> = Vec::new();
        let mut closed = Vec::new();
        for (node, active, at, token) in log.iter() {
            if *active {
                open.push((node.clone(), *at, *token));
            } else if let Some(i) = open.iter().position(|(n, ..)| n == node) {
                let (node, from, token) = open.remove(i);
                closed.push((node, from, *at, token));
            }
        }
        let now = Instant::now();
        closed.extend(open.into_iter().map(|(node, from, token)| (node, from, now, token)));
        closed
    }

    /// The total time two nodes were active at once.
    fn overlap(&self) -> Duration {
        let intervals = self.intervals();
        let mut total = Duration::ZERO;
        for (i, a) in intervals.iter().enumerate() {
            for b in &intervals[i + 1..] {
                let (from, until) = (a.1.max(b.1), a.2.min(b.2));
                if a.0 != b.0 && until > from {
                    total += until - from;
                }
            }
        }
        total
    }
}

struct Hooks {
    node: String,
    log: Arc<Log>,
}

impl SingletonHooks for Hooks {
    fn on_activate(&self, token: Option<u64>) {
        self.log
            .0
            .lock()
            .unwrap()
            .push((self.node.clone(), true, Instant::now(), token));
    }

    fn on_deactivate(&self, reason: &Deactivation) {
        println!("{} stands by: {reason:?}", self.node);
        self.log
            .0
            .lock()
            .unwrap()
            .push((self.node.clone(), false, Instant::now(), None));
    }
}

fn builder(name: &str, ip: Ipv4Addr, seed: Option<std::net::SocketAddr>) -> NodeBuilder {
    let builder = malla::Node::builder(name)
        .cookie(COOKIE)
        .listen((ip, 0).into())
        .gossip_interval(Duration::from_millis(100));
    match seed {
        Some(seed) => builder.seeds([seed]),
        None => builder,
    }
}

/// `n` nodes on 127.0.0.`first`.. serving `Ticker` as a singleton in `mode`
/// (voters of a group of `n` in strict mode), and a caller that does not
/// serve it, all seeing each other.
fn cluster(prefix: &str, first: u8, n: u8, mode: SingletonMode, log: &Arc<Log>) -> (Vec<NodeRuntime>, NodeRuntime) {
    let mut nodes: Vec<NodeRuntime> = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let seed = nodes.first().map(NodeRuntime::addr);
        let builder = builder(&name, Ipv4Addr::new(127, 0, 0, first + i), seed);
        let builder = match mode {
            SingletonMode::Strict => builder.voter(n as usize),
            _ => builder,
        };
        nodes.push(NodeRuntime::start(builder));
    }
    let caller = NodeRuntime::start(builder(
        &format!("{prefix}-caller"),
        Ipv4Addr::LOCALHOST,
        Some(nodes[0].addr()),
    ));
    for node in &nodes {
        let hooks = Hooks {
            node: node.node.id().to_string(),
            log: Arc::clone(log),
        };
        let singleton = Singleton::new(mode).lease(Duration::from_secs(2)).hooks(hooks);
        let options = ServeOptions::default().singleton(singleton);
        let name = node.node.id().to_string();
        node.run(node.node.serve_with(TickerServer::new(Named(name)), options))
            .unwrap();
    }
    let formed = wait_until_blocking(Duration::from_secs(20), || {
        caller.node.get_nodes("Ticker").len() == n as usize
            && nodes.iter().all(|x| x.node.get_nodes("Ticker").len() == n as usize)
            && active(&nodes).len() == 1
    });
    assert!(formed, "{prefix}: formed, one instance active: {:?}", active(&nodes));
    (nodes, caller)
}

fn active(nodes: &[NodeRuntime]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.node.singletons().iter().any(|s| s.active))
        .map(|n| n.node.id().to_string())
        .collect()
}

fn index_of(nodes: &[NodeRuntime], name: &str) -> usize {
    nodes.iter().position(|n| n.node.id().as_str() == name).unwrap()
}

fn calls(caller: &NodeRuntime) -> TickerClient {
    let options = CallOptions::default()
        .timeout(Duration::from_secs(10))
        .sna_retries(40)
        .retry_interval(Duration::from_millis(100));
    TickerClient::new(&caller.node).with_options(options)
}

#[test]
fn gossip_mode_one_owner_everywhere_and_a_killed_owner_replaced() {
    let log = Arc::new(Log::default());
    let (mut nodes, caller) = cluster("gossip", 11, 3, SingletonMode::Gossip, &log);
    let owner = active(&nodes).remove(0);
    // Every node, the caller too, names the same owner.
    for node in nodes.iter().chain([&caller]) {
        assert_eq!(node.node.singleton_owner("Ticker").unwrap().as_str(), owner);
    }
    let status = &nodes[index_of(&nodes, &owner)].node.singletons()[0];
    println!("owner {owner}: {status:?}");
    assert_eq!(
        (status.mode, status.activations, status.token),
        (SingletonMode::Gossip, 1, None)
    );
    // Calls reach it from any standby's side: standbys answer "not available".
    let client = calls(&caller);
    for _ in 0..10 {
        assert_eq!(caller.run(client.who()).unwrap(), owner);
    }
    // Straight to it with the service's name as the key.
    let keyed = TickerClient::new(&caller.node).with_options(CallOptions::default().key("Ticker"));
    assert_eq!(caller.run(keyed.who()).unwrap(), owner);

    let killed_at = Instant::now();
    let at = index_of(&nodes, &owner);
    nodes[at].kill();
    let survivors: Vec<NodeRuntime> = nodes.into_iter().filter(|n| n.node.id().as_str() != owner).collect();
    let replaced = wait_until_blocking(Duration::from_secs(15), || active(&survivors).len() == 1);
    let took = killed_at.elapsed();
    println!("gossip mode: a killed owner replaced after {took:?}");
    assert!(replaced, "a standby takes over");
    let next = active(&survivors).remove(0);
    assert_ne!(next, owner);
    assert_eq!(
        caller.run(client.who()).unwrap(),
        next,
        "calls fail over to the new owner"
    );
}

#[test]
fn gossip_mode_a_partition_makes_two_owners_for_a_while() {
    let log = Arc::new(Log::default());
    let (nodes, caller) = cluster("split", 21, 3, SingletonMode::Gossip, &log);
    let owner = active(&nodes).remove(0);
    let ip = Ipv4Addr::new(127, 0, 0, 21 + index_of(&nodes, &owner) as u8);
    let Some(partition) = Partition::isolate_or_skip(ip, "the gossip singleton partition test") else {
        return;
    };
    let others: Vec<&NodeRuntime> = nodes.iter().filter(|n| n.node.id().as_str() != owner).collect();
    let split = wait_until_blocking(Duration::from_secs(15), || {
        others.iter().filter(|n| n.node.singletons()[0].active).count() == 1
    });
    assert!(split, "the majority side picks its own owner");
    assert_eq!(
        active(&nodes).len(),
        2,
        "and the cut-off owner still thinks it owns it: two owners"
    );
    std::thread::sleep(Duration::from_secs(1));
    partition.heal();
    let healed = wait_until_blocking(Duration::from_secs(20), || active(&nodes).len() == 1);
    assert!(
        healed,
        "one stands by once the sides see each other: {:?}",
        active(&nodes)
    );
    let overlap = log.overlap();
    println!("gossip mode: two owners for {overlap:?} across a partition (the mode admits it)");
    assert!(overlap > Duration::from_millis(500));
    drop(caller);
}

#[test]
fn strict_mode_never_two_leases_at_once_across_a_partition_or_a_kill() {
    let log = Arc::new(Log::default());
    let (mut nodes, caller) = cluster("strict", 31, 3, SingletonMode::Strict, &log);
    let owner = active(&nodes).remove(0);
    let status = nodes[index_of(&nodes, &owner)].node.singletons()[0].clone();
    println!("owner {owner}: {status:?}");
    let first_token = status.token.expect("a strict owner has a token");
    let client = calls(&caller);
    assert_eq!(caller.run(client.who()).unwrap(), owner);

    // Cut the owner off: its lease runs out, another node's begins after.
    let ip = Ipv4Addr::new(127, 0, 0, 31 + index_of(&nodes, &owner) as u8);
    if let Some(partition) = Partition::isolate_or_skip(ip, "the strict singleton partition test") {
        let cut_at = Instant::now();
        let others: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].node.id().as_str() != owner)
            .collect();
        let moved = wait_until_blocking(Duration::from_secs(20), || {
            others.iter().any(|&i| nodes[i].node.singletons()[0].active)
        });
        assert!(moved, "a node on the quorum side takes over");
        println!(
            "strict mode: owner cut off, another active after {:?}",
            cut_at.elapsed()
        );
        assert!(
            !nodes[index_of(&nodes, &owner)].node.singletons()[0].active,
            "the cut-off owner stood by"
        );
        std::thread::sleep(Duration::from_secs(2));
        partition.heal();
        std::thread::sleep(Duration::from_secs(3));
    }
    let owner = active(&nodes).remove(0);
    let token = nodes[index_of(&nodes, &owner)].node.singletons()[0].token.unwrap();
    assert!(token > first_token || owner == status.owner.unwrap().as_str());

    // Kill the owner like a crash: another is active a lease later.
    let killed_at = Instant::now();
    let at = index_of(&nodes, &owner);
    nodes[at].kill();
    let survivors: Vec<NodeRuntime> = nodes.into_iter().filter(|n| n.node.id().as_str() != owner).collect();
    let replaced = wait_until_blocking(Duration::from_secs(20), || active(&survivors).len() == 1);
    println!("strict mode: a killed owner replaced after {:?}", killed_at.elapsed());
    assert!(replaced);
    assert_eq!(caller.run(client.who()).unwrap(), active(&survivors)[0]);

    let intervals = log.intervals();
    for (node, from, until, token) in &intervals {
        println!("  active: {node} token {token:?} for {:?}", *until - *from);
    }
    let mut tokens: Vec<u64> = intervals.iter().filter_map(|i| i.3).collect();
    let sorted = tokens.windows(2).all(|w| w[0] < w[1]);
    tokens.dedup();
    assert!(sorted, "each activation's token is above the one before");
    // The log holds activations of killed nodes as still open: the kill
    // ended them, so count only up to it.
    let overlap: Duration = {
        let cut = |i: &(String, Instant, Instant, Option<u64>)| (i.0.clone(), i.1, i.2.min(killed_at.max(i.1)), i.3);
        let clipped: Vec<_> = intervals
            .iter()
            .map(|i| if i.0 == owner { cut(i) } else { i.clone() })
            .collect();
        let mut total = Duration::ZERO;
        for (i, a) in clipped.iter().enumerate() {
            for b in &clipped[i + 1..] {
                let (from, until) = (a.1.max(b.1), a.2.min(b.2));
                if a.0 != b.0 && until > from {
                    total += until - from;
                }
            }
        }
        total
    };
    println!("strict mode: {} activations, overlap {overlap:?}", intervals.len());
    assert_eq!(overlap, Duration::ZERO, "never two active leases at once");
}

#[test]
fn draining_the_owner_hands_over_with_no_failed_call() {
    for mode in [SingletonMode::Gossip, SingletonMode::Strict] {
        let log = Arc::new(Log::default());
        let first = if mode == SingletonMode::Gossip { 41 } else { 51 };
        let (nodes, caller) = cluster(&format!("drain-{}", mode.as_str()), first, 3, mode, &log);
        let owner = active(&nodes).remove(0);
        let client = calls(&caller);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (client, stop) = (client.clone(), Arc::clone(&stop));
            caller.spawn(async move {
                let (mut ok, mut failed, mut slowest) = (0u32, 0u32, Duration::ZERO);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    match client.who().await {
                        Ok(_) => ok += 1,
                        Err(err) => {
                            eprintln!("failed: {err}");
                            failed += 1;
                        }
                    }
                    slowest = slowest.max(started.elapsed());
                }
                (ok, failed, slowest)
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let drained = &nodes[index_of(&nodes, &owner)];
        let report = drained.run(drained.node.drain(Duration::from_secs(5))).unwrap();
        let others: Vec<&NodeRuntime> = nodes.iter().filter(|n| n.node.id().as_str() != owner).collect();
        assert!(wait_until_blocking(Duration::from_secs(15), || {
            others.iter().filter(|n| n.node.singletons()[0].active).count() == 1
        }));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed, slowest) = caller.run(load).unwrap();
        // From the old owner standing by to the new one active.
        let changes = log.0.lock().unwrap().clone();
        let stood_by = changes.iter().find(|c| c.0 == owner && !c.1).map(|c| c.2).unwrap();
        let next = changes
            .iter()
            .find(|c| c.0 != owner && c.1 && c.2 >= stood_by)
            .map(|c| c.2);
        let gap = next.map(|n| n - stood_by).unwrap_or_default();
        println!(
            "{} mode: drained the owner ({report:?}): {ok} calls answered, {failed} failed, slowest {slowest:?}, hand-over gap {gap:?}",
            mode.as_str()
        );
        assert_eq!(failed, 0, "no call fails across the hand-over");
        assert!(ok > 0);
    }
}

#[malla::service(global, singleton)]
pub trait Clock {
    async fn now(&self) -> u64;
}

impl Clock for Named {
    async fn now(&self) -> u64 {
        7
    }
}

#[test]
fn the_attribute_makes_a_plain_serve_a_singleton() {
    let node = NodeRuntime::start(builder("attr-single", Ipv4Addr::LOCALHOST, None));
    node.run(node.node.serve(ClockServer::new(Named("attr-single".into()))))
        .unwrap();
    assert!(wait_until_blocking(Duration::from_secs(5), || node
        .node
        .singletons()
        .iter()
        .any(|s| s.service == "Clock"
            && s.active
            && s.mode == SingletonMode::Gossip)));
    assert_eq!(node.run(ClockClient::new(&node.node).now()).unwrap(), 7);
}
