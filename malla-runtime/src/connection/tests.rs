//! A connection against a raw peer on a Unix socket pair (the in-memory
//! transport): what it answers, what makes it hang up, and that no byte
//! sequence makes it panic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::codec::Decoder;

use super::*;
use crate::manifest::method_id;
use crate::registry::{LocalService, Registry, Route};
use crate::service::{ArgsDecoder, DispatchError, DispatchFuture, encode_reply};
use malla_test_support::wait::eventually;

use crate::test_support::identity;
use crate::wire::{self, Format, FrameCodec, Header, Status};
use crate::{AdminStatus, MethodManifest, NodeId, Service, ServiceManifest};
use tokio::time::Instant;

/// `Echo.echo(Vec<u8>) -> Vec<u8>` and `Echo.sleep(u64) -> u64`, by hand.
struct Echo;

const ECHO_SIGNATURE: u64 = 0xec40;
const SLEEP_SIGNATURE: u64 = 0x51ee9;

fn echo_manifest() -> &'static ServiceManifest {
    static MANIFEST: std::sync::OnceLock<ServiceManifest> = std::sync::OnceLock::new();
    MANIFEST.get_or_init(|| {
        let method = |name: &'static str, signature| {
            MethodManifest::__new(name, method_id(name), &[], "", signature, false, None)
        };
        let methods: &'static [MethodManifest] =
            Box::leak(vec![method("echo", ECHO_SIGNATURE), method("sleep", SLEEP_SIGNATURE)].into_boxed_slice());
        ServiceManifest::__new("Echo", "1", true, methods)
    })
}

impl Service for Echo {
    fn manifest(&self) -> &'static ServiceManifest {
        echo_manifest()
    }

    fn dispatch(&self, method: usize, format: Format, args: &[u8]) -> Result<DispatchFuture, DispatchError> {
        let mut decoder = ArgsDecoder::new(format, args)?;
        match method {
            0 => {
                let bytes: Vec<u8> = decoder.arg()?;
                decoder.finish()?;
                Ok(Box::pin(async move { encode_reply(format, &bytes) }))
            }
            1 => {
                let ms: u64 = decoder.arg()?;
                decoder.finish()?;
                Ok(Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    encode_reply(format, &ms)
                }))
            }
            other => Err(DispatchError::unknown_method(other)),
        }
    }
}

#[derive(Default)]
struct Recorder {
    closed: Mutex<Vec<String>>,
}

impl LinkOwner<Connection> for Recorder {
    fn handle(&self, event: LinkEvent) {
        if let LinkEvent::Closed(_, reason) = event {
            self.closed.lock().unwrap().push(reason.to_string());
        }
    }
}

/// Where connections report to `host`.
fn events_to(host: &Arc<Recorder>) -> Arc<LinkEvents> {
    LinkEvents::new(Arc::downgrade(host) as Weak<dyn LinkOwner<Connection>>)
}

/// The raw end of the pair, speaking frames by hand.
struct RawPeer {
    stream: UnixStream,
    buf: BytesMut,
}

