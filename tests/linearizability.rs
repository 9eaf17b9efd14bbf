//! Proves that locks and global names stay correct under faults: three
//! voter processes (durable, each with its own data directory) are killed
//! with SIGKILL and restarted, the leader and lock-holding clients are cut
//! off with nftables, while four clients take and give back locks and
//! register, look up and unregister names. Every operation is recorded and
//! the history checked by a Wing–Gong linearizability search per key; and
//! no two holders of a lock ever had overlapping validity, and its fencing
//! tokens grew.
//!
//! Short by default (CI); `MALLA_LIN_SECS=600 cargo test --test
//! linearizability -- --nocapture` for a long run. Partitions need root and
//! `nft` (or `MALLA_SKIP_PARTITION_TESTS=1` to only kill).

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use malla::{Error, Node, NodeId};
use malla_test_support::linearizability::{Claim, Kind, Op, Outcome, check_claims, check_linearizable};
use malla_test_support::nodes::NodeRuntime;
use malla_test_support::partition::Partition;
use malla_test_support::process::{Killed, role};

const COOKIE: &str = "linearizability-test-cookie";
const VOTERS: u8 = 3;
const CLIENTS: usize = 4;
/// Clients that also register names: never cut off, so their names' leases
/// (10 s) outlive any election.
const NAMING_CLIENTS: usize = 2;
const LOCKS: [&str; 3] = ["a", "b", "c"];
const NAMES: [&str; 2] = ["n1", "n2"];
const LOCK_TTL: Duration = Duration::from_secs(2);

#[malla::service(global)]
pub trait Marker {
    async fn here(&self) -> u8;
}

struct Here;

impl Marker for Here {
    async fn here(&self) -> u8 {
        1
    }
}

fn voter_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 81 + i)
}

fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 91 + i as u8)
}

/// One voter, run as a child process of this test binary.
#[test]
#[ignore = "a role: started by the test below"]
fn linearizability_voter_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let listen: SocketAddr = var("MALLA_LIN_LISTEN").parse().unwrap();
    let seeds: Vec<SocketAddr> = var("MALLA_LIN_SEEDS").split(',').map(|s| s.parse().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Node::builder(var("MALLA_LIN_NAME"))
            .cookie(COOKIE)
            .listen(listen)
            .seeds(seeds)
            .gossip_interval(Duration::from_millis(200))
            .voter(VOTERS as usize)
            .data_dir(var("MALLA_LIN_DIR"))
            .start()
            .await
            .expect("the voter starts");
        eprintln!("voter {} up", node.id());
        std::future::pending::<()>().await;
    });
}

/// A port free on every voter's address, TCP and UDP.
fn free_port() -> u16 {
    'search: for _ in 0..100 {
        let probe = std::net::TcpListener::bind((voter_ip(0), 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        for i in 0..VOTERS {
            let addr = SocketAddr::from((voter_ip(i), port));
            if std::net::TcpListener::bind(addr).is_err() || std::net::UdpSocket::bind(addr).is_err() {
                continue 'search;
            }
        }
        return port;
    }
    panic!("no free port on the voters' addresses");
}

struct Voter {
    name: String,
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Killed>,
}

impl Voter {
    fn start(&mut self, seeds: &str) {
        let child = role("linearizability_voter_process")
            .env("MALLA_LIN_NAME", &self.name)
            .env("MALLA_LIN_LISTEN", self.addr.to_string())
            .env("MALLA_LIN_SEEDS", seeds)
            .env("MALLA_LIN_DIR", &self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the voter process starts");
        self.child = Some(Killed(child));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }
}

/// What the clients recorded.
#[derive(Default)]
struct Record {
    ops: Vec<Op>,
    claims: Vec<Claim>,
}

struct Clock(Instant);

impl Clock {
    fn us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.0).as_micros() as u64
    }
    fn now(&self) -> u64 {
        self.us(Instant::now())
    }
}

#[derive(Default)]
struct Tally {
    granted: AtomicUsize,
    refused: AtomicUsize,
    unknown: AtomicUsize,
    lost: AtomicUsize,
    names: AtomicUsize,
    reads: AtomicUsize,
}

