//! Gossip on real nodes (one runtime, loopback) against a member holding
//! the cookie that sends what chitchat cannot take, and a gossip task that
//! dies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use malla_test_support::wait::eventually;

use super::sealed_udp::{From, Sealer, datagrams};
use super::validate::tests::attacks;
use crate::Node;
use crate::handshake::{Cookie, Keyring};

const COOKIE: &str = "gossip-attack-cookie-0123";

async fn node(name: &str, seeds: &[&Node]) -> Node {
    Node::builder(name)
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse().unwrap())
        .gossip_interval(Duration::from_millis(100))
        .seeds(seeds.iter().map(|n| n.local_addr().unwrap()))
        .start()
        .await
        .unwrap()
}

fn knows(node: &Node, other: &Node) -> bool {
    node.members().iter().any(|m| m.node == *other.id())
}

/// A third node, introduced to `b` only, must reach `a` through gossip.
async fn gossip_still_spreads_to(a: &Node, b: &Node, name: &str) -> (Node, Duration) {
    let started = Instant::now();
    let c = node(name, &[b]).await;
    assert!(
        eventually(Duration::from_secs(10), || knows(a, &c) && knows(&c, a)).await,
        "{} no longer learns of new nodes",
        a.id()
    );
    (c, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_the_cookie_cannot_stop_the_others_gossiping() {
    let a = node("atk-a", &[]).await;
    let b = node("atk-b", &[&a]).await;
    assert!(eventually(Duration::from_secs(10), || knows(&a, &b) && knows(&b, &a)).await);
    let gossip = a.local_addr().unwrap();
    let (me, other) = (a.discovery().unwrap().key(), b.discovery().unwrap().key());

    let rogue = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sealer = Sealer::new(&Keyring::new(Cookie::new(COOKIE.as_bytes()), Vec::new()));
    let from = From {
        sender: rand::random(),
        reply_to: rogue.local_addr().unwrap(),
    };
    let mut counter = 0;
    let attacks = attacks(&me, &other);
    for (what, message, _) in &attacks {
        for datagram in datagrams(&sealer, from, &mut counter, message, gossip) {
            rogue.send_to(&datagram, gossip).await.unwrap();
        }
        println!("sent: {what} ({} bytes)", message.len());
    }
    // The same message sealed for another node: refused as misdirected.
    let elsewhere: SocketAddr = b.local_addr().unwrap();
    for datagram in datagrams(&sealer, from, &mut counter, &attacks[0].1, elsewhere) {
        rogue.send_to(&datagram, gossip).await.unwrap();
    }
    let refused = || {
        let stats = a.gossip_stats().unwrap();
        stats.invalid >= attacks.len() as u64 && stats.replayed >= 1
    };
    assert!(
        eventually(Duration::from_secs(5), refused).await,
        "{:?}",
        a.gossip_stats()
    );
    let stats = a.gossip_stats().unwrap();
    println!("{stats:?}");
    assert_eq!(stats.restarts, 0, "the attacks never reached chitchat");
    let (_c, took) = gossip_still_spreads_to(&a, &b, "atk-c").await;
    println!("after the attacks, a new node was known both ways in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_task_that_dies_is_started_again_and_counted() {
    let a = node("dog-a", &[]).await;
    let b = node("dog-b", &[&a]).await;
    assert!(eventually(Duration::from_secs(10), || knows(&a, &b) && knows(&b, &a)).await);
    let before = a.discovery().unwrap().key();
    let killed = Instant::now();
    a.discovery().unwrap().kill_gossip_task();
    assert!(
        eventually(Duration::from_secs(5), || a.gossip_stats().unwrap().restarts == 1).await,
        "the watchdog did not start gossip again"
    );
    let after = a.discovery().unwrap().key();
    assert!(after.generation > before.generation, "{before:?} then {after:?}");
    println!("gossip started again in {:?}", killed.elapsed());
    let (_c, took) = gossip_still_spreads_to(&a, &b, "dog-c").await;
    println!("after the restart, a new node was known both ways in {took:?}");
    assert!(
        knows(&b, &a) && knows(&a, &b),
        "the two first nodes still know each other"
    );
}
