//! Locks and global names on the consensus group, with real nodes on
//! loopback: a lone node is its own group; three voters elect a leader,
//! grant locks with growing fencing tokens, never grant one twice, and keep
//! granting after the leader is killed.

mod common;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use malla::{Error, Node, NodeBuilder};
use malla_test_support::nodes::{NodeRuntime, listening};
use malla_test_support::wait::wait_until_blocking;

use common::*;

const COOKIE: &str = "coordination-test-cookie";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_is_its_own_group() {
    let node = Node::builder("lone").start().await.unwrap();
    let first = node.lock("jobs").await.unwrap();
    assert!(first.is_held());
    assert!(matches!(node.try_lock("jobs").await, Ok(None)), "held once");
    let token = first.token();
    first.release().await.unwrap();
    let second = node.try_lock("jobs").await.unwrap().expect("free again");
    assert!(second.token() > token, "tokens grow: {} then {}", token, second.token());

    // Bad input: clear errors, nothing held.
    let long = "x".repeat(300);
    assert!(matches!(node.lock(long.as_str()).await, Err(Error::InvalidName { .. })));
    assert!(matches!(node.lock("").await, Err(Error::InvalidName { .. })));
    assert!(matches!(node.unlock("never", token).await, Err(Error::NotHeld { .. })));
    let other = node.lock("other").await.unwrap();
    match node.unlock("other", second.token()).await {
        Err(Error::NotHeld { reason, .. }) => assert!(reason.contains("another") || reason.contains("not"), "{reason}"),
        wrong => panic!("a token of another lock: {wrong:?}"),
    }
    drop(other);

    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    let token = node.register_name("primary", "Geometry").await.unwrap();
    assert_eq!(
        node.whereis_name("primary").await.unwrap(),
        Some((node.id().clone(), token))
    );
    assert!(matches!(
        node.register_name("x", "NotServed").await,
        Err(Error::NotServed(_))
    ));
    node.unregister_name("primary").await.unwrap();
    assert_eq!(node.whereis_name("primary").await.unwrap(), None);
    assert!(matches!(
        node.unregister_name("primary").await,
        Err(Error::NotHeld { .. })
    ));
}

fn voter(name: &str, seeds: &[std::net::SocketAddr]) -> NodeBuilder {
    listening(name, COOKIE)
        .voter(3)
        .seeds(seeds.iter().copied())
        .gossip_interval(Duration::from_millis(100))
}

/// Three voters and a client, every one on its own runtime.
fn group(prefix: &str) -> (Vec<NodeRuntime>, NodeRuntime) {
    let first = NodeRuntime::start(voter(&format!("{prefix}0"), &[]));
    let seed = first.addr();
    let mut voters = vec![first];
    for i in 1..3 {
        voters.push(NodeRuntime::start(voter(&format!("{prefix}{i}"), &[seed])));
    }
    let client = NodeRuntime::start(
        listening(&format!("{prefix}-client"), COOKIE)
            .seeds([seed])
            .gossip_interval(Duration::from_millis(100)),
    );
    (voters, client)
}

#[test]
fn three_voters_grant_locks_and_keep_granting_after_the_leader_dies() {
    let (mut voters, client) = group("g");
    let started = Instant::now();
    let guard = client
        .run(client.node.lock("x").timeout(Duration::from_secs(20)).into_future())
        .unwrap();
    println!("the group formed and granted a first lock in {:?}", started.elapsed());
    let status = client.run(client.node.group_status()).unwrap();
    assert_eq!(status.voters.len(), 3, "{status:?}");
    let leader = status.leader.clone().expect("a leader");

    // Another node cannot have it meanwhile.
    let other = &voters[1];
    assert!(matches!(other.run(other.node.try_lock("x")), Ok(None)));

    let before = guard.token();
    client.run(guard.release()).unwrap();

    // Kill the leader; time until a lock is granted again.
    let at = voters.iter().position(|v| *v.node.id() == leader).unwrap();
    voters[at].kill();
    let killed = Instant::now();
    let again = client
        .run(client.node.lock("x").timeout(Duration::from_secs(10)).into_future())
        .unwrap();
    let took = killed.elapsed();
    println!("leader killed: a lock granted again after {took:?}");
    assert!(again.token() > before);
    let survivor = voters.iter().find(|v| *v.node.id() != leader).unwrap();
    assert!(wait_until_blocking(Duration::from_secs(5), || {
        survivor
            .run(survivor.node.group_status())
            .is_ok_and(|s| s.leader.as_ref().is_some_and(|l| *l != leader))
    }));
}

/// A client bound to a global name follows it: from a node that leaves to
/// the one that registers it next, and to one that takes over from a killed
/// holder once its lease has run out.
#[test]
fn a_named_client_follows_its_name() {
    let nodes = malla_test_support::nodes::cluster("named", 4, COOKIE);
    let (caller, first, second, third) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    for server in [first, second, third] {
        server
            .run(server.node.serve(GeometryServer::new(Geo::default())))
            .unwrap();
    }
    let geo = GeometryClient::named(&caller.node, "primary");
    assert!(
        matches!(caller.run(geo.count()), Err(Error::ServiceNotAvailable { ref service, .. }) if service.contains("primary")),
        "not registered yet"
    );
    first.run(first.node.register_name("primary", "Geometry")).unwrap();
    assert!(matches!(
        second.run(second.node.register_name("primary", "Geometry")),
        Err(Error::NameTaken { ref node, .. }) if node == first.node.id()
    ));
    assert_eq!(caller.run(geo.count()).unwrap(), 1, "first's instance");

    // Leaving frees the name; the next holder gets the calls.
    first.run(first.node.shutdown());
    second.run(second.node.register_name("primary", "Geometry")).unwrap();
    assert_eq!(caller.run(geo.count()).unwrap(), 1, "second's instance, after the move");

    // A killed holder's name is free once its lease runs out.
    let mut nodes = nodes;
    nodes[2].kill();
    let third = &nodes[3];
    let killed = Instant::now();
    let token = loop {
        match third.run(third.node.register_name("primary", "Geometry")) {
            Ok(token) => break token,
            Err(Error::NameTaken { .. }) => std::thread::sleep(Duration::from_millis(100)),
            Err(err) => panic!("{err}"),
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "the name stayed taken");
    };
    println!(
        "a killed holder's name was free after {:?} (lease {:?})",
        killed.elapsed(),
        malla::NAME_TTL
    );
    let caller = &nodes[0];
    assert_eq!(
        caller.run(caller.node.whereis_name("primary")).unwrap(),
        Some((third.node.id().clone(), token))
    );
    assert_eq!(caller.run(geo.count()).unwrap(), 1, "third's instance");
}