#[test]
fn locks_and_names_stay_linearizable_under_kills_and_partitions() {
    let secs: u64 = std::env::var("MALLA_LIN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let partitions = Partition::available("the linearizability test");
    let port = free_port();
    let scratch = std::env::temp_dir().join(format!("malla-lin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let mut voters: Vec<Voter> = (0..VOTERS)
        .map(|i| Voter {
            name: format!("lin-voter-{i}"),
            addr: SocketAddr::from((voter_ip(i), port)),
            dir: scratch.join(format!("voter-{i}")),
            child: None,
        })
        .collect();
    let seeds = voters.iter().map(|v| v.addr.to_string()).collect::<Vec<_>>().join(",");
    for voter in &mut voters {
        voter.start(&seeds);
    }
    let voter_addrs: Vec<SocketAddr> = voters.iter().map(|v| v.addr).collect();
    let clients: Vec<Arc<NodeRuntime>> = (0..CLIENTS)
        .map(|i| {
            let builder = Node::builder(format!("lin-client-{i}"))
                .cookie(COOKIE)
                .listen(SocketAddr::from((client_ip(i), 0)))
                .seeds(voter_addrs.clone())
                .gossip_interval(Duration::from_millis(200));
            let client = NodeRuntime::start(builder);
            client.run(client.node.serve(MarkerServer::new(Here))).unwrap();
            Arc::new(client)
        })
        .collect();
    let formed = Instant::now();
    loop {
        let status = clients[0].run(clients[0].node.group_status());
        if status.as_ref().is_ok_and(|s| s.voters.len() == VOTERS as usize) {
            break;
        }
        assert!(
            formed.elapsed() < Duration::from_secs(30),
            "the group did not form: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("the group formed in {:?}", formed.elapsed());

    let clock = Arc::new(Clock(Instant::now()));
    let record = Arc::new(Mutex::new(Record::default()));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let names: BTreeMap<NodeId, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.node.id().clone(), i))
        .collect();
    let names = Arc::new(names);
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (client, clock, record, tally, stop, names) = (
                Arc::clone(&clients[i]),
                Arc::clone(&clock),
                Arc::clone(&record),
                Arc::clone(&tally),
                Arc::clone(&stop),
                Arc::clone(&names),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(0x5eed + i as u64);
                while !stop.load(Ordering::Relaxed) {
                    let worker = Worker {
                        i,
                        client: &client,
                        clock: &clock,
                        record: &record,
                        tally: &tally,
                        names: &names,
                    };
                    if i < NAMING_CLIENTS && rng.below(10) < 4 {
                        worker.name_op(&mut rng);
                    } else {
                        worker.lock_op(&mut rng);
                    }
                }
            })
        })
        .collect();

    // Faults, one at a time: a majority always stays.
    let started = Instant::now();
    let mut rng = Rng(0xfa17);
    let mut faults = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(2_000 + rng.below(2_000)));
        match rng.below(if partitions { 3 } else { 1 }) {
            0 => {
                let victim = rng.below(VOTERS as u64) as usize;
                voters[victim].kill();
                faults.push(format!(
                    "{:>6.1}s kill -9 {}",
                    started.elapsed().as_secs_f64(),
                    voters[victim].name
                ));
                std::thread::sleep(Duration::from_millis(1_500));
                voters[victim].start(&seeds);
            }
            1 => {
                let leader = clients[0]
                    .run(clients[0].node.group_status())
                    .ok()
                    .and_then(|s| s.leader);
                let Some(at) = leader.and_then(|l| voters.iter().position(|v| v.name == l.as_str())) else {
                    continue;
                };
                let cut = Partition::isolate(voter_ip(at as u8)).expect("nft");
                faults.push(format!(
                    "{:>6.1}s partition the leader {}",
                    started.elapsed().as_secs_f64(),
                    voters[at].name
                ));
                std::thread::sleep(Duration::from_millis(3_000));
                cut.heal();
            }
            _ => {
                let victim = NAMING_CLIENTS + rng.below((CLIENTS - NAMING_CLIENTS) as u64) as usize;
                let cut = Partition::isolate(client_ip(victim)).expect("nft");
                faults.push(format!(
                    "{:>6.1}s partition client {victim}",
                    started.elapsed().as_secs_f64()
                ));
                std::thread::sleep(Duration::from_millis(4_000));
                cut.heal();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a worker panicked");
    }
    for fault in &faults {
        println!("{fault}");
    }
    let record = record.lock().unwrap();
    println!(
        "{} s, {} faults, {} operations: {} locks granted, {} refused, {} unknown, {} lost to their lease; {} name changes, {} lookups",
        started.elapsed().as_secs(),
        faults.len(),
        record.ops.len(),
        tally.granted.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.unknown.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
        tally.names.load(Ordering::Relaxed),
        tally.reads.load(Ordering::Relaxed),
    );
    let checked = Instant::now();
    check_claims(&record.claims).unwrap_or_else(|why| panic!("{why}"));
    check_linearizable(&record.ops).unwrap_or_else(|why| panic!("{why}"));
    println!(
        "checked in {:?}: linearizable, no lock held twice, tokens growing",
        checked.elapsed()
    );
    assert!(
        tally.granted.load(Ordering::Relaxed) > 20,
        "too few grants to mean anything"
    );
    drop(voters);
    let _ = std::fs::remove_dir_all(&scratch);
}

struct Worker<'a> {
    i: usize,
    client: &'a NodeRuntime,
    clock: &'a Clock,
    record: &'a Mutex<Record>,
    tally: &'a Tally,
    names: &'a BTreeMap<NodeId, usize>,
}

