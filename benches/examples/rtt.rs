//! Sequential round trips, raw, raw with a reader-task hop (`hop`), malla or
//! malla with sealing off (`unsealed`), for profiling one side at a time:
//! `cargo run --release -p malla-benches --example rtt -- malla 200000`
//! (`RT=shared`: both sides on one two-worker runtime; `RT=current`: a
//! current-thread runtime per side; default: a one-worker runtime per side).

use std::time::Instant;

use malla_benches::{malla_client, malla_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> tokio::runtime::Runtime {
    if std::env::var("RT").as_deref() == Ok("shared") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    } else if std::env::var("RT").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }
}

/// Answers each 34-byte request (malla's request frame) with 9 bytes (its reply).
async fn raw_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut req = [0u8; 34];
        while s.read_exact(&mut req).await.is_ok() {
            s.write_all(&[1u8; 9]).await.unwrap();
        }
    });
    addr
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "malla".into());
    let n: u64 = args.next().map(|s| s.parse().unwrap()).unwrap_or(100_000);
    let server_rt = std::sync::Arc::new(rt());
    // A current-thread runtime runs only inside `block_on`: give the server its own thread.
    {
        let rt = server_rt.clone();
        std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    }
    // `RT=shared`: one two-worker runtime for both sides, as `#[tokio::main]`.
    let client_rt = if std::env::var("RT").as_deref() == Ok("shared") {
        server_rt.clone()
    } else {
        std::sync::Arc::new(rt())
    };
    let elapsed = match which.as_str() {
        "raw" => {
            let addr = server_rt.block_on(raw_server());
            client_rt.block_on(async move {
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut resp = [0u8; 9];
                    let start = Instant::now();
                    for _ in 0..n {
                        s.write_all(&[0u8; 34]).await.unwrap();
                        s.read_exact(&mut resp).await.unwrap();
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        }
        // Raw bytes, but the reply reaches the caller through a reader task
        // and a oneshot, as in any multiplexed client: the cost of that hop.
        "hop" => {
            let addr = server_rt.block_on(raw_server());
            client_rt.block_on(async move {
                tokio::spawn(async move {
                    type Waiter = tokio::sync::oneshot::Sender<[u8; 9]>;
                    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let (mut read, write) = s.into_split();
                    let waiter = std::sync::Arc::new(std::sync::Mutex::new(None::<Waiter>));
                    let slot = waiter.clone();
                    tokio::spawn(async move {
                        let mut resp = [0u8; 9];
                        while read.read_exact(&mut resp).await.is_ok() {
                            if let Some(tx) = slot.lock().unwrap().take() {
                                let _ = tx.send(resp);
                            }
                        }
                    });
                    let start = Instant::now();
                    for _ in 0..n {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        *waiter.lock().unwrap() = Some(tx);
                        write.try_write(&[0u8; 34]).unwrap();
                        rx.await.unwrap();
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        }
        _ => {
            let sealed = which != "unsealed";
            let addr = server_rt.block_on(malla_server("server", sealed));
            client_rt.block_on(async move {
                tokio::spawn(async move {
                    let (_client, calc) = malla_client("client", addr, "server", sealed).await;
                    let start = Instant::now();
                    for i in 0..n {
                        calc.add(i as i64, 2).await.unwrap();
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        }
    };
    println!(
        "{which}: {:.2} µs per round trip",
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
}
