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

/// The /64 the IPv6 test takes its addresses from, added to `lo` for the
/// test (root only) and removed after.
const PREFIX: &str = "fd00:6d61:6c6c:6101";

struct LocalAddresses(Vec<String>);

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl LocalAddresses {
    fn add(hosts: impl IntoIterator<Item = u32>) -> Option<LocalAddresses> {
        let mut added = LocalAddresses(Vec::new());
        for host in hosts {
            let addr = format!("{PREFIX}::{host:x}/128");
            let _ = ip(&["-6", "addr", "del", &addr, "dev", "lo"]);
            if !ip(&["-6", "addr", "add", &addr, "dev", "lo", "nodad"]) {
                return None;
            }
            added.0.push(addr);
        }
        Some(added)
    }
}

impl Drop for LocalAddresses {
    fn drop(&mut self) {
        for addr in &self.0 {
            let _ = ip(&["-6", "addr", "del", addr, "dev", "lo"]);
        }
    }
}

/// One IPv6 host owns a /64 of addresses: admission counts the whole /64 as
/// one source, so 40 idle sockets from 40 of its addresses hold no more
/// pending handshakes than one address could (8 here), the rest are closed,
/// and a real node still joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_host_is_one_source_for_its_whole_64() {
    const PER_SOURCE: usize = 8;
    const FLOOD: usize = 40;
    let Some(_addresses) = LocalAddresses::add((0..=FLOOD as u32).map(|i| if i == 0 { 1 } else { 0xff + i })) else {
        let uid = std::process::Command::new("id").arg("-u").output().unwrap().stdout;
        assert_ne!(uid, b"0\n", "root, but `ip -6 addr add` failed: is IPv6 off?");
        println!("skipped: adding IPv6 addresses to lo needs root");
        return;
    };
    let server_addr: std::net::SocketAddr = format!("[{PREFIX}::1]:0").parse().unwrap();
    let server = NodeRuntime::start(
        Node::builder("flooded-v6")
            .cookie(COOKIE)
            .listen(server_addr)
            .max_handshakes(256, PER_SOURCE),
    );
    server
        .run(server.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let source: std::net::SocketAddr = format!("[{PREFIX}::{:x}]:0", 0x100 + i).parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v6().unwrap();
        socket.bind(source).unwrap();
        flood.push(socket.connect(server.addr()).await.unwrap());
        // One at a time, so the oldest are the ones evicted.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A socket the server closed reads its end at once; an admitted one
    // waits for a hello.
    let mut closed = 0;
    for stream in &mut flood {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::io::AsyncReadExt::read(stream, &mut byte),
        );
        if matches!(read.await, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    println!("{FLOOD} sockets from one /64, {PER_SOURCE} pending allowed per source: {closed} closed by the server");
    assert_eq!(closed, FLOOD - PER_SOURCE, "the /64 is one source");

    let client = Node::builder("v6-client")
        .cookie(COOKIE)
        .listen("[::1]:0".parse().unwrap())
        .seeds([server.addr()])
        .start()
        .await
        .unwrap();
    client
        .wait_for_services(&["Geometry"], Duration::from_secs(5))
        .await
        .expect("a real node joins despite the flood");
    assert_eq!(GeometryClient::new(&client).add(40, 2).await.unwrap(), 42);
    drop(flood);
}
