//! Proves the network transport between real nodes on loopback, each on its
//! own tokio runtime (and, in one test, in its own OS process): calls of every
//! shape, many concurrent calls on one connection, the cookie handshake,
//! hidden nodes, deadlines and cancellation, a node dying mid-call, and
//! requests a serving node must refuse without harm.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use malla::{CallOptions, Error, Event, Node, NodeId};
use malla_test_support::nodes::{NodeRuntime, listening, localhost};

const COOKIE: &str = "transport-test-cookie";

/// A node on the test's own runtime that dials others.
async fn caller(name: &str) -> Node {
    Node::builder(name).cookie(COOKIE).start().await.unwrap()
}

/// A node on its own runtime, serving `Geometry`.
fn geometry_node(name: &str) -> NodeRuntime {
    let node = NodeRuntime::start(listening(name, COOKIE));
    node.run(node.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_every_shape_cross_nodes() {
    let server = geometry_node("shapes-a");
    let client = caller("shapes-b").await;
    assert_eq!(client.connect(server.addr()).await.unwrap(), "shapes-a");
    exercise_every_shape(&GeometryClient::new(&client).on_node("shapes-a")).await;
    // The same through the explicit node list and the dynamic form.
    let listed = GeometryClient::new(&client).with_options(CallOptions::default().nodes(["shapes-a"]));
    assert_eq!(listed.add(20, 22).await.unwrap(), 42);
    let sum: i64 = client
        .remote(
            "Geometry",
            "add",
            &(40i64, 2i64),
            CallOptions::default().nodes(["shapes-a"]),
        )
        .await
        .unwrap();
    assert_eq!(sum, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let server = geometry_node("many-a");
    let client = caller("many-b").await;
    client.connect(server.addr()).await.unwrap();
    let geo = GeometryClient::new(&client).on_node("many-a");
    let calls: Vec<_> = (0..1000i64)
        .map(|i| {
            let geo = geo.clone();
            tokio::spawn(async move { (i, geo.add(i, i * 1000).await) })
        })
        .collect();
    for call in calls {
        let (i, sum) = call.await.unwrap();
        assert_eq!(sum.unwrap(), i * 1001);
    }
    assert_eq!(client.nodes(), vec![NodeId::from("many-a")]);
    assert_eq!(server.node.nodes(), vec![NodeId::from("many-b")]);
}

#[tokio::test]
async fn a_weak_cookie_is_refused_and_no_cookie_is_ever_printed() {
    for (weak, what) in [("short", "the cookie"), ("", "the cookie")] {
        let err = Node::builder("weak")
            .cookie(weak)
            .start()
            .await
            .unwrap_err()
            .to_string();
        println!("{err}");
        assert!(
            err.contains(what) && err.contains("at least 16") && err.contains("malla cookie"),
            "{err}"
        );
    }
    let err = Node::builder("weak")
        .cookie("a-strong-enough-cookie")
        .also_accept_cookie("old")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("an accepted cookie is 3 bytes"), "{err}");
    let builder = Node::builder("printed").cookie("do-not-print-this-cookie");
    let printed = format!("{builder:?}");
    assert!(
        !printed.contains("do-not-print") && printed.contains("Secret(..)"),
        "{printed}"
    );
}

/// Anyone can make a node refuse handshakes; a flood of them costs one
/// log line a second, which counts the ones it stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_cookies_is_one_log_line_a_second() {
    let logs = malla_test_support::logs::capture();
    let server = geometry_node("flooded");
    let intruder = Node::builder("flooder")
        .cookie("not-the-cluster-cookie")
        .start()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let tries = 200;
    for _ in 0..tries {
        assert!(intruder.connect(server.addr()).await.is_err());
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let said: Vec<String> = logs
        .lines_with("refused a connection")
        .into_iter()
        .filter(|l| l.contains("node=flooded"))
        .collect();
    println!(
        "{tries} refused handshakes in {took:?}: {} lines\n{said:#?}",
        said.len()
    );
    let at_most = took.as_secs() as usize + 2;
    assert!(
        !said.is_empty() && said.len() <= at_most,
        "{} lines for {tries}",
        said.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_on_both_sides_and_nothing_is_served() {
    let logs = malla_test_support::logs::capture();
    let server = geometry_node("cookie-a");
    let intruder = Node::builder("cookie-b")
        .cookie("not-the-cluster-cookie")
        .start()
        .await
        .unwrap();
    match intruder.connect(server.addr()).await {
        Err(Error::Unauthorized { reason, .. }) => assert!(reason.contains("wrong cookie"), "{reason}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(intruder.nodes().is_empty());
    assert!(server.node.nodes().is_empty());
    assert!(matches!(
        GeometryClient::new(&intruder).on_node("cookie-a").add(1, 2).await,
        Err(Error::NodeDown { .. })
    ));
    // Both sides said why.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = logs.lines_with("refused a connection");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("cookie-a") && l.contains("wrong cookie")),
        "{refused:#?}"
    );
    let rejected = logs.lines_with("connection refused");
    assert!(
        rejected
            .iter()
            .any(|l| l.contains("cookie-b") && l.contains("wrong cookie")),
        "{rejected:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call_gives_node_down_within_a_second() {
    let mut server = geometry_node("kill-a");
    let client = caller("kill-b").await;
    let mut events = client.events();
    client.connect(server.addr()).await.unwrap();
    assert_eq!(events.recv().await.unwrap(), Event::NodeUp(NodeId::from("kill-a")));

    let geo = GeometryClient::new(&client).on_node("kill-a").with_options(
        CallOptions::default()
            .nodes(["kill-a"])
            .timeout(Duration::from_secs(30)),
    );
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let geo = geo.clone();
            tokio::spawn(async move { geo.sleep_ms(20_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    server.kill();
    for call in in_flight {
        match call.await.unwrap() {
            Err(Error::NodeDown { node }) => assert_eq!(node, "kill-a"),
            other => panic!("expected NodeDown, got {other:?}"),
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(1), "took {:?}", killed.elapsed());
    let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event, Event::NodeDown(NodeId::from("kill-a")));
    assert!(client.nodes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_node_calls_but_is_not_listed() {
    let server = geometry_node("hidden-a");
    let mut events = server.node.events();
    let tool = Node::builder("hidden-tool")
        .cookie(COOKIE)
        .hidden()
        .start()
        .await
        .unwrap();
    assert!(tool.is_hidden());
    tool.connect(server.addr()).await.unwrap();
    assert_eq!(
        GeometryClient::new(&tool).on_node("hidden-a").add(1, 2).await.unwrap(),
        3
    );
    // The hidden node sees the server; the server does not list it.
    assert_eq!(tool.nodes(), vec![NodeId::from("hidden-a")]);
    assert!(server.node.nodes().is_empty());
    let visible = caller("hidden-b").await;
    visible.connect(server.addr()).await.unwrap();
    // The first event the server reports is the visible node's.
    let first = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, Event::NodeUp(NodeId::from("hidden-b")));
}

/// Records whether its handler ran to the end or was dropped before.
#[malla::service(global)]
pub trait Slow {
    async fn work(&self, ms: u64) -> u64;
}

#[derive(Default, Clone)]
struct SlowWork {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

impl Slow for SlowWork {
    async fn work(&self, ms: u64) -> u64 {
        struct OnDrop(Arc<AtomicUsize>, Arc<AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                if !self.1.load(Ordering::SeqCst) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        let done = Arc::new(AtomicBool::new(false));
        let _guard = OnDrop(self.cancelled.clone(), done.clone());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        done.store(true, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        ms
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_times_out_and_cancels_the_handler() {
    let server = NodeRuntime::start(listening("deadline-a", COOKIE));
    let work = SlowWork::default();
    server.run(server.node.serve(SlowServer::new(work.clone()))).unwrap();
    let client = caller("deadline-b").await;
    client.connect(server.addr()).await.unwrap();
    let slow = SlowClient::new(&client).with_options(
        CallOptions::default()
            .nodes(["deadline-a"])
            .timeout(Duration::from_millis(100)),
    );

    let started = Instant::now();
    match slow.work(10_000).await {
        Err(Error::Timeout { timeout, method, .. }) => {
            assert_eq!(timeout, Duration::from_millis(100));
            assert_eq!(method, "work");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // The handler on the other node was dropped, not left running.
    let cancelled = wait_until(Duration::from_secs(2), || work.cancelled.load(Ordering::SeqCst) == 1).await;
    assert!(cancelled, "the handler was not cancelled");
    assert_eq!(work.finished.load(Ordering::SeqCst), 0);

    // Dropping a call future cancels it too.
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        SlowClient::new(&client).on_node("deadline-a").work(10_000),
    )
    .await;
    assert!(dropped.is_err());
    assert!(wait_until(Duration::from_secs(2), || work.cancelled.load(Ordering::SeqCst) == 2).await);
    // And a call within its deadline completes.
    assert_eq!(
        SlowClient::new(&client).on_node("deadline-a").work(10).await.unwrap(),
        10
    );
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// An older build of the `Geometry` service: same name, other types.
#[malla::service(global, name = "Geometry", vsn = "0.9.0")]
pub trait OldGeometry {
    async fn add(&self, a: i32, b: i32) -> i32;
}

/// A newer build, with a method the serving node does not have.
#[malla::service(global, name = "Geometry", vsn = "2.0.0")]
pub trait NewGeometry {
    async fn volume(&self, sides: u32) -> f64;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_another_version_get_a_signature_mismatch() {
    let server = geometry_node("sig-a");
    let client = caller("sig-b").await;
    client.connect(server.addr()).await.unwrap();
    match OldGeometryClient::new(&client).on_node("sig-a").add(1, 2).await {
        Err(Error::SignatureMismatch { service, method, node }) => {
            assert_eq!(
                (service.as_ref(), method.as_ref(), node.as_str()),
                ("Geometry", "add", "sig-a")
            );
        }
        other => panic!("expected SignatureMismatch, got {other:?}"),
    }
    assert!(matches!(
        NewGeometryClient::new(&client).on_node("sig-a").volume(3).await,
        Err(Error::SignatureMismatch { method, .. }) if method == "volume"
    ));
    // The connection is fine afterwards.
    assert_eq!(
        GeometryClient::new(&client).on_node("sig-a").add(1, 2).await.unwrap(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_share_the_connection_and_unknown_ones_are_not_available() {
    let server = geometry_node("multi-a");
    server
        .run(server.node.serve(SlowServer::new(SlowWork::default())))
        .unwrap();
    let client = caller("multi-b").await;
    client.connect(server.addr()).await.unwrap();
    let (geo, slow) = (
        GeometryClient::new(&client).on_node("multi-a"),
        SlowClient::new(&client).on_node("multi-a"),
    );
    let (sum, slept) = tokio::join!(geo.add(2, 3), slow.work(20));
    assert_eq!((sum.unwrap(), slept.unwrap()), (5, 20));
    assert!(matches!(
        UnservedClient::new(&client).on_node("multi-a").add(1, 2).await,
        Err(Error::ServiceNotAvailable { service, .. }) if service == "Unserved"
    ));
    let dynamic: Result<i64, _> = client
        .remote("Nope", "add", &(1i64, 2i64), CallOptions::default().nodes(["multi-a"]))
        .await;
    assert!(matches!(dynamic, Err(Error::ServiceNotAvailable { .. })));
    // A node nobody knows is down, not a hang.
    assert!(matches!(
        GeometryClient::new(&client).on_node("nobody").add(1, 2).await,
        Err(Error::NodeDown { node }) if node == "nobody"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_larger_than_the_peer_accepts_fail_alone() {
    let server = NodeRuntime::start(listening("frame-a", COOKIE).max_frame_size(4 * 1024));
    server
        .run(server.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();
    let client = caller("frame-b").await;
    client.connect(server.addr()).await.unwrap();
    let geo = GeometryClient::new(&client).on_node("frame-a");
    let big = vec![Point { x: 1, y: 2 }; 10_000];
    match geo.centroid(big).await {
        Err(Error::Codec { message, .. }) => assert!(message.contains("exceeds the maximum"), "{message}"),
        other => panic!("expected a codec error, got {other:?}"),
    }
    // Nothing was sent: the connection still works.
    assert_eq!(geo.add(1, 2).await.unwrap(), 3);
    // A reply too large for the caller is reported, not truncated.
    let small_client = Node::builder("frame-c")
        .cookie(COOKIE)
        .max_frame_size(1024)
        .start()
        .await
        .unwrap();
    small_client.connect(server.addr()).await.unwrap();
    let words = (0..300).map(|i| format!("word{i}")).collect();
    match GeometryClient::new(&small_client)
        .on_node("frame-a")
        .histogram(words)
        .await
    {
        Err(Error::Remote { message, .. }) => assert!(message.contains("does not fit"), "{message}"),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_name_their_cause() {
    let server = geometry_node("errors-a");
    // Nothing listens there.
    let closed = std::net::TcpListener::bind(localhost()).unwrap().local_addr().unwrap();
    let client = caller("errors-b").await;
    assert!(matches!(client.connect(closed).await, Err(Error::Connect { addr, .. }) if addr == closed));
    // A second live node with a connected node's name is refused.
    client.connect(server.addr()).await.unwrap();
    let twin = NodeRuntime::start(listening("errors-b", COOKIE));
    match twin.run(twin.node.connect(server.addr())) {
        Err(Error::Handshake { reason, .. }) => assert!(reason.contains("already uses this name"), "{reason}"),
        other => panic!("expected a handshake error, got {other:?}"),
    }
    // A node without a cookie cannot listen or dial.
    let no_cookie = Node::builder("errors-c").listen(localhost()).start().await;
    if std::env::var_os(malla::COOKIE_ENV).is_none() {
        assert!(matches!(no_cookie, Err(Error::Config(msg)) if msg.contains("MALLA_COOKIE")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_finishes_calls_in_flight() {
    let server = NodeRuntime::start(listening("leave-a", COOKIE));
    server
        .run(server.node.serve(SlowServer::new(SlowWork::default())))
        .unwrap();
    let client = caller("leave-b").await;
    let mut events = client.events();
    client.connect(server.addr()).await.unwrap();
    let slow = SlowClient::new(&client).on_node("leave-a");
    let in_flight = tokio::spawn({
        let slow = slow.clone();
        async move { slow.work(300).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.run(server.node.shutdown());
    assert_eq!(in_flight.await.unwrap().unwrap(), 300, "the call in flight finished");
    assert_eq!(events.recv().await.unwrap(), Event::NodeUp(NodeId::from("leave-a")));
    let down = tokio::time::timeout(Duration::from_secs(3), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(down, Event::NodeDown(NodeId::from("leave-a")));
    // It refuses new connections.
    assert!(client.connect(server.addr()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_handshake_is_dropped_and_the_node_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = NodeRuntime::start(listening("garbage-a", COOKIE).handshake_timeout(Duration::from_millis(300)));
    server
        .run(server.node.serve(GeometryServer::new(Geo::default())))
        .unwrap();

    let mut closes = Vec::new();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &0xffff_ffffu32.to_be_bytes()[..],
        &[0, 0, 0, 2, 0xff, 0xff][..],
        &[0, 0, 0, 9][..], // a frame that never arrives
        &[][..],           // a peer that says nothing at all
    ] {
        let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let started = Instant::now();
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "the node kept a garbage connection open: {garbage:?}");
        closes.push(started.elapsed());
    }
    // The stalled ones were dropped at the handshake timeout, not later.
    assert!(closes.iter().all(|d| *d < Duration::from_secs(2)), "{closes:?}");
    // The node still serves a real peer.
    let client = caller("garbage-b").await;
    client.connect(server.addr()).await.unwrap();
    assert_eq!(
        GeometryClient::new(&client)
            .on_node("garbage-a")
            .add(2, 2)
            .await
            .unwrap(),
        4
    );
}

/// Entry point of the child process of `nodes_in_separate_processes`; does
/// nothing in a normal test run.
#[test]
fn child_process_node() {
    let Ok(name) = std::env::var("MALLA_TEST_CHILD_NODE") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = listening(&name, COOKIE).start().await.unwrap();
        node.serve(GeometryServer::new(Geo::default())).await.unwrap();
        println!("LISTENING {}", node.local_addr().unwrap());
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_in_separate_processes() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_node", "--nocapture", "--test-threads=1"])
        .env("MALLA_TEST_CHILD_NODE", "proc-a")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest prints `test child_process_node ... ` on the same line.
            .find_map(|line| {
                line.split("LISTENING ")
                    .nth(1)
                    .map(|a| a.trim().parse::<std::net::SocketAddr>().unwrap())
            })
            .expect("the child printed its address")
    })
    .await
    .unwrap();

    let client = caller("proc-b").await;
    assert_eq!(client.connect(addr).await.unwrap(), "proc-a");
    let geo = GeometryClient::new(&client).on_node("proc-a").with_options(
        CallOptions::default()
            .nodes(["proc-a"])
            .timeout(Duration::from_secs(30)),
    );
    exercise_every_shape(&geo).await;

    let in_flight = tokio::spawn({
        let geo = geo.clone();
        async move { geo.sleep_ms(20_000).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(matches!(in_flight.await.unwrap(), Err(Error::NodeDown { .. })));
    assert!(killed.elapsed() < Duration::from_secs(1));
}
