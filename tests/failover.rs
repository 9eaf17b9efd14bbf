//! Proves failover between real nodes on loopback (each on its own runtime):
//! an idempotent call loop rides through a node dying with zero errors, a
//! non-idempotent call in flight on the dying node gets `NodeDown` instead of
//! running twice, a dead node leaves `get_nodes` everywhere within 3 s, a
//! partitioned one too (nftables drop rules: needs root), and a node leaving
//! gracefully is dropped before anyone notices it is gone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use malla::{CallOptions, Error, NodeId};
use malla_test_support::{
    nodes::{NodeRuntime, cluster},
    partition::Partition,
    wait::time_until,
};

const COOKIE: &str = "failover-test-cookie";

/// Three servers and a caller, all serving `Geometry` but the caller.
fn servers_and_caller(prefix: &str) -> (Vec<NodeRuntime>, NodeRuntime) {
    let mut nodes = cluster(prefix, 4, COOKIE);
    let caller = nodes.pop().unwrap();
    for node in &nodes {
        node.run(node.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    }
    let seen = caller.run(caller.node.wait_for_services(&["Geometry"], Duration::from_secs(5)));
    seen.unwrap();
    let all = time_until_blocking(|| caller.node.get_nodes("Geometry").len() == 3);
    assert!(all, "the caller sees the three servers");
    (nodes, caller)
}

fn time_until_blocking(done: impl FnMut() -> bool) -> bool {
    malla_test_support::wait::wait_until_blocking(Duration::from_secs(5), done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_costs_idempotent_callers_nothing() {
    let (mut servers, caller) = servers_and_caller("kill");
    let geo = GeometryClient::new(&caller.node);
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (geo, stop, calls, errors) = (geo.clone(), stop.clone(), calls.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match geo.count().await {
                        Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            eprintln!("idempotent call failed: {err}");
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();

    // A non-idempotent call in flight on the node about to die.
    let victim = servers[1].node.id().clone();
    let in_flight = {
        let geo = geo.with_options(
            CallOptions::default()
                .nodes([victim.clone()])
                .timeout(Duration::from_secs(30)),
        );
        tokio::spawn(async move { geo.sleep_ms(20_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = calls.load(Ordering::Relaxed);
    let killed = Instant::now();
    servers[1].kill();

    match in_flight.await.unwrap() {
        Err(Error::NodeDown { node }) => assert_eq!(node, victim),
        other => panic!("expected NodeDown for the call in flight, got {other:?}"),
    }
    let survivors = [&servers[0], &servers[2], &caller];
    let left = time_until(Duration::from_secs(5), || {
        survivors
            .iter()
            .all(|n| !n.node.get_nodes("Geometry").contains(&victim) && !n.node.nodes().contains(&victim))
    })
    .await
    .expect("the dead node leaves everywhere");
    eprintln!("dead node left get_nodes on every survivor after {left:?}");
    assert!(left < Duration::from_secs(3), "took {:?}", killed.elapsed());

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert!(calls.load(Ordering::Relaxed) > before, "the loop kept calling");
    assert_eq!(errors.load(Ordering::Relaxed), 0, "idempotent calls failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_call_is_never_sent_twice() {
    let (mut servers, caller) = servers_and_caller("once");
    // Route every call to server 0 first, then the others.
    let order: Vec<NodeId> = servers.iter().map(|s| s.node.id().clone()).collect();
    let geo = GeometryClient::new(&caller.node).with_options(
        CallOptions::default()
            .nodes(order.clone())
            .timeout(Duration::from_secs(30)),
    );
    let in_flight = tokio::spawn(async move { geo.sleep_ms(10_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    servers[0].kill();
    // It may have run on the dead node: not retried on the next one.
    assert!(matches!(in_flight.await.unwrap(), Err(Error::NodeDown { node }) if node == order[0]));
    // A call that surely did not run there (the node is known down) moves on.
    let geo = GeometryClient::new(&caller.node).with_options(CallOptions::default().nodes(order.clone()));
    assert_eq!(geo.add(1, 2).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_leaves_within_three_seconds() {
    // The victim lives on its own loopback address, so the partition can
    // cut everything it sends and receives.
    let isolated: std::net::Ipv4Addr = "127.0.0.2".parse().unwrap();
    let mut servers = cluster("part", 2, COOKIE);
    let victim_node = NodeRuntime::start(
        malla::Node::builder("part-victim")
            .cookie(COOKIE)
            .listen((isolated, 0).into())
            .seeds([servers[0].addr()]),
    );
    let caller = servers.pop().unwrap();
    servers.push(victim_node);
    for node in &servers {
        node.run(node.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    }
    assert!(malla_test_support::wait::wait_until_blocking(
        Duration::from_secs(10),
        || {
            caller.node.get_nodes("Geometry").len() == 2
                && servers.iter().all(|s| s.node.get_nodes("Geometry").len() == 2)
        }
    ));
    let victim = servers[1].node.id().clone();
    let partition = match Partition::isolate(isolated) {
        Ok(partition) => partition,
        Err(why) if std::env::var_os("MALLA_SKIP_PARTITION_TESTS").is_some() => {
            eprintln!("skipping the partition test: {why}");
            return;
        }
        Err(why) => panic!(
            "the partition test needs root and nftables ({why}); run it as root, or set MALLA_SKIP_PARTITION_TESTS=1"
        ),
    };
    let geo = GeometryClient::new(&caller.node).with_options(CallOptions::default().timeout(Duration::from_secs(5)));
    let survivors = [&servers[0], &caller];
    let left = time_until(Duration::from_secs(8), || {
        survivors
            .iter()
            .all(|n| !n.node.get_nodes("Geometry").contains(&victim))
    })
    .await
    .expect("the partitioned node leaves everywhere");
    eprintln!("partitioned node left get_nodes on every survivor after {left:?}");
    assert!(left < Duration::from_secs(3), "took {left:?}");
    // Calls from then on never wait on the silent node.
    for _ in 0..20 {
        geo.add(1, 1).await.unwrap();
    }

    // Healed: it comes back.
    partition.heal();
    let back = time_until(Duration::from_secs(15), || {
        survivors.iter().all(|n| n.node.get_nodes("Geometry").contains(&victim))
    })
    .await;
    assert!(back.is_some(), "the node did not come back after the partition healed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_before_the_failure_detector_could() {
    let (servers, caller) = servers_and_caller("leave");
    let leaver = servers[0].node.id().clone();
    let started = Instant::now();
    servers[0].run(servers[0].node.shutdown());
    let gone = started.elapsed();
    assert!(
        !caller.node.get_nodes("Geometry").contains(&leaver),
        "still routed after leaving ({gone:?})"
    );
    // Calls never see it go.
    for _ in 0..10 {
        GeometryClient::new(&caller.node).add(1, 1).await.unwrap();
    }
    assert!(gone < Duration::from_secs(3), "shutdown took {gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sna_retries_wait_for_a_service_served_later_elsewhere() {
    let nodes = cluster("late", 2, COOKIE);
    let geo = GeometryClient::new(&nodes[1].node).with_options(
        CallOptions::default()
            .sna_retries(40)
            .retry_interval(Duration::from_millis(50)),
    );
    let call = tokio::spawn(async move { geo.add(20, 22).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    nodes[0]
        .run(nodes[0].node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 42);
}
