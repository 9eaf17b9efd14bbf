//! Call layers on real nodes (each on its own runtime, on loopback): a
//! client interceptor adds a token that a server interceptor checks, locally
//! and remotely; a refused call never runs; attempt interceptors see each
//! failover attempt in order; an interceptor that answers itself reaches no
//! node; metadata past its bound is a clear error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use malla::{
    AttemptInfo, AttemptOutcome, CallInfo, CallOptions, Decision, Error, Interceptor, NodeBuilder, NodeId, Rejection,
    ServeInterceptor, ServeOptions, ServedCall,
};
use malla_test_support::nodes::{NodeRuntime, listening};
use malla_test_support::wait::wait_until_blocking;

const COOKIE: &str = "interceptors-test-cookie";

#[malla::service(global)]
pub trait Ledger {
    /// Not idempotent: a second run would count twice.
    async fn credit(&self, amount: u64) -> u64;
}

#[derive(Clone, Default)]
struct Book(Arc<AtomicU64>);

impl Ledger for Book {
    async fn credit(&self, amount: u64) -> u64 {
        self.0.fetch_add(amount, Ordering::SeqCst) + amount
    }
}

/// Adds the caller's token to every call.
struct Token(&'static [u8]);

impl Interceptor for Token {
    fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
        match call.metadata.insert("authorization", self.0) {
            Ok(()) => Decision::Continue,
            Err(err) => Decision::Refuse(err),
        }
    }
}

/// `Malla.authorize`: only callers with the token may run the service.
struct RequireToken;

impl ServeInterceptor for RequireToken {
    fn before(&self, call: &ServedCall<'_>) -> Result<(), Rejection> {
        match call.metadata().get("authorization") {
            Some(b"Bearer good") => Ok(()),
            _ => Err(Rejection::new(format!("{} needs a valid token", call.service()))),
        }
    }
}

