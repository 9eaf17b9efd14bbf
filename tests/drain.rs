//! A node drained under load (real nodes on loopback, each on its own
//! runtime): callers see no error, the handlers it was running finish, and
//! it is out of every route before it is gone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use malla::CallOptions;
use malla_test_support::nodes::cluster;

const COOKIE: &str = "drain-test-cookie";

#[test]
fn a_drained_node_finishes_its_work_and_leaves_without_a_failed_call() {
    let nodes = cluster("drain", 3, COOKIE);
    let (stays, drained, caller) = (&nodes[0], &nodes[1], &nodes[2]);
    for server in [stays, drained] {
        server
            .run(server.node.serve(GeometryServer::new(Geo::default())))
            .unwrap();
    }
    let both = malla_test_support::wait::wait_until_blocking(Duration::from_secs(5), || {
        caller.node.get_nodes("Geometry").len() == 2
    });
    assert!(both, "the caller sees both servers");

    // Eight callers of a method that is not idempotent and takes 10 ms, so
    // the drained node always has handlers running.
    let geo = GeometryClient::new(&caller.node).with_options(CallOptions::default().timeout(Duration::from_secs(5)));
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (geo, stop, calls, failures) = (geo.clone(), stop.clone(), calls.clone(), failures.clone());
            caller.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match geo.sleep_ms(10).await {
                        Ok(10) => calls.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("a call failed: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // And one long handler there, longer than a plain shutdown's grace (two
    // gossip rounds, then 2 s for calls in flight): the drain waits for it.
    let long = GeometryClient::new(&caller.node).with_options(
        CallOptions::default()
            .timeout(Duration::from_secs(10))
            .nodes([drained.node.id().clone()]),
    );
    let long = caller.spawn(async move { long.sleep_ms(4_000).await });
    std::thread::sleep(Duration::from_millis(100));

    let report = drained.run(drained.node.drain(Duration::from_secs(10))).unwrap();
    let routes = caller.node.get_nodes("Geometry");
    let served = drained.node.stats();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        caller.run(handle).unwrap();
    }
    let long = caller.run(long).unwrap();

    let geometry = served.services.iter().find(|s| s.service == "Geometry").unwrap();
    println!(
        "{} calls, {} failed; drain: {report:?}; the drained node served {} ({} errors, {} refused, {} in flight at exit); routes after: {routes:?}",
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
        geometry.served,
        geometry.serve_errors,
        geometry.refused,
        geometry.in_flight,
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no caller saw an error");
    assert_eq!(long.unwrap(), 4_000, "the long handler finished and answered");
    assert!(report.waited >= Duration::from_millis(3_500), "{report:?}");
    assert!(calls.load(Ordering::Relaxed) > 100);
    assert!(
        report.in_flight_at_start > 0,
        "the drain began with work running: {report:?}"
    );
    assert_eq!(report.unfinished, 0, "{report:?}");
    assert!(geometry.served > 0);
    assert_eq!(
        (geometry.serve_errors, geometry.in_flight),
        (0, 0),
        "every handler ran to its answer"
    );
    assert_eq!(
        routes,
        [stays.node.id().clone()],
        "out of the caller's route before it is gone"
    );
}
