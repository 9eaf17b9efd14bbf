//! Proves that the wire is sealed against an attacker on the path: a TCP
//! proxy between two real nodes records what passes and, once the handshake
//! is done, flips a bit, drops, duplicates or reorders what it forwards.
//! Nothing it records shows an argument or a reply; every tampering closes
//! the connection; no caller ever receives a wrong result; nothing panics.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use common::*;
use malla::{CallOptions, Node, NodeId};
use malla_test_support::{
    nodes::{NodeRuntime, listening},
    wait::time_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const COOKIE: &str = "sealed-wire-test-cookie";

/// Panics anywhere in this test binary, on any thread.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// What the proxy does to the next chunk it forwards in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    FlipBit,
    Drop,
    Duplicate,
    Reorder,
}

/// Which way a chunk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ToServer,
    ToClient,
}

#[derive(Default)]
struct ProxyState {
    /// The tampering to do once, and on which way.
    armed: Mutex<Option<(Tamper, Way)>>,
    /// Whether it was done.
    done: AtomicBool,
    /// Everything forwarded, both ways.
    recorded: Mutex<Vec<u8>>,
    /// Set when the proxied connection ended.
    closed: AtomicBool,
}

/// A proxy in front of `server` for one connection.
async fn proxy(server: SocketAddr) -> (SocketAddr, Arc<ProxyState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(ProxyState::default());
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(server).await.unwrap();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = upstream.into_split();
        let to_server = forward(client_read, server_write, Way::ToServer, Arc::clone(&shared));
        let to_client = forward(server_read, client_write, Way::ToClient, Arc::clone(&shared));
        // The connection is over when either side hangs up.
        tokio::select! {
            () = to_server => {}
            () = to_client => {}
        }
        shared.closed.store(true, Ordering::SeqCst);
    });
    (addr, state)
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    way: Way,
    state: Arc<ProxyState>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut held: Option<Vec<u8>> = None;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        state.recorded.lock().unwrap().extend_from_slice(&chunk);
        let tamper = {
            let mut armed = state.armed.lock().unwrap();
            match *armed {
                Some((tamper, w)) if w == way => armed.take().map(|_| tamper),
                _ => None,
            }
        };
        let out: Vec<Vec<u8>> = match tamper {
            None => match held.take() {
                // The held chunk goes after the one that came later.
                Some(earlier) => vec![chunk, earlier],
                None => vec![chunk],
            },
            Some(Tamper::FlipBit) => {
                let at = chunk.len() / 2;
                chunk[at] ^= 0x04;
                vec![chunk]
            }
            Some(Tamper::Drop) => vec![],
            Some(Tamper::Duplicate) => vec![chunk.clone(), chunk],
            Some(Tamper::Reorder) => {
                held = Some(chunk);
                vec![]
            }
        };
        if tamper.is_some() {
            state.done.store(true, Ordering::SeqCst);
        }
        for part in out {
            if to.write_all(&part).await.is_err() {
                return;
            }
        }
    }
}

fn server() -> NodeRuntime {
    let node = NodeRuntime::start(listening("sealed-server", COOKIE));
    node.run(node.node.serve(GeometryServer::new(Geo::default()))).unwrap();
    node
}

/// A client node connected to the server through a fresh proxy.
async fn client_through_proxy(server: &NodeRuntime, name: &str) -> (Node, NodeId, Arc<ProxyState>) {
    let (addr, state) = proxy(server.addr()).await;
    let client = Node::builder(name).cookie(COOKIE).hidden().start().await.unwrap();
    let server_id = client.connect(addr).await.unwrap();
    (client, server_id, state)
}

async fn hello(client: &GeometryClient, i: usize) -> Result<(), String> {
    let name = format!("caller-{i}");
    match client.hello(name.clone()).await {
        Ok(reply) if reply == format!("hello {name}") => Ok(()),
        Ok(wrong) => panic!("call {i} received a wrong result: {wrong:?}"),
        Err(err) => Err(err.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_on_the_path_can_read_the_calls() {
    count_panics();
    let server = server();
    let (client, server_id, state) = client_through_proxy(&server, "reader-client").await;
    let geometry = GeometryClient::new(&client).on_node(server_id);
    let secret = "a-string-argument-nobody-may-read";
    assert_eq!(geometry.hello(secret.into()).await.unwrap(), format!("hello {secret}"));
    assert_eq!(geometry.parse("424242".into()).await.unwrap(), Ok(424242));
    let recorded = state.recorded.lock().unwrap().clone();
    println!("recorded {} bytes between the nodes", recorded.len());
    assert!(recorded.len() > 200, "the proxy saw the traffic");
    for needle in [secret.as_bytes(), b"hello a-string", b"424242", b"Geometry", b"hello"] {
        assert!(
            !recorded.windows(needle.len()).any(|w| w == needle),
            "{:?} is readable on the wire",
            String::from_utf8_lossy(needle)
        );
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_on_the_path_closes_the_connection_and_never_yields_a_wrong_result() {
    count_panics();
    let server = server();
    for tamper in [Tamper::FlipBit, Tamper::Drop, Tamper::Duplicate, Tamper::Reorder] {
        for way in [Way::ToServer, Way::ToClient] {
            let name = format!("tamper-{tamper:?}-{way:?}").to_lowercase();
            let (client, server_id, state) = client_through_proxy(&server, &name).await;
            let options = CallOptions::default()
                .nodes([server_id])
                .timeout(Duration::from_secs(2));
            let geometry = GeometryClient::new(&client).with_options(options);
            // The handshake is done and a call went through: now tamper.
            hello(&geometry, 0).await.unwrap();
            *state.armed.lock().unwrap() = Some((tamper, way));

            let mut errors = 0;
            for i in 1..=40 {
                if hello(&geometry, i).await.is_err() {
                    errors += 1;
                }
                if state.closed.load(Ordering::SeqCst) {
                    break;
                }
            }
            let closed = time_until(Duration::from_secs(5), || state.closed.load(Ordering::SeqCst)).await;
            println!(
                "{tamper:?} {way:?}: tampered {}, {errors} failed calls, closed after {closed:?}",
                { state.done.load(Ordering::SeqCst) }
            );
            assert!(
                state.done.load(Ordering::SeqCst),
                "{tamper:?} {way:?}: nothing was tampered with"
            );
            assert!(closed.is_some(), "{tamper:?} {way:?}: the connection stayed open");
            client.shutdown().await;
        }
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