fn start(
    name: &str,
    seed: Option<std::net::SocketAddr>,
    customize: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> NodeRuntime {
    let builder = listening(name, COOKIE);
    let builder = match seed {
        Some(seed) => builder.seeds([seed]),
        None => builder,
    };
    NodeRuntime::start(customize(builder))
}

fn serve_guarded(node: &NodeRuntime, book: &Book) {
    let options = ServeOptions::default().intercept(RequireToken);
    node.run(node.node.serve_with(LedgerServer::new(book.clone()), options))
        .unwrap();
}

#[test]
fn a_token_added_by_the_client_is_checked_by_the_server_locally_and_remotely() {
    let book = Book::default();
    let server = start("auth-server", None, |b| b);
    serve_guarded(&server, &book);
    let caller = start("auth-caller", Some(server.addr()), |b| b);
    let seen = wait_until_blocking(Duration::from_secs(10), || !caller.node.get_nodes("Ledger").is_empty());
    assert!(seen, "the caller discovers the ledger");

    // Remote, without the token: refused, typed, and it never ran.
    let plain = LedgerClient::new(&caller.node);
    match caller.run(plain.credit(5)) {
        Err(Error::Refused { node, reason, .. }) => {
            assert_eq!(node, NodeId::from("auth-server"));
            assert!(reason.contains("needs a valid token"), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(book.0.load(Ordering::SeqCst), 0, "a refused call never ran");

    // A wrong token is refused too; the right one passes.
    let wrong = plain.with_interceptor(Token(b"Bearer bad"));
    assert!(matches!(caller.run(wrong.credit(5)), Err(Error::Refused { .. })));
    let good = plain.with_interceptor(Token(b"Bearer good"));
    assert_eq!(caller.run(good.credit(5)).unwrap(), 5);

    // Local, on the direct path: the same rules.
    let local = LedgerClient::new(&server.node);
    let err = server.run(local.credit(1)).unwrap_err();
    assert!(
        matches!(&err, Error::Refused { node, .. } if node.as_str() == "auth-server"),
        "{err}"
    );
    assert!(err.is_not_run());
    let local = local.with_interceptor(Token(b"Bearer good"));
    assert_eq!(server.run(local.credit(1)).unwrap(), 6);
    assert_eq!(book.0.load(Ordering::SeqCst), 6, "only the calls with the token ran");

    // A node-wide interceptor works for every client of the node.
    let tooled = start("auth-tool", Some(server.addr()), |b| b.intercept(Token(b"Bearer good")));
    let seen = wait_until_blocking(Duration::from_secs(10), || !tooled.node.get_nodes("Ledger").is_empty());
    assert!(seen);
    assert_eq!(tooled.run(LedgerClient::new(&tooled.node).credit(4)).unwrap(), 10);
}

/// Records every attempt: node, number, local, ran.
#[derive(Default)]
struct Attempts(Mutex<Vec<(String, u32, bool, bool)>>);

impl Interceptor for Attempts {
    fn after_attempt(&self, attempt: &AttemptInfo<'_>, outcome: &AttemptOutcome<'_>) {
        let seen = (
            attempt.node().to_string(),
            attempt.number(),
            attempt.is_local(),
            outcome.ran(),
        );
        self.0.lock().unwrap().push(seen);
    }
}

#[test]
fn an_attempt_interceptor_sees_each_failover_attempt_in_order() {
    let a = start("attempts-a", None, |b| b);
    let b = start("attempts-b", Some(a.addr()), |b| b);
    let book = Book::default();
    b.run(b.node.serve(LedgerServer::new(book.clone()))).unwrap();
    let caller = start("attempts-caller", Some(a.addr()), |b| b);
    let formed = wait_until_blocking(Duration::from_secs(10), || {
        caller.node.nodes().len() == 2 && !caller.node.get_nodes("Ledger").is_empty()
    });
    assert!(formed);
    let seen = Arc::new(Attempts::default());
    // `attempts-a` does not serve the ledger: it answers "not available"
    // and the call moves on to `attempts-b`.
    let options = CallOptions::default().nodes([NodeId::from("attempts-a"), NodeId::from("attempts-b")]);
    let client = LedgerClient::new(&caller.node)
        .with_options(options)
        .with_interceptor(Arc::clone(&seen));
    assert_eq!(caller.run(client.credit(2)).unwrap(), 2);
    let attempts = seen.0.lock().unwrap().clone();
    println!("attempts seen: {attempts:?}");
    assert_eq!(
        attempts,
        [
            ("attempts-a".to_owned(), 1, false, false),
            ("attempts-b".to_owned(), 2, false, true)
        ]
    );

    // On the serving node, the attempt is local.
    seen.0.lock().unwrap().clear();
    let local = LedgerClient::new(&b.node).with_interceptor(Arc::clone(&seen));
    assert_eq!(b.run(local.credit(1)).unwrap(), 3);
    assert_eq!(*seen.0.lock().unwrap(), [("attempts-b".to_owned(), 1, true, true)]);
}

/// Answers every call itself.
struct Canned;

impl Interceptor for Canned {
    fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
        match call.encode_reply(&42u64) {
            Ok(reply) => Decision::Answer(reply),
            Err(err) => Decision::Refuse(err),
        }
    }

    fn before_attempt(&self, _: &mut AttemptInfo<'_>) -> Result<(), Error> {
        panic!("an answered call makes no attempt");
    }
}

#[test]
fn an_interceptor_that_answers_itself_never_reaches_a_node() {
    let book = Book::default();
    let server = start("canned-server", None, |b| b);
    server.run(server.node.serve(LedgerServer::new(book.clone()))).unwrap();
    let caller = start("canned-caller", Some(server.addr()), |b| b);
    assert!(wait_until_blocking(Duration::from_secs(10), || !caller
        .node
        .get_nodes("Ledger")
        .is_empty()));
    let canned = LedgerClient::new(&caller.node).with_interceptor(Canned);
    assert_eq!(caller.run(canned.credit(7)).unwrap(), 42);
    assert_eq!(book.0.load(Ordering::SeqCst), 0, "the server never ran it");

    // Even before the service is discovered anywhere (no stub refusal first).
    let alone = start("canned-alone", None, |b| b);
    let canned = LedgerClient::new(&alone.node).with_interceptor(Canned);
    assert_eq!(alone.run(canned.credit(1)).unwrap(), 42);
}

/// Adds more metadata than a call may carry.
struct Bloated;

impl Interceptor for Bloated {
    fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
        match call.metadata.insert("blob", vec![0u8; malla::MAX_METADATA_LEN]) {
            Ok(()) => Decision::Continue,
            Err(err) => Decision::Refuse(err),
        }
    }
}

#[test]
fn metadata_past_its_bound_is_a_clear_error_and_sends_nothing() {
    let book = Book::default();
    let node = start("bloated", None, |b| b);
    node.run(node.node.serve(LedgerServer::new(book.clone()))).unwrap();
    let client = LedgerClient::new(&node.node).with_interceptor(Bloated);
    let err = node.run(client.credit(1)).unwrap_err();
    println!("{err}");
    assert!(matches!(err, Error::InvalidMetadata { .. }), "{err}");
    assert!(err.to_string().contains("more than 4096"), "{err}");
    assert_eq!(book.0.load(Ordering::SeqCst), 0);
}

#[malla::service(global)]
pub trait Slow {
    #[malla(idempotent)]
    async fn wait(&self, ms: u64) -> u64;
}

struct Sleeper;

impl Slow for Sleeper {
    async fn wait(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// Two nodes serve `Slow`; `busy` takes one handler per connection, and a
/// long call holds it, so the caller's next attempts there are `Overloaded`.
fn one_busy_one_free(prefix: &str) -> (NodeRuntime, NodeRuntime, NodeRuntime) {
    let busy = start(&format!("{prefix}-busy"), None, |b| b.max_handlers_per_connection(1));
    busy.run(busy.node.serve(SlowServer::new(Sleeper))).unwrap();
    let free = start(&format!("{prefix}-free"), Some(busy.addr()), |b| b);
    free.run(free.node.serve(SlowServer::new(Sleeper))).unwrap();
    let caller = start(&format!("{prefix}-caller"), Some(busy.addr()), |b| b);
    let formed = wait_until_blocking(Duration::from_secs(10), || caller.node.get_nodes("Slow").len() == 2);
    assert!(formed, "the caller sees both instances");
    let hold = SlowClient::new(&caller.node).with_options(CallOptions::default().nodes([busy.node.id().clone()]));
    // A long call must hold the busy node's one handler on the connection
    // the test's calls take. A connection that lost a simultaneous dial
    // closes with its call, so a holder may be lost: a plain probe tells,
    // and another holder goes out until a probe is refused.
    let in_flight = || {
        let stats = busy.node.stats();
        stats
            .services
            .iter()
            .filter(|s| s.service == "Slow")
            .map(|s| s.in_flight)
            .sum::<u64>()
    };
    let mut holders = 0;
    let held = wait_until_blocking(Duration::from_secs(10), || {
        if matches!(caller.run(hold.wait(1)), Err(Error::Overloaded { .. })) {
            return true;
        }
        holders += 1;
        let holder = hold.clone();
        caller.spawn(async move { holder.wait(20_000).await });
        wait_until_blocking(Duration::from_secs(2), || in_flight() >= 1);
        false
    });
    println!("{prefix}: the busy node's handler held after {holders} long call(s)");
    assert!(held, "a long call holds the busy node's one handler");
    (busy, free, caller)
}

#[test]
fn outlier_ejection_skips_a_node_whose_attempts_keep_failing() {
    let (busy, free, caller) = one_busy_one_free("outlier");
    let ejection = Arc::new(malla::OutlierEjection::new().consecutive_failures(2));
    let seen = Arc::new(Attempts::default());
    let options = CallOptions::default().nodes([busy.node.id().clone(), free.node.id().clone()]);
    let client = SlowClient::new(&caller.node)
        .with_options(options)
        .with_interceptor(Arc::clone(&ejection))
        .with_interceptor(Arc::clone(&seen));
    for _ in 0..4 {
        assert_eq!(caller.run(client.wait(1)).unwrap(), 1, "the free node answers");
    }
    let attempts = seen.0.lock().unwrap().clone();
    println!("attempts seen: {attempts:?}");
    let to_busy = attempts.iter().filter(|a| a.0.ends_with("-busy")).count();
    assert_eq!(to_busy, 2, "two overloaded attempts, then the node is skipped");
    assert!(
        attempts.iter().filter(|a| a.0.ends_with("-busy")).all(|a| !a.3),
        "they did not run"
    );
    assert!(ejection.ejected_until(busy.node.id()).is_some());
    assert!(ejection.ejected_until(free.node.id()).is_none());
}

/// Counts every attempt of the calls it sees.
#[derive(Default)]
struct CountAttempts(AtomicU64);

impl Interceptor for CountAttempts {
    fn after_attempt(&self, _: &AttemptInfo<'_>, _: &AttemptOutcome<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_retry_budget_bounds_how_often_failed_calls_run_again() {
    let (busy, _free, caller) = one_busy_one_free("budget");
    // No share of calls, a reserve of 1 a second over 10 s: 10 retries.
    let budget = Arc::new(malla::RetryBudget::new(Duration::from_secs(10), 1, 0.0));
    let attempts = Arc::new(CountAttempts::default());
    let client = SlowClient::new(&caller.node)
        .with_options(CallOptions::default().nodes([busy.node.id().clone()]))
        .with_interceptor(Arc::clone(&budget))
        .with_interceptor(Arc::clone(&attempts));
    let err = caller.run(client.wait(1)).unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }), "{err}");
    let first = attempts.0.swap(0, Ordering::SeqCst);
    let err = caller.run(client.wait(1)).unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }), "{err}");
    let second = attempts.0.load(Ordering::SeqCst);
    println!("attempts: first call {first}, second call {second}");
    assert_eq!(first, 11, "one run and the reserve's ten retries");
    assert_eq!(second, 1, "the budget is spent");
}
