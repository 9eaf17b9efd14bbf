//! The contenders of the network benchmarks, set up once over loopback and
//! driven the same way:
//!
//! - [`Contender::Raw`]: tokio TCP ping-pong of the same byte counts as
//!   malla's frames (measured through a counting proxy at start-up); with
//!   many callers, pipelined from one writer and one reader: the floor;
//! - [`Contender::RawMux`]: the same bytes through a plain multiplexed
//!   client (caller tasks, a writer task, a reader task, a map of oneshots):
//!   the naive way to share a connection, without malla's protocol;
//! - [`Contender::Tarpc`]: tarpc 0.38 over TCP (bincode) serving the same `add`;
//! - [`Contender::Malla`]: a malla node calling another, sealed (the default);
//! - [`Contender::MallaUnsealed`]: the same with sealing off on both nodes,
//!   to show what sealing costs;
//! - [`Contender::MallaLayered`]: sealed, with one trivial interceptor on
//!   each side (a counter), to show what call layers cost.
//!
//! All client work runs inside a spawned task, so no contender pays for
//! hopping to the `block_on` thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tarpc::tokio_serde::formats::Bincode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::raw_mux::RawMux;
use crate::{Adder, BenchClient, BenchServer};

/// Concurrent callers of the throughput measurement, all on one connection.
pub const CALLERS: usize = 64;

/// Where the client and server sides run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One 2-worker runtime for both sides: what `#[tokio::main]` gives on
    /// this 2-core machine, and the layout in which tarpc takes the ~45 µs of
    /// the project's calibration.
    Shared,
    /// A single-worker runtime per side, as two processes would have.
    Split,
}

impl Layout {
    /// `MALLA_BENCH_RUNTIME=split` picks [`Layout::Split`]; anything else, shared.
    pub fn from_env() -> Self {
        match std::env::var("MALLA_BENCH_RUNTIME").as_deref() {
            Ok("split") => Layout::Split,
            _ => Layout::Shared,
        }
    }

    fn runtimes(self) -> (Arc<Runtime>, Arc<Runtime>) {
        match self {
            Layout::Split => (Arc::new(runtime(1)), Arc::new(runtime(1))),
            Layout::Shared => {
                let rt = Arc::new(runtime(2));
                (rt.clone(), rt)
            }
        }
    }
}

/// One of the implementations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    Raw,
    RawMux,
    Tarpc,
    Malla,
    MallaUnsealed,
    MallaLayered,
}

impl Contender {
    pub const ALL: [Contender; 6] = [
        Contender::Raw,
        Contender::RawMux,
        Contender::Tarpc,
        Contender::Malla,
        Contender::MallaUnsealed,
        Contender::MallaLayered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Raw => "raw tcp",
            Contender::RawMux => "raw mux",
            Contender::Tarpc => "tarpc",
            Contender::Malla => "malla",
            Contender::MallaUnsealed => "malla unsealed",
            Contender::MallaLayered => "malla+layers",
        }
    }
}

/// A connected client of each contender, with its servers running.
pub struct Contenders {
    client_rt: Arc<Runtime>,
    // Runs the servers; kept alive with the clients.
    _server_rt: Arc<Runtime>,
    request: usize,
    reply: usize,
    raw: Arc<tokio::sync::Mutex<TcpStream>>,
    raw_mux: RawMux,
    tarpc: TarpcBenchClient,
    malla: BenchClient,
    malla_unsealed: BenchClient,
    malla_layered: BenchClient,
    _malla_nodes: [malla::Node; 3],
}

