//! Two nodes dialing each other at the same moment end up with one
//! connection, the one opened by the node whose name sorts first; the other
//! is retired and closes without losing a call or flapping the peer.

use std::time::Duration;

use tokio::sync::broadcast::error::TryRecvError;

use tokio::time::Instant;

use super::*;
use crate::NodeId;
use crate::connection::Initiator;
use malla_test_support::wait::eventually;

async fn node(name: &str) -> Node {
    Node::builder(name)
        .cookie("sim-cookie-0123456789")
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

fn opener(node: &Node, peer: &Node) -> Option<NodeId> {
    let conn = node.parts.network.peer(peer.id())?.connection()?;
    Some(match conn.initiator {
        Initiator::Us => node.id().clone(),
        Initiator::Peer => peer.id().clone(),
    })
}

fn open(node: &Node) -> usize {
    node.parts.network.open_connections()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connects_settle_on_one_connection() {
    for round in 0..20 {
        let (a, b) = (
            node(&format!("sim-a{round}")).await,
            node(&format!("sim-b{round}")).await,
        );
        let (mut events_a, mut events_b) = (a.events(), b.events());
        let (to_b, to_a) = tokio::join!(a.connect(b.local_addr().unwrap()), b.connect(a.local_addr().unwrap()));
        assert_eq!(to_b.unwrap(), *b.id());
        assert_eq!(to_a.unwrap(), *a.id());

        // Both use the connection `sim-a…` opened; the duplicate goes away.
        let deadline = Instant::now() + Duration::from_secs(3);
        while (open(&a), open(&b)) != (1, 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((open(&a), open(&b)), (1, 1), "round {round}: a duplicate stayed open");
        assert_eq!(opener(&a, &b).as_ref(), Some(a.id()), "round {round}");
        assert_eq!(opener(&b, &a).as_ref(), Some(a.id()), "round {round}");

        // Each saw the other come up once, and never go down.
        assert_eq!(events_a.try_recv(), Ok(crate::Event::NodeUp(b.id().clone())));
        assert_eq!(events_a.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(events_b.try_recv(), Ok(crate::Event::NodeUp(a.id().clone())));
        assert_eq!(events_b.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(a.nodes(), vec![b.id().clone()]);
    }
}

#[tokio::test]
async fn the_bound_and_the_advertised_addresses_are_told_apart() {
    let advertised: std::net::SocketAddr = "10.9.8.7:7000".parse().unwrap();
    let node = Node::builder("adv")
        .cookie("sim-cookie-0123456789")
        .listen("127.0.0.1:0".parse().unwrap())
        .advertise(advertised)
        .start()
        .await
        .unwrap();
    let bound = node.local_addr().unwrap();
    assert!(bound.ip().is_loopback() && bound.port() != 0, "{bound}");
    assert_eq!(node.advertised_addr(), Some(advertised));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_node_is_forgotten_once_it_disconnects() {
    let server = node("fg-server").await;
    let cli = Node::builder("fg-cli")
        .cookie("sim-cookie-0123456789")
        .hidden()
        .start()
        .await
        .unwrap();
    cli.connect(server.local_addr().unwrap()).await.unwrap();
    let cli_id = cli.id().clone();
    let known = || server.parts.network.peer(&cli_id).is_some();
    // The acceptor adopts its side just after the dialer returns.
    assert!(
        eventually(Duration::from_secs(3), known).await,
        "the server never adopted the connection"
    );
    drop(cli);
    assert!(
        eventually(Duration::from_secs(3), || !known()).await,
        "the tool's peer entry stayed"
    );
    assert!(server.members().is_empty());
}

/// Durations near `Duration::MAX` are cut to a year, not added to an
/// `Instant` until it overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_are_bounded_not_overflowed() {
    // A task that overflowed an `Instant` would panic where tokio catches it.
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        previous(info);
    }));
    let huge = Duration::MAX;
    let node = |name: &str| {
        Node::builder(name)
            .cookie("sim-cookie-0123456789")
            .listen("127.0.0.1:0".parse().unwrap())
            .tick_interval(huge)
            .gossip_interval(huge)
            .dead_node_grace(huge)
            .handshake_timeout(huge)
            .connect_timeout(huge)
            .reconnect_interval(huge)
            .phi_threshold(f64::NAN)
            .connect_targets(["127.0.0.1:9"])
            .start()
    };
    let (a, b) = (node("huge-a").await.unwrap(), node("huge-b").await.unwrap());
    assert_eq!(a.connect(b.local_addr().unwrap()).await.unwrap(), *b.id());
    let options = crate::CallOptions::default()
        .timeout(huge)
        .retry_interval(huge)
        .sna_retries(1)
        .nodes([b.id().clone()]);
    // Not served there: answered at once, after no year-long wait.
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        a.remote::<_, i64>("Nope", "add", &(1i64, 2i64), options.sna_retries(0)),
    )
    .await
    .expect("no year-long wait");
    assert!(answer.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0);
}
