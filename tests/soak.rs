//! The chaos soak: three server node processes serve `Ledger`, whose
//! non-idempotent `record` writes each execution to its process's log before
//! answering; callers in this process call it and an idempotent method
//! concurrently while a driver kills (SIGKILL) and restarts the processes
//! and cuts and heals their network (nftables, as the partition tests do).
//! At the end it checks the promises callers rely on:
//!
//! - no non-idempotent call ever ran twice;
//! - one that returned `ServiceNotAvailable` or `Overloaded` ran nowhere;
//! - one that returned `Ok` ran exactly once;
//! - while at least one instance was healthy, no idempotent call failed
//!   (the driver never impairs the last healthy one);
//! - no process panicked.
//!
//! `cargo test --test soak` runs it for 45 s; `MALLA_SOAK_SECS=600` runs it
//! longer, `MALLA_SOAK_SEED` replays a schedule of faults. Partitions need
//! root and `nft`; with `MALLA_SKIP_PARTITION_TESTS=1` the soak only kills.
//!
//! The logs are durable against SIGKILL without `fsync`: a `write` that
//! returned is in the page cache, which the death of the process does not
//! lose (a machine crash would; that is not what this soak injects).

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use malla::{CallOptions, Error, Node};
use malla_test_support::nodes::NodeRuntime;
use malla_test_support::partition::Partition;
use malla_test_support::process::role;

const COOKIE: &str = "soak-test-cookie";
const SERVERS: usize = 3;
/// How long a restarted or healed server must have been seen by the caller
/// before it counts as healthy again: the time a dead node takes to leave
/// routes, so that the name seen is the new incarnation's.
const SETTLE: Duration = Duration::from_secs(3);
/// Every call's deadline: longer than a partitioned connection takes to be
/// declared dead (4 ticks of 500 ms), so that idempotent calls can fail over.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[malla::service(global)]
pub trait Ledger {
    /// Not idempotent: logs `call` as executed here, then answers it.
    async fn record(&self, call: u64) -> u64;
    /// Idempotent: answers `x`.
    #[malla(idempotent)]
    async fn echo(&self, x: u64) -> u64;
}

/// The servers' implementation: one log file per server slot, appended to by
/// each of its incarnations.
struct FileLedger {
    log: Mutex<File>,
}

impl Ledger for FileLedger {
    async fn record(&self, call: u64) -> u64 {
        // One `write` per execution, done before the reply leaves.
        let line = format!("{call}\n");
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.write_all(line.as_bytes()).expect("the ledger log takes the line");
        call
    }

    async fn echo(&self, x: u64) -> u64 {
        x
    }
}

/// The server process: started by the soak as this test binary with
/// `MALLA_SOAK_ROLE=server`; runs until killed.
#[test]
#[ignore = "the server process of the soak, which starts it"]
fn soak_server_process() {
    if std::env::var_os("MALLA_SOAK_ROLE").is_none() {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the soak"));
    let name = var("MALLA_SOAK_NAME");
    let listen: SocketAddr = var("MALLA_SOAK_LISTEN").parse().expect("an address");
    let seed: SocketAddr = var("MALLA_SOAK_SEED_ADDR").parse().expect("an address");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(var("MALLA_SOAK_LOG"))
        .expect("the ledger log opens");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let node = Node::builder(name)
            .cookie(COOKIE)
            .listen(listen)
            .seeds([seed])
            .start()
            .await
            .expect("the server starts");
        node.serve(LedgerServer::new(FileLedger { log: Mutex::new(log) }))
            .await
            .expect("Ledger is served");
        println!("READY {}", node.local_addr().expect("listening"));
        std::future::pending::<()>().await;
    });
}

/// What a non-idempotent call returned, as far as the promises go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    Ok,
    NotAvailable,
    Overloaded,
    NodeDown,
    Timeout,
    Other,
}

impl Outcome {
    fn of(result: &Result<u64, Error>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(Error::ServiceNotAvailable { .. }) => Outcome::NotAvailable,
            Err(Error::Overloaded { .. }) => Outcome::Overloaded,
            Err(Error::NodeDown { .. }) => Outcome::NodeDown,
            Err(Error::Timeout { .. }) => Outcome::Timeout,
            Err(_) => Outcome::Other,
        }
    }
}

