//! Proves that whoever reaches a node's port without the cookie cannot keep
//! a real node out: thousands of sockets opened and left idle do not stop a
//! node with the cookie from joining and calling within 2 s.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use malla::Node;
use malla_test_support::nodes::{NodeRuntime, listening};
use tokio::net::TcpStream;

const COOKIE: &str = "exhaustion-test-cookie";
const IDLE: usize = 3000;

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_keep_a_real_node_out() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let server = NodeRuntime::start(listening("flooded", COOKIE));
    server
        .run(server.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        match TcpStream::connect(server.addr()).await {
            Ok(stream) => idle.push(stream),
            Err(err) => panic!("opening idle socket {} failed: {err}", idle.len()),
        }
    }

    let started = Instant::now();
    let client = Node::builder("flood-client")
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse().unwrap())
        .seeds([server.addr()])
        .start()
        .await
        .unwrap();
    client
        .wait_for_services(&["Geometry"], Duration::from_secs(2))
        .await
        .expect("the service is discovered despite the idle sockets");
    assert_eq!(GeometryClient::new(&client).add(40, 2).await.unwrap(), 42);
    let took = started.elapsed();
    println!("{IDLE} idle sockets open: joined and called in {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    drop(idle);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
