//! A small call over loopback TCP, side by side in one run:
//!
//! - `raw`: tokio TCP ping-pong of the same byte counts as malla's frames
//!   (measured through a counting proxy at start-up): the floor;
//! - `tarpc`: tarpc 0.38 over TCP (bincode) serving the same `add`;
//! - `malla`: a malla node calling another.
//!
//! Round trip: one caller, sequential calls. Throughput: 64 concurrent
//! callers on one connection (raw: one writer and one reader keeping 64
//! requests in flight). All client work happens inside spawned tasks, so no
//! contender pays for hopping to the `block_on` thread; see `runtimes` for the
//! runtime layout.
//!
//! ```text
//! cargo bench -p malla-benches --bench network
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use malla_benches::{Adder, BenchClient, BenchServer};
use tarpc::tokio_serde::formats::Bincode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const CALLERS: usize = 64;

fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// By default both sides share one 2-worker runtime (what `#[tokio::main]`
/// gives on this 2-core machine, and the layout in which tarpc takes the
/// ~45 µs of the project's calibration). `MALLA_BENCH_RUNTIME=split` gives
/// each side its own single-worker runtime instead, as two processes would
/// have.
fn runtimes() -> (Arc<Runtime>, Arc<Runtime>) {
    match std::env::var("MALLA_BENCH_RUNTIME").as_deref() {
        Ok("split") => (Arc::new(runtime(1)), Arc::new(runtime(1))),
        _ => {
            let rt = Arc::new(runtime(2));
            (rt.clone(), rt)
        }
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

// ---------------------------------------------------------------- malla --

/// A node serving `Bench`, kept alive by its runtime's tasks.
async fn malla_server(name: &str) -> SocketAddr {
    let server = malla::Node::builder(name)
        .cookie("bench")
        .listen(localhost())
        .start()
        .await
        .unwrap();
    server.serve(BenchServer::new(Adder)).await.unwrap();
    let addr = server.local_addr().unwrap();
    // The benchmark process ends with it.
    std::mem::forget(server);
    addr
}

// ------------------------------------------------------------------ raw --

async fn raw_server(request: usize, reply: usize) -> SocketAddr {
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let mut req = vec![0u8; request];
                let resp = vec![1u8; reply];
                let mut inbox = tokio::io::BufReader::new(&mut read);
                while inbox.read_exact(&mut req).await.is_ok() {
                    // Answer everything already received in one write, as a
                    // pipelined server would.
                    let mut answers = resp.clone();
                    while inbox.buffer().len() >= request {
                        inbox.read_exact(&mut req).await.unwrap();
                        answers.extend_from_slice(&resp);
                    }
                    if write.write_all(&answers).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Counts the bytes of `calls` malla calls through a proxy: the sizes the raw
/// contender must move.
fn measure_frame_sizes(rt_server: &Runtime, rt_client: &Runtime) -> (usize, usize) {
    let server_addr = rt_server.block_on(malla_server("sizer"));
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let proxy_addr = rt_server.block_on({
        let (up, down) = (up.clone(), down.clone());
        async move {
            let listener = TcpListener::bind(localhost()).await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (client, _) = listener.accept().await.unwrap();
                let server = TcpStream::connect(server_addr).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let pump = |counter: Arc<AtomicU64>| {
                    move |mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf| async move {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            let n = from.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                tokio::spawn(pump(up)(cr, sw));
                pump(down)(sr, cw).await;
            });
            addr
        }
    });
    rt_client.block_on(async {
        let client = malla::Node::builder("sizer-client")
            .cookie("bench")
            .start()
            .await
            .unwrap();
        client.connect(proxy_addr).await.unwrap();
        let calc = BenchClient::new(&client).on_node("sizer");
        calc.add(1, 2).await.unwrap();
        let (up0, down0) = (up.load(Ordering::SeqCst), down.load(Ordering::SeqCst));
        let calls = 1000u64;
        for i in 0..calls {
            calc.add(i as i64, 2).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = (up.load(Ordering::SeqCst) - up0) / calls;
        let reply = (down.load(Ordering::SeqCst) - down0) / calls;
        (request as usize, reply as usize)
    })
}

// ---------------------------------------------------------------- tarpc --

#[tarpc::service]
trait TarpcBench {
    async fn add(a: i64, b: i64) -> i64;
}

#[derive(Clone)]
struct TarpcAdder;

impl TarpcBench for TarpcAdder {
    async fn add(self, _: tarpc::context::Context, a: i64, b: i64) -> i64 {
        a + b
    }
}

async fn tarpc_server() -> SocketAddr {
    use tarpc::server::{BaseChannel, Channel};
    let mut incoming = tarpc::serde_transport::tcp::listen(localhost(), Bincode::default)
        .await
        .unwrap();
    incoming.config_mut().max_frame_length(16 * 1024 * 1024);
    let addr = incoming.local_addr();
    tokio::spawn(async move {
        while let Some(Ok(transport)) = incoming.next().await {
            let _ = transport.get_ref().set_nodelay(true);
            let channel = BaseChannel::with_defaults(transport);
            tokio::spawn(channel.execute(TarpcAdder.serve()).for_each(|response| async move {
                tokio::spawn(response);
            }));
        }
    });
    addr
}

async fn tarpc_client(addr: SocketAddr) -> TarpcBenchClient {
    let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default)
        .await
        .unwrap();
    transport.get_ref().set_nodelay(true).unwrap();
    TarpcBenchClient::new(tarpc::client::Config::default(), transport).spawn()
}

// ------------------------------------------------------------ harness --

/// Runs `body(iters)` inside a task on `rt` and returns its own timing.
fn in_task<F, Fut>(rt: &Runtime, body: F, iters: u64) -> Duration
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Duration> + Send + 'static,
{
    rt.block_on(async { tokio::spawn(body(iters)).await.unwrap() })
}

fn bench(c: &mut Criterion) {
    let (rt_server, rt_client) = runtimes();

    let (request, reply) = measure_frame_sizes(&rt_server, &rt_client);
    eprintln!("malla frames for Bench.add(i, 2): request {request} bytes, reply {reply} bytes");

    let raw_addr = rt_server.block_on(raw_server(request, reply));
    let tarpc_addr = rt_server.block_on(tarpc_server());
    let malla_addr = rt_server.block_on(malla_server("server"));
    let (_client_node, malla) = rt_client.block_on(async {
        let client = malla::Node::builder("client").cookie("bench").start().await.unwrap();
        client.connect(malla_addr).await.unwrap();
        let calc = BenchClient::new(&client).on_node("server");
        (client, calc)
    });
    let tarpc = rt_client.block_on(tarpc_client(tarpc_addr));
    let raw = rt_client.block_on(async {
        let stream = TcpStream::connect(raw_addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Arc::new(tokio::sync::Mutex::new(stream))
    });

    let mut group = c.benchmark_group("round trip");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("raw tcp", |b| {
        b.iter_custom(|iters| {
            let raw = raw.clone();
            in_task(
                &rt_client,
                move |iters| async move {
                    let mut stream = raw.lock().await;
                    let req = vec![0u8; request];
                    let mut resp = vec![0u8; reply];
                    let start = Instant::now();
                    for _ in 0..iters {
                        stream.write_all(&req).await.unwrap();
                        stream.read_exact(&mut resp).await.unwrap();
                    }
                    start.elapsed()
                },
                iters,
            )
        })
    });
    group.bench_function("tarpc", |b| {
        b.iter_custom(|iters| {
            let tarpc = tarpc.clone();
            in_task(
                &rt_client,
                move |iters| async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        tarpc.add(tarpc::context::current(), i as i64, 2).await.unwrap();
                    }
                    start.elapsed()
                },
                iters,
            )
        })
    });
    group.bench_function("malla", |b| {
        b.iter_custom(|iters| {
            let malla = malla.clone();
            in_task(
                &rt_client,
                move |iters| async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        malla.add(i as i64, 2).await.unwrap();
                    }
                    start.elapsed()
                },
                iters,
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("64 callers, one connection");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CALLERS as u64));
    group.bench_function("raw tcp (64 in flight)", |b| {
        b.iter_custom(|iters| {
            let raw = raw.clone();
            in_task(
                &rt_client,
                move |iters| async move {
                    let mut stream = raw.lock().await;
                    let (mut read, mut write) = stream.split();
                    let total = iters as usize * CALLERS;
                    let start = Instant::now();
                    let writer = async {
                        let req = vec![0u8; request * CALLERS];
                        for _ in 0..iters {
                            write.write_all(&req).await.unwrap();
                        }
                    };
                    let reader = async {
                        let mut resp = vec![0u8; reply];
                        for _ in 0..total {
                            read.read_exact(&mut resp).await.unwrap();
                        }
                    };
                    tokio::join!(writer, reader);
                    start.elapsed()
                },
                iters,
            )
        })
    });
    group.bench_function("tarpc", |b| {
        b.iter_custom(|iters| {
            let tarpc = tarpc.clone();
            in_task(
                &rt_client,
                move |iters| async move {
                    let start = Instant::now();
                    let callers: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let tarpc = tarpc.clone();
                            tokio::spawn(async move {
                                for i in 0..iters {
                                    tarpc.add(tarpc::context::current(), i as i64, 2).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for caller in callers {
                        caller.await.unwrap();
                    }
                    start.elapsed()
                },
                iters,
            )
        })
    });
    group.bench_function("malla", |b| {
        b.iter_custom(|iters| {
            let malla = malla.clone();
            in_task(
                &rt_client,
                move |iters| async move {
                    let start = Instant::now();
                    let callers: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let malla = malla.clone();
                            tokio::spawn(async move {
                                for i in 0..iters {
                                    malla.add(i as i64, 2).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for caller in callers {
                        caller.await.unwrap();
                    }
                    start.elapsed()
                },
                iters,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