impl Contenders {
    pub fn start(layout: Layout) -> Self {
        let (server_rt, client_rt) = layout.runtimes();
        let (request, reply) = measure_frame_sizes(&server_rt, &client_rt);

        let raw_addr = server_rt.block_on(raw_server(request, reply));
        let raw_mux = client_rt.block_on(RawMux::connect(raw_addr, request, reply));
        let tarpc_addr = server_rt.block_on(tarpc_server());
        let (malla_node, malla) = malla_pair(&server_rt, &client_rt, true);
        let (unsealed_node, malla_unsealed) = malla_pair(&server_rt, &client_rt, false);
        let (layered_node, malla_layered) = layered_pair(&server_rt, &client_rt);
        let tarpc = client_rt.block_on(tarpc_client(tarpc_addr));
        let raw = client_rt.block_on(async {
            let stream = TcpStream::connect(raw_addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            Arc::new(tokio::sync::Mutex::new(stream))
        });
        Contenders {
            client_rt,
            _server_rt: server_rt,
            request,
            reply,
            raw,
            raw_mux,
            tarpc,
            malla,
            malla_unsealed,
            malla_layered,
            _malla_nodes: [malla_node, unsealed_node, layered_node],
        }
    }

    /// Bytes of a malla request and reply frame for `add`, length prefix included.
    pub fn frame_sizes(&self) -> (usize, usize) {
        (self.request, self.reply)
    }

    /// Time for `calls` sequential calls by one caller.
    pub fn round_trips(&self, who: Contender, calls: u64) -> Duration {
        self.latencies(who, calls).into_iter().sum()
    }

    /// The time of each of `calls` sequential calls by one caller.
    pub fn latencies(&self, who: Contender, calls: u64) -> Vec<Duration> {
        match who {
            Contender::Raw => {
                let (raw, request, reply) = (self.raw.clone(), self.request, self.reply);
                self.in_task(async move {
                    let mut stream = raw.lock().await;
                    let req = vec![0u8; request];
                    let mut resp = vec![0u8; reply];
                    let mut times = Vec::with_capacity(calls as usize);
                    for _ in 0..calls {
                        let start = Instant::now();
                        stream.write_all(&req).await.unwrap();
                        stream.read_exact(&mut resp).await.unwrap();
                        times.push(start.elapsed());
                    }
                    times
                })
            }
            Contender::RawMux => {
                let mux = self.raw_mux.clone();
                self.in_task(timed(calls, move |_| {
                    let mux = mux.clone();
                    async move { mux.call().await }
                }))
            }
            Contender::Tarpc => {
                let tarpc = self.tarpc.clone();
                self.in_task(timed(calls, move |i| {
                    let tarpc = tarpc.clone();
                    async move {
                        tarpc.add(tarpc::context::current(), i as i64, 2).await.unwrap();
                    }
                }))
            }
            Contender::Malla | Contender::MallaUnsealed | Contender::MallaLayered => {
                let malla = self.malla(who);
                self.in_task(timed(calls, move |i| {
                    let malla = malla.clone();
                    async move {
                        malla.add(i as i64, 2).await.unwrap();
                    }
                }))
            }
        }
    }

    /// Time for [`CALLERS`] concurrent callers to make `calls_each` calls
    /// each on one connection. The raw contender keeps as many requests in
    /// flight with one writer and one reader.
    pub fn concurrent(&self, who: Contender, calls_each: u64) -> Duration {
        match who {
            Contender::Raw => {
                let (raw, request, reply) = (self.raw.clone(), self.request, self.reply);
                self.in_task(async move {
                    let mut stream = raw.lock().await;
                    let (mut read, mut write) = stream.split();
                    let total = calls_each as usize * CALLERS;
                    let start = Instant::now();
                    let writer = async {
                        let req = vec![0u8; request * CALLERS];
                        for _ in 0..calls_each {
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
                })
            }
            Contender::RawMux => {
                let mux = self.raw_mux.clone();
                self.in_task(callers(move || {
                    let mux = mux.clone();
                    async move {
                        for _ in 0..calls_each {
                            mux.call().await;
                        }
                    }
                }))
            }
            Contender::Tarpc => {
                let tarpc = self.tarpc.clone();
                self.in_task(callers(move || {
                    let tarpc = tarpc.clone();
                    async move {
                        for i in 0..calls_each {
                            tarpc.add(tarpc::context::current(), i as i64, 2).await.unwrap();
                        }
                    }
                }))
            }
            Contender::Malla | Contender::MallaUnsealed | Contender::MallaLayered => {
                let malla = self.malla(who);
                self.in_task(callers(move || {
                    let malla = malla.clone();
                    async move {
                        for i in 0..calls_each {
                            malla.add(i as i64, 2).await.unwrap();
                        }
                    }
                }))
            }
        }
    }

    fn malla(&self, who: Contender) -> BenchClient {
        match who {
            Contender::MallaUnsealed => self.malla_unsealed.clone(),
            Contender::MallaLayered => self.malla_layered.clone(),
            _ => self.malla.clone(),
        }
    }

    fn in_task<T: Send + 'static>(&self, body: impl Future<Output = T> + Send + 'static) -> T {
        self.client_rt.block_on(async { tokio::spawn(body).await.unwrap() })
    }
}

/// Makes `calls` sequential calls with `call` (given the call's number);
/// returns the time of each.
async fn timed<F, Fut>(calls: u64, call: F) -> Vec<Duration>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let start = Instant::now();
        call(i).await;
        times.push(start.elapsed());
    }
    times
}

/// Runs [`CALLERS`] tasks made by `caller` at once; returns the time until
/// the last one is done.
async fn callers<F, Fut>(caller: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS).map(|_| tokio::spawn(caller())).collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A client node connected to a new server node, and a client of `Bench`
/// on it; `sealed` or not on both nodes.
fn malla_pair(server_rt: &Runtime, client_rt: &Runtime, sealed: bool) -> (malla::Node, BenchClient) {
    let name = if sealed { "server" } else { "server-unsealed" };
    let addr = server_rt.block_on(malla_server(name, sealed));
    client_rt.block_on(malla_client(&format!("client-of-{name}"), addr, name, sealed))
}