impl Worker<'_> {
    fn push(&self, key: &str, call: u64, ret: Option<u64>, kind: Kind) {
        self.record.lock().unwrap().ops.push(Op {
            client: self.i,
            key: key.to_owned(),
            call,
            ret,
            kind,
        });
    }

    fn lock_op(&self, rng: &mut Rng) {
        let key = LOCKS[rng.below(LOCKS.len() as u64) as usize];
        let wait = if rng.below(2) == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        let node = &self.client.node;
        let call = self.clock.now();
        let result = self
            .client
            .run(node.lock(key).ttl(LOCK_TTL).timeout(wait).into_future());
        let ret = self.clock.now();
        let guard = match result {
            Ok(guard) => guard,
            Err(Error::LockBusy { .. }) => {
                self.tally.refused.fetch_add(1, Ordering::Relaxed);
                return self.push(key, call, Some(ret), Kind::Acquire(Outcome::Refused));
            }
            Err(_) => {
                // May have been granted, unknown to us: freed by the
                // group later (the request is abandoned, or its lease runs out).
                self.tally.unknown.fetch_add(1, Ordering::Relaxed);
                self.push(key, call, None, Kind::Acquire(Outcome::Unknown));
                return self.push(key, call, None, Kind::Expire { token: None });
            }
        };
        let token = guard.token().value();
        self.tally.granted.fetch_add(1, Ordering::Relaxed);
        self.push(key, call, Some(ret), Kind::Acquire(Outcome::Granted(token)));
        // Hold it a while, looking at it as a careful holder would: what it
        // may claim is up to the validity it last saw.
        let mut claimed_until = ret;
        // The clients that get cut off sometimes hold past a lease, so that
        // a partition takes locks from them.
        let longest = if self.i >= NAMING_CLIENTS && rng.below(3) == 0 {
            3_000
        } else {
            400
        };
        let hold = Instant::now() + Duration::from_millis(rng.below(longest));
        let mut lost = false;
        while Instant::now() < hold {
            match guard.valid_until() {
                Some(until) if guard.is_held() => claimed_until = claimed_until.max(self.clock.us(until)),
                _ => {
                    lost = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if lost || !guard.is_held() {
            self.tally.lost.fetch_add(1, Ordering::Relaxed);
            self.claim(key, token, ret, claimed_until);
            self.push(key, claimed_until, None, Kind::Expire { token: Some(token) });
            drop(guard);
            return;
        }
        // Whatever the release answers, the group may also have freed the
        // lease on its own once the validity last seen here ended.
        if let Some(until) = guard.valid_until() {
            claimed_until = claimed_until.max(self.clock.us(until));
        }
        let call = self.clock.now();
        self.claim(key, token, ret, call.min(claimed_until));
        self.push(key, claimed_until, None, Kind::Expire { token: Some(token) });
        let released = match self.client.run(guard.release()) {
            Ok(()) => Some(true),
            Err(Error::NotHeld { .. }) => Some(false),
            Err(_) => None,
        };
        let ret = released.map(|_| self.clock.now());
        self.push(key, call, ret, Kind::Release { token, released });
    }

    fn claim(&self, key: &str, token: u64, from: u64, until: u64) {
        self.record.lock().unwrap().claims.push(Claim {
            client: self.i,
            key: key.to_owned(),
            token,
            from,
            until,
        });
    }

    fn name_op(&self, rng: &mut Rng) {
        let key = NAMES[rng.below(NAMES.len() as u64) as usize];
        let node = &self.client.node;
        let call = self.clock.now();
        match rng.below(3) {
            0 => {
                let kind = match self.client.run(node.register_name(key, "Marker")) {
                    Ok(token) => Kind::Register(Outcome::Granted(token.value())),
                    Err(Error::NameTaken { .. }) => Kind::Register(Outcome::Refused),
                    Err(_) => {
                        self.push(key, call, None, Kind::Register(Outcome::Unknown));
                        return self.push(key, call, None, Kind::Expire { token: None });
                    }
                };
                self.tally.names.fetch_add(1, Ordering::Relaxed);
                self.push(key, call, Some(self.clock.now()), kind);
            }
            1 => {
                let released = match self.client.run(node.unregister_name(key)) {
                    Ok(()) => Some(true),
                    Err(Error::NotHeld { .. }) => Some(false),
                    Err(_) => None,
                };
                self.tally.names.fetch_add(1, Ordering::Relaxed);
                let ret = released.map(|_| self.clock.now());
                self.push(key, call, ret, Kind::Unregister { released });
            }
            _ => {
                // A read that failed says nothing: left out.
                if let Ok(found) = self.client.run(node.whereis_name(key)) {
                    let found = found.map(|(node, token)| (self.names[&node], token.value()));
                    self.tally.reads.fetch_add(1, Ordering::Relaxed);
                    self.push(key, call, Some(self.clock.now()), Kind::Whereis(found));
                }
            }
        }
    }
}

/// A small deterministic generator, so a schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