impl RawPeer {
    async fn send(&mut self, header: &Header<'_>, body: &[u8]) {
        let mut out = BytesMut::new();
        wire::encode(&mut out, usize::MAX, header, body).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, or `None` at the end of the stream.
    async fn recv(&mut self) -> Option<Bytes> {
        let mut codec = FrameCodec::new(usize::MAX);
        loop {
            if let Some(frame) = codec.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                .await
                .expect("the connection neither answered nor hung up");
            if read.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// The next frame but a ping: the writer pings on a grid of ticks, so
    /// one may come whenever a test runs.
    async fn recv_unpinged(&mut self) -> Option<Bytes> {
        loop {
            let frame = self.recv().await?;
            if !matches!(wire::decode(&frame), Ok((Header::Ping, _))) {
                return Some(frame);
            }
        }
    }

    /// The next response, skipping pings.
    async fn response(&mut self) -> (u64, Status, Bytes) {
        loop {
            let frame = self.recv().await.expect("a response, not the end of the stream");
            match wire::decode(&frame).unwrap() {
                (Header::Response { id, status }, body) => return (id, status, Bytes::copy_from_slice(body)),
                (Header::Ping, _) => continue,
                (other, _) => panic!("expected a response, got {other:?}"),
            }
        }
    }

    /// Whether the connection hangs up (within 5 s).
    async fn hung_up(&mut self) -> bool {
        loop {
            match self.recv().await {
                None => return true,
                Some(_) => continue,
            }
        }
    }
}

fn registry() -> Arc<Registry> {
    let registry = Arc::new(Registry::default());
    let echo = Arc::new(LocalService::new(
        &NodeId::from("b"),
        Box::new(Echo),
        BTreeMap::new(),
        AdminStatus::Active,
    ));
    registry.slot("Echo").update(|route| Route {
        local: Some(Arc::clone(&echo)),
        remote: Arc::clone(&route.remote),
    });
    registry
}

fn pair() -> (Arc<Connection>, RawPeer, Arc<Recorder>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let host = Arc::new(Recorder::default());
    let events = events_to(&host);
    let peer = identity("raw", false);
    let config = ConnectionConfig {
        max_frame: 1 << 16,
        tick: Duration::from_secs(1),
        max_handlers: 8,
    };
    let conn = spawn(
        ours,
        BytesMut::new(),
        None,
        peer,
        Initiator::Us,
        registry(),
        events,
        config,
    );
    let raw = RawPeer {
        stream: theirs,
        buf: BytesMut::new(),
    };
    (conn, raw, host)
}

fn request<'a>(id: u64, service: &'a str, method: &str, signature: u64) -> Header<'a> {
    Header::Request {
        id,
        service,
        method: method_id(method),
        signature,
        deadline_us: 5_000_000,
        format: Format::Postcard,
        trace: None,
        metadata: &[],
    }
}

#[tokio::test]
async fn requests_are_answered_and_refused_ones_get_a_status() {
    let (_conn, mut raw, host) = pair();
    let body = postcard::to_allocvec(&vec![1u8, 2, 3]).unwrap();
    raw.send(&request(1, "Echo", "echo", ECHO_SIGNATURE), &body).await;
    let (id, status, reply) = raw.response().await;
    assert_eq!((id, status), (1, Status::Ok));
    assert_eq!(postcard::from_bytes::<Vec<u8>>(&reply).unwrap(), [1, 2, 3]);

    let cases: [(Header<'_>, &[u8], Status); 5] = [
        (request(2, "Nope", "echo", 0), &body, Status::NotAvailable),
        (request(3, "Echo", "nope", 0), &body, Status::UnknownMethod),
        (
            request(4, "Echo", "echo", ECHO_SIGNATURE + 1),
            &body,
            Status::SignatureMismatch,
        ),
        (
            request(5, "Echo", "echo", 0),
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            Status::BadRequest(String::new()),
        ),
        (
            request(6, "Echo", "sleep", 0),
            &[1, 99, 99],
            Status::BadRequest(String::new()),
        ),
    ];
    for (header, body, expected) in cases {
        raw.send(&header, body).await;
        let (_, status, _) = raw.response().await;
        match (status, expected) {
            (Status::BadRequest(why), Status::BadRequest(_)) => assert!(!why.is_empty()),
            (got, expected) => assert_eq!(got, expected),
        }
    }
    // Still serving.
    raw.send(&request(7, "Echo", "echo", 0), &body).await;
    assert_eq!(raw.response().await.1, Status::Ok);
    assert!(host.closed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_frames_make_the_connection_hang_up() {
    let oversized = (1u32 << 20).to_be_bytes();
    let cases: [&[u8]; 4] = [
        &[0, 0, 0, 3, 0xff, 0xfe, 0xfd], // an unknown header variant
        &oversized,                      // more than `max_frame` announced
        &[0, 0, 0, 0],                   // an empty frame has no header
        &[0, 0, 0, 2, 0, 7],             // a truncated request header
    ];
    for bytes in cases {
        let (conn, mut raw, host) = pair();
        raw.send_raw(bytes).await;
        assert!(raw.hung_up().await, "{bytes:?}");
        assert!(conn.is_closed());
        let reasons = host.closed.lock().unwrap().clone();
        assert!(reasons.iter().any(|r| r.contains("malformed frame")), "{reasons:?}");
    }
}

#[tokio::test]
async fn a_truncated_frame_then_the_end_of_the_stream_closes_cleanly() {
    let (conn, mut raw, host) = pair();
    raw.send_raw(&[0, 0, 0, 100, 1, 2, 3]).await;
    raw.stream.shutdown().await.unwrap();
    assert!(raw.hung_up().await);
    assert!(conn.is_closed());
    assert_eq!(*host.closed.lock().unwrap(), ["closed by the peer"]);
}

#[tokio::test]
async fn a_cancel_aborts_the_running_handler() {
    let (conn, mut raw, _host) = pair();
    raw.send(
        &request(1, "Echo", "sleep", 0),
        &postcard::to_allocvec(&60_000u64).unwrap(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(conn.running.len(), 1);
    raw.send(&Header::Cancel { id: 1 }, &[]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(conn.running.len(), 0);
    // A cancel for nothing is harmless.
    raw.send(&Header::Cancel { id: 42 }, &[]).await;
    raw.send(
        &request(2, "Echo", "echo", 0),
        &postcard::to_allocvec(&vec![9u8]).unwrap(),
    )
    .await;
    assert_eq!(raw.response().await.0, 2, "no reply for the cancelled call");
}

#[tokio::test]
async fn extreme_deadlines_do_not_panic() {
    let (_conn, mut raw, _host) = pair();
    for (id, deadline_us) in [(1, u64::MAX), (2, 0)] {
        let header = Header::Request {
            id,
            service: "Echo",
            method: method_id("sleep"),
            signature: 0,
            deadline_us,
            format: Format::Postcard,
            trace: None,
            metadata: &[],
        };
        raw.send(&header, &postcard::to_allocvec(&10u64).unwrap()).await;
    }
    let mut statuses = [raw.response().await, raw.response().await].map(|(id, status, _)| (id, status));
    statuses.sort_by_key(|(id, _)| *id);
    assert_eq!(statuses, [(1, Status::Ok), (2, Status::Timeout)]);
}

#[tokio::test]
async fn past_the_handler_limit_requests_are_refused_before_they_run() {
    let (conn, mut raw, _host) = pair();
    let sleep = postcard::to_allocvec(&60_000u64).unwrap();
    for id in 1..=8 {
        raw.send(&request(id, "Echo", "sleep", 0), &sleep).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(conn.running.len(), 8, "the limit of `pair`");
    raw.send(&request(9, "Echo", "sleep", 0), &sleep).await;
    let (id, status, _) = raw.response().await;
    assert_eq!((id, status), (9, Status::Overloaded));
    // One handler less, and a request runs again.
    raw.send(&Header::Cancel { id: 1 }, &[]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let echo = postcard::to_allocvec(&vec![1u8]).unwrap();
    raw.send(&request(10, "Echo", "echo", 0), &echo).await;
    let (id, status, _) = raw.response().await;
    assert_eq!((id, status), (10, Status::Ok));
}

#[tokio::test]
async fn a_request_id_that_does_not_grow_closes_the_connection() {
    for ids in [[5, 5], [5, 4]] {
        let (conn, mut raw, _host) = pair();
        let echo = postcard::to_allocvec(&vec![1u8]).unwrap();
        raw.send(&request(ids[0], "Echo", "echo", 0), &echo).await;
        assert_eq!(raw.response().await.1, Status::Ok);
        raw.send(&request(ids[1], "Echo", "echo", 0), &echo).await;
        assert!(raw.hung_up().await, "{ids:?}");
        assert!(conn.is_closed());
    }
}

/// Held by the tests that move a lot of memory, so that the one measuring
/// the process's resident memory does not count another's buffers.
static MEMORY_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_cannot_grow_the_node_memory() {
    let _alone = MEMORY_HEAVY.lock().await;
    let (conn, raw, _host) = pair();
    let before = rss();
    let (_read, mut write) = raw.stream.into_split();
    // Requests whose replies (1 KiB each) are never read: 64 MiB of them if
    // the node kept reading.
    let body = postcard::to_allocvec(&vec![7u8; 1024]).unwrap();
    let mut sent = 0u64;
    for id in 1..=65_536u64 {
        let mut frame = BytesMut::new();
        wire::encode(&mut frame, usize::MAX, &request(id, "Echo", "echo", 0), &body).unwrap();
        match tokio::time::timeout(Duration::from_millis(500), write.write_all(&frame)).await {
            Ok(Ok(())) => sent += 1,
            // The node stopped reading, or hung up.
            _ => break,
        }
    }
    let grown = rss().saturating_sub(before);
    println!(
        "sent {sent} requests ({} MiB of replies) before the node stopped reading; RSS grew {:.1} MiB",
        sent / 1024,
        grown as f64 / (1 << 20) as f64
    );
    assert!(sent < 65_536, "the node never stopped reading");
    // The outbox's high-water mark (8 MiB), one read buffer, and slack.
    assert!(grown < 24 << 20, "RSS grew {grown} bytes");
    // Nothing arrives any more: liveness closes the connection (4 ticks of 1 s).
    assert!(
        eventually(Duration::from_secs(8), || conn.is_closed()).await,
        "a peer that reads nothing stayed connected"
    );
}

/// A request to `Echo`'s method `method`, signature 1.
fn echo_request(method: u32, body: &[u8]) -> Request<'_> {
    Request {
        service: "Echo",
        method,
        signature: 1,
        format: Format::Postcard,
        body,
        trace: None,
        metadata: &[],
    }
}

#[tokio::test]
async fn a_call_past_its_deadline_expires_and_cancels_on_the_peer() {
    let (conn, mut raw, _host) = pair();
    let deadline = Instant::now() + Duration::from_millis(50);
    let call = conn.call(echo_request(method_id("echo"), &[0]), Deadline::from_now(deadline));
    let (outcome, frames) = tokio::join!(call, async {
        let first = raw.recv_unpinged().await.unwrap();
        let second = raw.recv_unpinged().await.unwrap();
        (first, second)
    });
    assert!(matches!(outcome, Err(CallError::TimedOut)));
    assert!(matches!(
        wire::decode(&frames.0).unwrap().0,
        Header::Request { id: 1, .. }
    ));
    assert!(matches!(wire::decode(&frames.1).unwrap().0, Header::Cancel { id: 1 }));
    assert_eq!(conn.pending_calls(), 0);
}

#[tokio::test]
async fn calls_in_flight_are_lost_when_the_peer_hangs_up() {
    let (conn, raw, host) = pair();
    let call = conn.call(
        echo_request(1, &[]),
        Deadline::from_now(Instant::now() + Duration::from_secs(30)),
    );
    let (outcome, ()) = tokio::join!(call, async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(raw);
    });
    assert!(matches!(outcome, Err(CallError::Lost)));
    assert!(conn.is_closed());
    // A reset or an end of stream, depending on what was left unread.
    assert_eq!(host.closed.lock().unwrap().len(), 1);
    // And later calls are refused without being sent.
    let later = conn
        .call(
            echo_request(1, &[]),
            Deadline::from_now(Instant::now() + Duration::from_secs(1)),
        )
        .await;
    assert!(matches!(later, Err(CallError::NotSent)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The decoders return errors, never panic, on any input.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = FrameCodec::new(256);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            let _ = wire::decode(&frame);
        }
        let _ = wire::decode(&Bytes::from(bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever a peer sends, a live connection answers or hangs up; at the
    /// end of the stream it always hangs up (a panicked reader would not).
    #[test]
    fn any_bytes_leave_the_connection_answering_or_closed(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        raw_tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (conn, mut raw, _host) = pair();
            for frame in &frames {
                let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(frame);
                raw.send_raw(&bytes).await;
            }
            raw.send_raw(&raw_tail).await;
            let _ = raw.stream.shutdown().await;
            assert!(raw.hung_up().await);
            assert!(conn.is_closed());
        });
    }
}

/// Two connections over a socket pair, sealed with matching keys: `a`
/// calls `b`, which serves `Echo`.
fn sealed_pair() -> (Arc<Connection>, Arc<Connection>, Arc<Recorder>) {
    sealed_pair_rekeying_every(crate::wire::REKEY_EVERY)
}

fn sealed_pair_rekeying_every(rekey_every: u64) -> (Arc<Connection>, Arc<Connection>, Arc<Recorder>) {
    use crate::handshake::SessionKeys;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let host = Arc::new(Recorder::default());
    let events = events_to(&host);
    let identity = |name: &str| identity(name, true);
    let config = ConnectionConfig {
        max_frame: 1 << 20,
        tick: Duration::from_secs(1),
        max_handlers: 1024,
    };
    let keys = |send: u8, receive: u8| SessionKeys {
        send: [send; 32],
        receive: [receive; 32],
        rekey_every,
    };
    let a = spawn(
        ours,
        BytesMut::new(),
        Some(keys(1, 2)),
        identity("b"),
        Initiator::Us,
        registry(),
        Arc::clone(&events),
        config,
    );
    let b = spawn(
        theirs,
        BytesMut::new(),
        Some(keys(2, 1)),
        identity("a"),
        Initiator::Peer,
        registry(),
        events,
        config,
    );
    (a, b, host)
}

/// Keys move on every 7 records, in both directions, while 32 callers keep
/// the connection busy: no call fails, none waits for the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_rekeys_under_load_with_no_failed_call() {
    let (a, b, host) = sealed_pair_rekeying_every(7);
    let started = Instant::now();
    let callers: Vec<_> = (0..32u8)
        .map(|caller| {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                for i in 0..100u8 {
                    let body = postcard::to_allocvec(&vec![caller, i]).unwrap();
                    let request = Request {
                        signature: ECHO_SIGNATURE,
                        ..echo_request(method_id("echo"), &body)
                    };
                    let deadline = Deadline::from_now(Instant::now() + Duration::from_secs(10));
                    let reply = a.call(request, deadline).await;
                    let reply = reply.unwrap_or_else(|err| panic!("caller {caller}, call {i}: {err:?}"));
                    assert_eq!(postcard::from_bytes::<Vec<u8>>(&reply).unwrap(), [caller, i]);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let (sent, answered) = (a.out.records_sealed(), b.out.records_sealed());
    println!(
        "3200 calls in {:?}: {sent} records one way ({} keys), {answered} the other ({} keys)",
        started.elapsed(),
        sent / 7 + 1,
        answered / 7 + 1
    );
    assert!(sent > 70 && answered > 70, "the keys moved on many times");
    assert!(
        host.closed.lock().unwrap().is_empty(),
        "{:?}",
        host.closed.lock().unwrap()
    );
}

/// Regression: ids were taken before the outbox's lock, so two callers
/// could queue them out of order and the peer closed the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_on_a_sealed_connection_all_get_their_answer() {
    let (a, _b, host) = sealed_pair();
    let callers: Vec<_> = (0..64u8)
        .map(|caller| {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                for i in 0..200u8 {
                    let body = postcard::to_allocvec(&vec![caller, i]).unwrap();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let request = Request {
                        signature: ECHO_SIGNATURE,
                        ..echo_request(method_id("echo"), &body)
                    };
                    let reply = a.call(request, Deadline::from_now(deadline)).await;
                    let reply = reply.unwrap_or_else(|err| panic!("caller {caller}, call {i}: {err:?}"));
                    assert_eq!(postcard::from_bytes::<Vec<u8>>(&reply).unwrap(), [caller, i]);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    assert!(
        host.closed.lock().unwrap().is_empty(),
        "{:?}",
        host.closed.lock().unwrap()
    );
}

/// Both nodes call each other with large payloads, so that both outboxes
/// pass their high-water mark: neither reader may stop reading while its
/// node waits for the other's replies, or both stall until liveness closes
/// the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_calls_both_ways_do_not_stall_the_connection() {
    let _alone = MEMORY_HEAVY.lock().await;
    let (a, b, host) = sealed_pair();
    let body = postcard::to_allocvec(&vec![5u8; 512 * 1024]).unwrap();
    let body = Arc::new(body);
    let mut calls = Vec::new();
    for (from, n) in [(Arc::clone(&a), 24), (Arc::clone(&b), 24)] {
        for _ in 0..n {
            let (conn, body) = (Arc::clone(&from), Arc::clone(&body));
            calls.push(tokio::spawn(async move {
                let request = Request {
                    signature: ECHO_SIGNATURE,
                    ..echo_request(method_id("echo"), &body)
                };
                let deadline = Instant::now() + Duration::from_secs(20);
                conn.call(request, Deadline::from_now(deadline))
                    .await
                    .map(|reply| reply.len())
            }));
        }
    }
    let started = Instant::now();
    for call in calls {
        let replied = call.await.unwrap();
        assert_eq!(replied.unwrap(), body.len());
    }
    println!("48 calls of 512 KiB, 24 each way: {:?}", started.elapsed());
    assert!(
        host.closed.lock().unwrap().is_empty(),
        "{:?}",
        host.closed.lock().unwrap()
    );
}
