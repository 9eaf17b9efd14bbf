//! Two versions of one service side by side (real nodes on loopback, each on
//! its own runtime): v2 adds a method. A caller requiring `^2` reaches only
//! v2; the new method is never sent to v1 (its instance is skipped before
//! any request, from the signatures it publishes); calls with no
//! requirement reach both; a requirement nobody meets is named in
//! `ServiceNotAvailable`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use malla::{CallOptions, Error};
use malla_test_support::{nodes::cluster, wait::wait_until_blocking};

const COOKIE: &str = "versions-test-cookie";

#[malla::service(global, name = "Versioned", vsn = "1.3.0")]
pub trait VersionedV1 {
    #[malla(idempotent)]
    async fn who(&self) -> String;
}

#[malla::service(global, name = "Versioned", vsn = "2.0.1")]
pub trait VersionedV2 {
    #[malla(idempotent)]
    async fn who(&self) -> String;
    /// New in v2.
    async fn added(&self, x: u32) -> u32;
}

struct V1;
impl VersionedV1 for V1 {
    async fn who(&self) -> String {
        "v1".into()
    }
}

struct V2;
impl VersionedV2 for V2 {
    async fn who(&self) -> String {
        "v2".into()
    }
    async fn added(&self, x: u32) -> u32 {
        x + 1
    }
}

/// Calls `call` every 20 ms for `span`, so that routes are drawn again a few
/// times (on every gossip round); returns every answer.
fn spread_over<T>(span: Duration, call: impl Fn() -> Result<T, Error>) -> Vec<T> {
    let start = Instant::now();
    let mut answers = Vec::new();
    while start.elapsed() < span {
        answers.push(call().unwrap_or_else(|err| panic!("a call failed: {err}")));
        std::thread::sleep(Duration::from_millis(20));
    }
    answers
}

#[test]
fn calls_reach_the_versions_that_can_answer_them() {
    let nodes = cluster("vsn", 3, COOKIE);
    let (caller, v1, v2) = (&nodes[0], &nodes[1], &nodes[2]);
    v1.run(v1.node.serve(VersionedV1Server::new(V1))).unwrap();
    v2.run(v2.node.serve(VersionedV2Server::new(V2))).unwrap();
    let both = wait_until_blocking(Duration::from_secs(5), || caller.node.get_nodes("Versioned").len() == 2);
    assert!(both, "the caller sees both versions");
    assert_eq!(
        caller.node.get_nodes_matching("Versioned", "^1").unwrap(),
        [v1.node.id().clone()]
    );
    let v2s = caller.node.get_instances_matching("Versioned", ">=2, <3").unwrap();
    assert_eq!((v2s.len(), v2s[0].vsn.as_str()), (1, "2.0.1"));

    let client = VersionedV2Client::new(&caller.node);
    let requiring_v2 = client.with_options(CallOptions::default().vsn("^2"));
    let answers = spread_over(Duration::from_millis(1500), || caller.run(requiring_v2.who()));
    let reached: BTreeSet<String> = answers.iter().cloned().collect();
    println!("`who` requiring ^2: {} calls, answered by {reached:?}", answers.len());
    assert_eq!(reached, BTreeSet::from(["v2".to_owned()]));

    // The method v1 does not have, with no requirement: v1 is skipped.
    let added = spread_over(Duration::from_millis(1500), || caller.run(client.added(41)));
    assert!(added.iter().all(|&x| x == 42));
    let v1_stats = v1.node.stats();
    let v1_versioned = v1_stats.services.iter().find(|s| s.service == "Versioned").unwrap();
    println!(
        "`added` with no requirement: {} calls; v1 served {} and refused {}",
        added.len(),
        v1_versioned.served,
        v1_versioned.refused
    );
    assert_eq!(v1_versioned.refused, 0, "no request for `added` reached v1");

    // No requirement: both versions answer `who`, as routes are drawn again.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.len() < 2 && Instant::now() < deadline {
        seen.insert(caller.run(client.who()).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, BTreeSet::from(["v1".to_owned(), "v2".to_owned()]));

    // Nobody meets `^3`: said, with the requirement.
    let none = caller.run(client.with_options(CallOptions::default().vsn("^3")).who());
    match &none {
        Err(err @ Error::ServiceNotAvailable { requirement, .. }) => {
            assert_eq!(requirement.as_deref(), Some("^3"));
            assert!(err.to_string().contains("`^3`"), "{err}");
        }
        other => panic!("expected ServiceNotAvailable naming ^3, got {other:?}"),
    }
    // A requirement that is not semver is a clear error, not a routing miss.
    let bad = caller.run(client.with_options(CallOptions::default().vsn("two-ish")).who());
    assert!(
        matches!(&bad, Err(Error::Config(why)) if why.contains("two-ish")),
        "{bad:?}"
    );
    assert!(matches!(
        caller.node.get_nodes_matching("Versioned", "two-ish"),
        Err(Error::Config(_))
    ));
}