/// Where a server slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Healthy,
    Dead,
    /// Restarted or healed at this instant; healthy once seen for `SETTLE`.
    Settling(Instant),
    Partitioned,
}

struct Slot {
    name: String,
    ip: Ipv4Addr,
    log: PathBuf,
    stderr_dir: PathBuf,
    child: Option<Child>,
    incarnations: u32,
    partition: Option<Partition>,
    state: State,
}

impl Slot {
    fn start(&mut self, seed: SocketAddr) {
        self.incarnations += 1;
        let stderr = File::create(
            self.stderr_dir
                .join(format!("{}-{}.stderr", self.name, self.incarnations)),
        )
        .expect("a file for the server's stderr");
        let child = role("soak_server_process")
            .env("MALLA_SOAK_ROLE", "server")
            .env("MALLA_SOAK_NAME", &self.name)
            .env("MALLA_SOAK_LISTEN", SocketAddr::from((self.ip, 0)).to_string())
            .env("MALLA_SOAK_SEED_ADDR", seed.to_string())
            .env("MALLA_SOAK_LOG", &self.log)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the server process starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A small deterministic generator, so that a failing schedule can be
/// replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    kills: u32,
    restarts: u32,
    partitions: u32,
    heals: u32,
}

#[test]
fn chaos_soak_keeps_every_promise() {
    let secs: u64 = std::env::var("MALLA_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("MALLA_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak: {secs} s of faults, seed {seed} (MALLA_SOAK_SEED={seed} replays it)");
    let partitions = Partition::available("the soak");

    let dir = std::env::temp_dir().join(format!("malla-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the logs");
    let caller = NodeRuntime::start(
        Node::builder("soak-caller")
            .cookie(COOKIE)
            .listen((Ipv4Addr::LOCALHOST, 0).into()),
    );
    let seed_addr = caller.addr();
    let mut slots: Vec<Slot> = (0..SERVERS)
        .map(|i| Slot {
            name: format!("soak-s{i}"),
            ip: Ipv4Addr::new(127, 0, 0, 20 + i as u8),
            log: dir.join(format!("soak-s{i}.log")),
            stderr_dir: dir.clone(),
            child: None,
            incarnations: 0,
            partition: None,
            state: State::Healthy,
        })
        .collect();
    for slot in &mut slots {
        slot.start(seed_addr);
    }
    let all_seen = malla_test_support::wait::wait_until_blocking(Duration::from_secs(20), || {
        caller.node.get_nodes("Ledger").len() == SERVERS
    });
    assert!(all_seen, "the caller sees the {SERVERS} servers");

    let ledger = LedgerClient::new(&caller.node).with_options(CallOptions::default().timeout(CALL_TIMEOUT));
    let stop = Arc::new(AtomicBool::new(false));
    let next_call = Arc::new(AtomicU64::new(1));
    let outcomes: Arc<Mutex<Vec<(u64, Outcome)>>> = Arc::default();
    let idempotent_failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let idempotent_calls = Arc::new(AtomicU64::new(0));
    let worst_wait = Arc::new(Mutex::new(Duration::ZERO));
    let callers = caller.run(async {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (ledger, stop, next_call, outcomes, worst) = (
                ledger.clone(),
                stop.clone(),
                next_call.clone(),
                outcomes.clone(),
                worst_wait.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let call = next_call.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let result = ledger.record(call).await;
                    note_wait(&worst, started.elapsed());
                    let outcome = Outcome::of(&result);
                    if outcome == Outcome::Other {
                        eprintln!("record({call}) failed unexpectedly: {result:?}");
                    }
                    outcomes.lock().unwrap().push((call, outcome));
                }
            }));
        }
        for task in 0..6u64 {
            let (ledger, stop, calls, failures, worst) = (
                ledger.clone(),
                stop.clone(),
                idempotent_calls.clone(),
                idempotent_failures.clone(),
                worst_wait.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut x = task << 40;
                while !stop.load(Ordering::Relaxed) {
                    x += 1;
                    let started = Instant::now();
                    let result = ledger.echo(x).await;
                    note_wait(&worst, started.elapsed());
                    calls.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(y) if y == x => {}
                        other => failures.lock().unwrap().push(format!("echo({x}) -> {other:?}")),
                    }
                }
            }));
        }
        tasks
    });

    // The faults: one every 0.5–1.5 s, never impairing the last healthy server.
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500 + rng.below(1000) as u64));
        let seen = caller.node.get_nodes("Ledger");
        for slot in &mut slots {
            if let State::Settling(since) = slot.state
                && since.elapsed() >= SETTLE
                && seen.iter().any(|n| n.as_str() == slot.name)
            {
                slot.state = State::Healthy;
            }
        }
        let healthy: Vec<usize> = (0..SERVERS).filter(|&i| slots[i].state == State::Healthy).collect();
        let i = rng.below(SERVERS);
        let slot = &mut slots[i];
        match slot.state {
            State::Healthy if healthy.len() >= 2 => {
                if partitions && rng.below(3) == 0 {
                    match Partition::isolate(slot.ip) {
                        Ok(partition) => {
                            slot.partition = Some(partition);
                            slot.state = State::Partitioned;
                            tally.partitions += 1;
                        }
                        Err(why) => panic!("cannot partition {}: {why}", slot.name),
                    }
                } else {
                    slot.kill();
                    slot.state = State::Dead;
                    tally.kills += 1;
                }
            }
            State::Dead => {
                slot.start(seed_addr);
                slot.state = State::Settling(Instant::now());
                tally.restarts += 1;
            }
            State::Partitioned => {
                if let Some(partition) = slot.partition.take() {
                    partition.heal();
                }
                slot.state = State::Settling(Instant::now());
                tally.heals += 1;
            }
            _ => {}
        }
    }

    // Let every caller finish its call, then stop the servers.
    stop.store(true, Ordering::Relaxed);
    caller.run(async {
        for task in callers {
            task.await.expect("no caller panicked");
        }
    });
    for slot in &mut slots {
        slot.partition.take();
        slot.kill();
    }

    // The promises.
    let ran = executions(&slots.iter().map(|s| s.log.clone()).collect::<Vec<_>>());
    let outcomes = outcomes.lock().unwrap();
    let mut by_kind: HashMap<Outcome, u64> = HashMap::new();
    let mut broken = Vec::new();
    for &(call, outcome) in outcomes.iter() {
        *by_kind.entry(outcome).or_default() += 1;
        let times = ran.get(&call).copied().unwrap_or(0);
        let kept = match outcome {
            Outcome::Ok => times == 1,
            Outcome::NotAvailable | Outcome::Overloaded => times == 0,
            Outcome::NodeDown | Outcome::Timeout | Outcome::Other => times <= 1,
        };
        if !kept {
            broken.push(format!("record({call}) returned {outcome:?} and ran {times} times"));
        }
    }
    let panics = panicked_servers(&dir);
    let failures = idempotent_failures.lock().unwrap();
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort();
    eprintln!(
        "soak: {} non-idempotent calls {kinds:?}; {} idempotent calls, {} failed; \
         {} kills, {} restarts, {} partitions, {} heals; worst wait {:?}",
        outcomes.len(),
        idempotent_calls.load(Ordering::Relaxed),
        failures.len(),
        tally.kills,
        tally.restarts,
        tally.partitions,
        tally.heals,
        *worst_wait.lock().unwrap(),
    );
    assert!(
        broken.is_empty(),
        "promises broken (seed {seed}):\n{}",
        broken.join("\n")
    );
    assert!(
        failures.is_empty(),
        "idempotent calls failed (seed {seed}):\n{}",
        failures.join("\n")
    );
    assert!(
        panics.is_empty(),
        "server processes panicked (seed {seed}):\n{}",
        panics.join("\n")
    );
    assert!(
        tally.kills > 0 && outcomes.len() > 100,
        "the soak did too little to prove anything"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn note_wait(worst: &Mutex<Duration>, waited: Duration) {
    let mut worst = worst.lock().unwrap();
    *worst = (*worst).max(waited);
}

/// How many times each call ran, over every server's log.
fn executions(logs: &[PathBuf]) -> HashMap<u64, u32> {
    let mut ran = HashMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let call: u64 = line
                .parse()
                .unwrap_or_else(|_| panic!("a torn line {line:?} in {}", log.display()));
            *ran.entry(call).or_default() += 1;
        }
    }
    ran
}

/// The servers' stderr files that report a panic.
fn panicked_servers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "stderr") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("panicked") {
                found.push(format!("{}:\n{text}", path.display()));
            }
        }
    }
    found
}
