//! Proves cluster-wide discovery on real nodes over loopback, each on its own
//! runtime: services served anywhere are found everywhere within a second,
//! the local instance comes first, paused instances drop out and come back,
//! nodes with another cookie never join, hidden nodes see without being
//! seen, and `wait_for_services` wakes as soon as it can.

mod common;

use std::time::Duration;

use common::*;
use malla::{AdminStatus, CallOptions, Error, Event, Node, NodeId, RunningStatus, ServeOptions};
use malla_test_support::{
    nodes::{NodeRuntime, cluster, listening},
    wait::time_until,
};

const COOKIE: &str = "discovery-test-cookie";

fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|n| NodeId::from(*n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_served_on_one_node_is_seen_by_all_within_a_second() {
    let nodes = cluster("five", 5, COOKIE);
    let stubs: Vec<GeometryClient> = nodes.iter().map(|n| GeometryClient::new(&n.node)).collect();
    assert!(matches!(
        stubs[3].add(1, 2).await,
        Err(Error::ServiceNotAvailable { .. })
    ));

    nodes[2]
        .run(nodes[2].node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    let seen = time_until(Duration::from_secs(5), || {
        nodes.iter().all(|n| n.node.get_nodes("Geometry") == ids(&["five2"]))
    })
    .await
    .expect("every node sees the service");
    eprintln!("discovery on 5 nodes: {seen:?}");
    assert!(seen < Duration::from_secs(1), "took {seen:?}");

    // The stubs made before discovery now route to it.
    for stub in &stubs {
        assert_eq!(stub.add(2, 3).await.unwrap(), 5);
    }
    let instances = nodes[0].node.get_instances("Geometry");
    assert_eq!(instances.len(), 1);
    assert_eq!(
        (instances[0].node.as_str(), instances[0].vsn.as_str()),
        ("five2", "1.0.0")
    );
    assert_eq!(instances[0].status, RunningStatus::Running);
    assert_eq!(instances[0].addr, Some(nodes[2].addr()));
    assert_eq!(nodes[4].node.get_services(), vec!["Geometry".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_node_comes_first_and_the_others_are_shuffled() {
    let nodes = cluster("order", 3, COOKIE);
    for node in &nodes {
        node.run(node.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    }
    let all_seen = time_until(Duration::from_secs(5), || {
        nodes.iter().all(|n| n.node.get_nodes("Geometry").len() == 3)
    })
    .await;
    assert!(all_seen.is_some());
    for node in &nodes {
        let order = node.node.get_nodes("Geometry");
        assert_eq!(&order[0], node.node.id(), "{order:?}");
    }
    // The remote part is reshuffled on every refresh: both orders show up.
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..200 {
        orders.insert(nodes[0].node.get_nodes("Geometry")[1..].to_vec());
        if orders.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(orders.len(), 2, "{orders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_service_leaves_everywhere_within_a_second_and_comes_back() {
    let nodes = cluster("pause", 3, COOKIE);
    let server = &nodes[0];
    server
        .run(server.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    let everywhere = |expected: &[&str]| nodes.iter().all(|n| n.node.get_nodes("Geometry") == ids(expected));
    assert!(
        time_until(Duration::from_secs(5), || everywhere(&["pause0"]))
            .await
            .is_some()
    );

    let mut events = nodes[1].node.events();
    server
        .run(server.node.set_admin_status("Geometry", AdminStatus::Paused))
        .unwrap();
    let gone = time_until(Duration::from_secs(5), || everywhere(&[]))
        .await
        .expect("paused everywhere");
    assert!(gone < Duration::from_secs(1), "took {gone:?}");
    // Still listed as an instance, with its status; calls are refused.
    assert_eq!(nodes[2].node.get_instances("Geometry")[0].status, RunningStatus::Paused);
    assert!(matches!(
        GeometryClient::new(&nodes[1].node).add(1, 1).await,
        Err(Error::ServiceNotAvailable { .. })
    ));
    // A call that still reaches it (named explicitly) is refused too.
    let direct = GeometryClient::new(&nodes[1].node).on_node("pause0");
    assert!(matches!(direct.add(1, 1).await, Err(Error::ServiceNotAvailable { .. })));

    server
        .run(server.node.set_admin_status("Geometry", AdminStatus::Active))
        .unwrap();
    let back = time_until(Duration::from_secs(5), || everywhere(&["pause0"]))
        .await
        .expect("back everywhere");
    assert!(back < Duration::from_secs(1), "took {back:?}");
    assert_eq!(GeometryClient::new(&nodes[1].node).add(1, 1).await.unwrap(), 2);

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    let node = NodeId::from("pause0");
    let service = "Geometry".to_string();
    assert!(
        seen.contains(&Event::ServiceDown {
            service: service.clone(),
            node: node.clone()
        }),
        "{seen:?}"
    );
    assert!(seen.contains(&Event::ServiceUp { service, node }), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cookie_never_appears() {
    let nodes = cluster("cookie", 3, COOKIE);
    nodes[0]
        .run(nodes[0].node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    let intruder = NodeRuntime::start(
        listening("cookie-intruder", "another-cluster-cookie").seeds([nodes[0].addr(), nodes[1].addr()]),
    );
    intruder
        .run(intruder.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    for node in &nodes {
        assert!(!node.node.nodes().contains(intruder.node.id()));
        assert_eq!(node.node.get_nodes("Geometry"), ids(&["cookie0"]));
    }
    // It learned nothing either.
    assert!(intruder.node.nodes().is_empty());
    assert_eq!(intruder.node.get_nodes("Geometry"), ids(&["cookie-intruder"]));
    // Its datagrams were dropped, and counted.
    let rejected: u64 = nodes.iter().map(|n| n.node.gossip_stats().unwrap().rejected).sum();
    assert!(rejected > 0);
    assert!(intruder.node.gossip_stats().unwrap().accepted == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_services_returns_when_the_last_one_appears_or_times_out() {
    let nodes = cluster("wait", 2, COOKIE);
    let waiter = nodes[1].node.clone();
    let wait = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = waiter
            .wait_for_services(&["Geometry", "Slow"], Duration::from_secs(10))
            .await;
        (result, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[0]
        .run(nodes[0].node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "returned before the last service appeared");
    nodes[0].run(nodes[0].node.serve(SlowServer::new(SlowWork))).unwrap();
    let (result, waited) = wait.await.unwrap();
    result.unwrap();
    assert!(waited < Duration::from_millis(1600), "woke late: {waited:?}");

    let missing = nodes[1]
        .node
        .wait_for_services(&["Nowhere"], Duration::from_millis(200))
        .await;
    assert!(matches!(missing, Err(Error::Timeout { .. })));
}

/// A second service, for waiting on several.
#[malla::service(global)]
pub trait Slow {
    async fn nap(&self, ms: u64) -> u64;
}

struct SlowWork;

impl Slow for SlowWork {
    async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

#[malla::service]
pub trait LocalOnly {
    async fn ping(&self) -> u8;
}

struct Local;

impl LocalOnly for Local {
    async fn ping(&self) -> u8 {
        1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_that_are_not_global_stay_local() {
    let nodes = cluster("local", 2, COOKIE);
    nodes[0].run(nodes[0].node.serve(LocalOnlyServer::new(Local))).unwrap();
    nodes[0]
        .run(nodes[0].node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    assert!(
        time_until(Duration::from_secs(5), || !nodes[1]
            .node
            .get_nodes("Geometry")
            .is_empty())
        .await
        .is_some()
    );
    assert!(nodes[1].node.get_nodes("LocalOnly").is_empty());
    assert_eq!(nodes[0].node.get_nodes("LocalOnly"), ids(&["local0"]));
    assert_eq!(LocalOnlyClient::new(&nodes[0].node).ping().await.unwrap(), 1);
    // Even named explicitly, another node cannot call it.
    let remote = LocalOnlyClient::new(&nodes[1].node).on_node("local0");
    assert!(matches!(remote.ping().await, Err(Error::ServiceNotAvailable { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_node_finds_and_calls_services_without_being_listed() {
    let nodes = cluster("hide", 2, COOKIE);
    nodes[0]
        .run(nodes[0].node.serve_with(
            GeometryServer::new(Geo::default()),
            ServeOptions::default().metadata("zone", "eu"),
        ))
        .unwrap();
    let tool = Node::builder("hide-tool")
        .cookie(COOKIE)
        .hidden()
        .seeds([nodes[1].addr()])
        .start()
        .await
        .unwrap();
    tool.wait_for_services(&["Geometry"], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(GeometryClient::new(&tool).add(40, 2).await.unwrap(), 42);
    assert_eq!(tool.get_instances("Geometry")[0].metadata["zone"], "eu");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in &nodes {
        assert!(!node.node.nodes().contains(tool.id()), "{:?}", node.node.nodes());
    }
    let manifest = tool
        .service_manifest("Geometry")
        .await
        .expect("the manifest is published");
    assert_eq!(manifest.method("add").unwrap().args().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_all_reaches_every_instance() {
    let nodes = cluster("all", 3, COOKIE);
    for node in &nodes[..2] {
        node.run(node.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    }
    assert!(
        time_until(Duration::from_secs(5), || nodes[2].node.get_nodes("Geometry").len()
            == 2)
        .await
        .is_some()
    );
    let mut results: Vec<(NodeId, Result<u64, Error>)> = nodes[2]
        .node
        .call_all("Geometry", "count", &(), CallOptions::default())
        .await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results.len(), 2);
    assert_eq!((results[0].0.as_str(), results[1].0.as_str()), ("all0", "all1"));
    assert!(results.iter().all(|(_, r)| r.as_ref().unwrap() == &1));
}

/// A gossip datagram captured on the path and sent to another node, from a
/// forged source, is refused every time, the first included (its sender
/// sealed in where it sent it), and draws no reply to that source. (Copies
/// sent to their own destination are refused after the first by the replay
/// window: `discovery::envelope`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_gossip_datagram_is_refused_and_draws_no_reply() {
    // The spy stands where A believes a seed is, and records what A sends.
    let spy = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = NodeRuntime::start(listening("replay-a", COOKIE).seeds([spy.local_addr().unwrap()]));
    let mut buf = vec![0u8; 65_536];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), spy.recv_from(&mut buf))
        .await
        .expect("A gossips with its seed")
        .unwrap();
    let captured = buf[..len].to_vec();

    let b = NodeRuntime::start(listening("replay-b", COOKIE));
    let b_addr = b.addr();
    for _ in 0..3 {
        spy.send_to(&captured, b_addr).await.unwrap();
    }
    let replayed = time_until(Duration::from_secs(3), || b.node.gossip_stats().unwrap().replayed >= 3).await;
    let stats = b.node.gossip_stats().unwrap();
    println!("B after 3 copies of a datagram A sent elsewhere: {stats:?}");
    assert!(replayed.is_some(), "the copies were not refused: {stats:?}");
    assert_eq!((stats.replayed, stats.accepted), (3, 0), "{stats:?}");

    // Nothing came back to the forged source.
    let reply = tokio::time::timeout(Duration::from_millis(1500), spy.recv_from(&mut buf)).await;
    match reply {
        Err(_) => {}
        // A may still gossip with its seed; B must not.
        Ok(Ok((len, from))) => assert_ne!(from, b_addr, "B replied {len} bytes to the forged source"),
        Ok(Err(err)) => panic!("{err}"),
    }
    drop(a);
}

/// Nodes at neighbouring steps of a cookie roll (old cookie accepting the
/// new; new cookie accepting the old; new only) form one cluster: gossip
/// opens, services are discovered and called across the steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_mid_way_through_a_cookie_roll_form_one_cluster() {
    let step = |name: &str, uses: &str, accepts: Option<&str>| {
        let mut builder = Node::builder(name).cookie(uses).listen("127.0.0.1:0".parse().unwrap());
        if let Some(old) = accepts {
            builder = builder.also_accept_cookie(old);
        }
        builder
    };
    let first = NodeRuntime::start(step("roll-1", "old-cluster-cookie", Some("new-cluster-cookie")));
    let second =
        NodeRuntime::start(step("roll-2", "new-cluster-cookie", Some("old-cluster-cookie")).seeds([first.addr()]));
    let third = NodeRuntime::start(step("roll-3", "new-cluster-cookie", None).seeds([second.addr()]));
    first
        .run(first.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    third
        .run(third.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();

    // Step 2 shares a cookie with both neighbours: it sees and calls both.
    let both = time_until(Duration::from_secs(5), || {
        let mut nodes = second.node.get_nodes("Geometry");
        nodes.sort();
        nodes == ids(&["roll-1", "roll-3"])
    })
    .await;
    assert!(both.is_some(), "step 2 sees {:?}", second.node.get_nodes("Geometry"));
    for node in ["roll-1", "roll-3"] {
        let client = GeometryClient::new(&second.node).on_node(node);
        assert_eq!(client.add(40, 2).await.unwrap(), 42, "calling {node}");
    }
    // Step 1 dialing step 3 (which no longer accepts the old cookie) is
    // refused, and says why.
    let refused = first.run(first.node.connect(third.addr()));
    assert!(matches!(refused, Err(Error::Unauthorized { .. })), "{refused:?}");
}