/// Like [`malla_pair`], sealed, with a trivial interceptor on each side.
fn layered_pair(server_rt: &Runtime, client_rt: &Runtime) -> (malla::Node, BenchClient) {
    let addr = server_rt.block_on(async {
        let options = malla::ServeOptions::default().intercept(Counted::default());
        serve_bench("server-layered", true, options).await
    });
    let (node, client) = client_rt.block_on(malla_client("client-of-server-layered", addr, "server-layered", true));
    (node, client.with_interceptor(Counted::default()))
}

/// The trivial interceptor: counts what it sees, changes nothing.
#[derive(Default)]
struct Counted(AtomicU64);

impl malla::Interceptor for Counted {
    fn before_call(&self, _: &mut malla::CallInfo<'_>) -> malla::Decision {
        self.0.fetch_add(1, Ordering::Relaxed);
        malla::Decision::Continue
    }
}

impl malla::ServeInterceptor for Counted {
    fn before(&self, _: &malla::ServedCall<'_>) -> Result<(), malla::Rejection> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A node called `name` (cookie `bench`, sealing or not) connected to the
/// server `server` at `addr`, and a client of its `Bench`.
pub async fn malla_client(name: &str, addr: SocketAddr, server: &str, sealed: bool) -> (malla::Node, BenchClient) {
    let client = malla::Node::builder(name)
        .cookie("bench-cookie-0123456789")
        .sealing(sealed)
        .start()
        .await
        .unwrap();
    client.connect(addr).await.unwrap();
    let calc = BenchClient::new(&client).on_node(server);
    (client, calc)
}

/// Starts a node serving `Bench` on loopback (cookie `bench`), sealing or
/// not, that lives as long as the runtime; returns its address.
pub async fn malla_server(name: &str, sealed: bool) -> SocketAddr {
    serve_bench(name, sealed, malla::ServeOptions::default()).await
}

async fn serve_bench(name: &str, sealed: bool, options: malla::ServeOptions) -> SocketAddr {
    let server = malla::Node::builder(name)
        .cookie("bench-cookie-0123456789")
        .sealing(sealed)
        .listen(localhost())
        .start()
        .await
        .unwrap();
    server.serve_with(BenchServer::new(Adder), options).await.unwrap();
    let addr = server.local_addr().unwrap();
    // The benchmark process ends with it.
    std::mem::forget(server);
    addr
}

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
                let mut inbox = tokio::io::BufReader::new(&mut read);
                // Each reply starts with the request's first 8 bytes: the id
                // of the multiplexed client's requests.
                let answer = |req: &[u8], answers: &mut Vec<u8>| {
                    answers.extend_from_slice(&req[..8]);
                    answers.resize(answers.len() + reply - 8, 1);
                };
                let mut answers = Vec::new();
                while inbox.read_exact(&mut req).await.is_ok() {
                    // Answer everything already received in one write, as a
                    // pipelined server would.
                    answers.clear();
                    answer(&req, &mut answers);
                    while inbox.buffer().len() >= request {
                        inbox.read_exact(&mut req).await.unwrap();
                        answer(&req, &mut answers);
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

/// Counts the bytes of a thousand malla calls through a proxy: the sizes the
/// raw contender must move.
fn measure_frame_sizes(server_rt: &Runtime, client_rt: &Runtime) -> (usize, usize) {
    let server_addr = server_rt.block_on(malla_server("sizer", true));
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let proxy_addr = server_rt.block_on(counting_proxy(server_addr, up.clone(), down.clone()));
    client_rt.block_on(async {
        let client = malla::Node::builder("sizer-client")
            .cookie("bench-cookie-0123456789")
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

/// Forwards one connection to `server`, counting the bytes each way.
async fn counting_proxy(server: SocketAddr, up: Arc<AtomicU64>, down: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(server).await.unwrap();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(client_read, server_write, up));
        pump(server_read, client_write, down).await;
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
) {
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

/// `Bench` for tarpc.
#[tarpc::service]
pub trait TarpcBench {
    async fn add(a: i64, b: i64) -> i64;
}

#[derive(Clone)]
struct TarpcAdder;

impl TarpcBench for TarpcAdder {
    async fn add(self, _: tarpc::context::Context, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// Starts a tarpc server of `add` on loopback; returns its address.
pub async fn tarpc_server() -> SocketAddr {
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

/// A tarpc client on its own connection to `addr`.
pub async fn tarpc_client(addr: SocketAddr) -> TarpcBenchClient {
    let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default)
        .await
        .unwrap();
    transport.get_ref().set_nodelay(true).unwrap();
    TarpcBenchClient::new(tarpc::client::Config::default(), transport).spawn()
}
