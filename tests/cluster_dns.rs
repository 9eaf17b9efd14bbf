//! Proves cluster formation without hand-written addresses, against a real
//! DNS server on loopback: nodes given only a name (A records) or an SRV
//! name form one cluster; a node added to the records later, or restarted,
//! is found again by the periodic re-resolution; a healed partition
//! reconnects within one period; names that do not resolve are reported and
//! the node keeps running.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use malla::{Error, Node, NodeId};
use malla_test_support::dns::TestDns;
use malla_test_support::{
    nodes::{NodeRuntime, wait_until_free},
    partition::Partition,
    wait::time_until,
};

const COOKIE: &str = "dns-test-cookie-0123";
/// Short, so tests take seconds; the default is 5 s.
const RECONNECT: Duration = Duration::from_millis(500);

/// A port free on every address of 127.0.0.0/8 we use, since A records carry
/// no port: every node listens on its own address, on the same port.
fn shared_port(ips: &[Ipv4Addr]) -> u16 {
    loop {
        let port = std::net::TcpListener::bind((ips[0], 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let free = ips.iter().all(|ip| {
            std::net::TcpListener::bind((*ip, port)).is_ok() && std::net::UdpSocket::bind((*ip, port)).is_ok()
        });
        if free {
            return port;
        }
    }
}

fn node_at(name: &str, addr: SocketAddr, targets: &[String], dns: SocketAddr) -> NodeRuntime {
    NodeRuntime::start(
        Node::builder(name)
            .cookie(COOKIE)
            .listen(addr)
            .connect_targets(targets.iter().cloned())
            .dns_servers([dns])
            .reconnect_interval(RECONNECT),
    )
}

fn ids(nodes: &[&NodeRuntime]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = nodes.iter().map(|n| n.node.id().clone()).collect();
    ids.sort();
    ids
}

/// Whether every node of `nodes` sees exactly the others.
fn formed(nodes: &[&NodeRuntime]) -> bool {
    nodes.iter().all(|n| {
        let others: Vec<NodeId> = ids(nodes).into_iter().filter(|id| id != n.node.id()).collect();
        n.node.nodes() == others
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_given_only_a_dns_name_form_one_cluster_and_find_late_comers() {
    let dns = TestDns::start().await;
    let ips: Vec<Ipv4Addr> = (21..=23).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let port = shared_port(&ips);
    for ip in &ips[..2] {
        dns.add_a("nodes", *ip).await;
    }
    let target = vec![format!("nodes.malla.test:{port}")];
    let a = node_at("dns-a", (ips[0], port).into(), &target, dns.addr);
    let b = node_at("dns-b", (ips[1], port).into(), &target, dns.addr);
    assert!(
        time_until(Duration::from_secs(10), || formed(&[&a, &b]))
            .await
            .is_some(),
        "the first two did not meet"
    );

    // A third node, listening but told nothing, is added to the records: the
    // others find it at their next look-up.
    let c = node_at("dns-c", (ips[2], port).into(), &[], dns.addr);
    c.run(c.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    dns.add_a("nodes", ips[2]).await;
    let joined = time_until(Duration::from_secs(10), || formed(&[&a, &b, &c]))
        .await
        .expect("the late comer joined");
    eprintln!("a node added to DNS joined after {joined:?} (reconnect period {RECONNECT:?})");
    assert!(joined < RECONNECT + Duration::from_secs(2), "took {joined:?}");
    assert_eq!(GeometryClient::new(&a.node).add(1, 2).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_given_only_an_srv_name_form_one_cluster() {
    let dns = TestDns::start().await;
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    dns.add_a("host", Ipv4Addr::LOCALHOST).await;
    for port in &ports {
        dns.add_srv("_malla._tcp", "host", *port).await;
    }
    let target = vec!["_malla._tcp.malla.test".to_string()];
    let nodes: Vec<NodeRuntime> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            node_at(
                &format!("srv-{i}"),
                (Ipv4Addr::LOCALHOST, *port).into(),
                &target,
                dns.addr,
            )
        })
        .collect();
    let refs: Vec<&NodeRuntime> = nodes.iter().collect();
    let took = time_until(Duration::from_secs(10), || formed(&refs))
        .await
        .expect("the SRV cluster formed");
    eprintln!("an SRV cluster of 3 formed in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_the_same_address_rejoins() {
    let dns = TestDns::start().await;
    let ips: Vec<Ipv4Addr> = (31..=32).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let port = shared_port(&ips);
    for ip in &ips {
        dns.add_a("restart", *ip).await;
    }
    let target = vec![format!("restart.malla.test:{port}")];
    let a = node_at("restart-a", (ips[0], port).into(), &target, dns.addr);
    let mut b = node_at("restart-b", (ips[1], port).into(), &target, dns.addr);
    assert!(
        time_until(Duration::from_secs(10), || formed(&[&a, &b]))
            .await
            .is_some()
    );

    b.kill();
    assert!(
        time_until(Duration::from_secs(5), || a.node.nodes().is_empty())
            .await
            .is_some()
    );
    // Same name, same address, new process state.
    assert!(wait_until_free((ips[1], port).into(), Duration::from_secs(5)));
    let b = node_at("restart-b", (ips[1], port).into(), &target, dns.addr);
    b.run(b.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    let back = time_until(Duration::from_secs(10), || {
        formed(&[&a, &b]) && !a.node.get_nodes("Geometry").is_empty()
    })
    .await
    .expect("the restarted node rejoined");
    eprintln!("a restarted node rejoined after {back:?}");
    assert_eq!(GeometryClient::new(&a.node).add(2, 2).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_reconnects_within_one_period() {
    let dns = TestDns::start().await;
    let ips: Vec<Ipv4Addr> = (41..=42).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let port = shared_port(&ips);
    for ip in &ips {
        dns.add_a("heal", *ip).await;
    }
    let target = vec![format!("heal.malla.test:{port}")];
    let a = node_at("heal-a", (ips[0], port).into(), &target, dns.addr);
    let b = node_at("heal-b", (ips[1], port).into(), &target, dns.addr);
    assert!(
        time_until(Duration::from_secs(10), || formed(&[&a, &b]))
            .await
            .is_some()
    );

    let partition = match Partition::isolate(ips[1]) {
        Ok(partition) => partition,
        Err(why) if std::env::var_os("MALLA_SKIP_PARTITION_TESTS").is_some() => {
            eprintln!("skipping the partition test: {why}");
            return;
        }
        Err(why) => panic!("the partition test needs root and nftables ({why}); or set MALLA_SKIP_PARTITION_TESTS=1"),
    };
    assert!(
        time_until(Duration::from_secs(10), || a.node.nodes().is_empty())
            .await
            .is_some(),
        "the partition was not seen"
    );
    partition.heal();
    let healed = time_until(Duration::from_secs(10), || formed(&[&a, &b]))
        .await
        .expect("the two sides reconnected");
    eprintln!("a healed partition reconnected after {healed:?}");
    assert!(healed < RECONNECT + Duration::from_secs(2), "took {healed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_do_not_resolve_are_reported_and_the_node_keeps_running() {
    let logs = malla_test_support::logs::capture();
    let dns = TestDns::start().await;
    dns.add_srv("_empty._tcp", ".", 7000).await;
    let node = node_at(
        "lonely",
        "127.0.0.1:0".parse().unwrap(),
        &["missing.malla.test:7000".into(), "_empty._tcp.malla.test".into()],
        dns.addr,
    );
    node.run(node.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    tokio::time::sleep(RECONNECT * 3).await;
    // Still serving.
    assert_eq!(GeometryClient::new(&node.node).add(1, 2).await.unwrap(), 3);
    // Each target was named in a warning, once, not every period.
    let missing = logs.lines_with("cannot resolve `missing.malla.test:7000`");
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert!(
        missing[0].contains("WARN") && missing[0].contains("lonely"),
        "{missing:#?}"
    );
    let empty = logs.lines_with("cannot resolve `_empty._tcp.malla.test`: the SRV answer has no targets");
    assert_eq!(empty.len(), 1, "{empty:#?}");

    match node.run(node.node.cluster_connect("missing.malla.test:7000")) {
        Err(Error::Resolve { target, reason }) => {
            assert_eq!(target, "missing.malla.test:7000");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a resolve error, got {other:?}"),
    }
    match node.run(node.node.cluster_connect("_empty._tcp.malla.test")) {
        Err(Error::Resolve { reason, .. }) => assert_eq!(reason, "the SRV answer has no targets"),
        other => panic!("expected a resolve error, got {other:?}"),
    }
    assert!(matches!(
        node.run(node.node.cluster_connect("not a name")),
        Err(Error::Config(message)) if message.contains("invalid connect target `not a name`")
    ));
    // A malformed target in the builder is an error at start, naming it.
    let bad = Node::builder("bad")
        .cookie(COOKIE)
        .connect_targets(["nodes.malla.test"])
        .start()
        .await;
    assert!(matches!(bad, Err(Error::Config(message)) if message.contains("`nodes.malla.test`")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_connect_joins_every_node_a_name_gives() {
    let dns = TestDns::start().await;
    let ips: Vec<Ipv4Addr> = (51..=52).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let port = shared_port(&ips);
    let a = node_at("join-a", (ips[0], port).into(), &[], dns.addr);
    let b = node_at("join-b", (ips[1], port).into(), &[], dns.addr);
    for ip in &ips {
        dns.add_a("join", *ip).await;
    }
    let client = Node::builder("join-client")
        .cookie(COOKIE)
        .dns_servers([dns.addr])
        .start()
        .await
        .unwrap();
    let mut joined = client
        .cluster_connect(&format!("join.malla.test:{port}"))
        .await
        .unwrap();
    joined.sort();
    assert_eq!(joined, ids(&[&a, &b]));
}
