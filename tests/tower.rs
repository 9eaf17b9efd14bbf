//! Tower layers around malla calls (feature `tower`): a timeout layer and a
//! concurrency limit wrap `CallService`, calls reach a real node on
//! loopback, and the layers' errors come back as tower's.
//!
//! `cargo test --features tower --test tower`

#![cfg(feature = "tower")]

use std::time::Duration;

use malla::{CallService, NamedCall};
use malla_test_support::nodes::{NodeRuntime, listening};
use malla_test_support::wait::wait_until_blocking;
use tower::{ServiceBuilder, ServiceExt};

const COOKIE: &str = "tower-test-cookie-000";

#[malla::service(global)]
pub trait Echo {
    async fn after(&self, ms: u64, text: String) -> String;
}

struct Delayed;

impl Echo for Delayed {
    async fn after(&self, ms: u64, text: String) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        text
    }
}

#[test]
fn tower_layers_wrap_calls_by_name() {
    let server = NodeRuntime::start(listening("tower-server", COOKIE));
    server.run(server.node.serve(EchoServer::new(Delayed))).unwrap();
    let caller = NodeRuntime::start(listening("tower-caller", COOKIE).seeds([server.addr()]));
    assert!(wait_until_blocking(Duration::from_secs(10), || !caller
        .node
        .get_nodes("Echo")
        .is_empty()));

    let stack = ServiceBuilder::new()
        .concurrency_limit(4)
        .timeout(Duration::from_millis(300))
        .service(CallService::new(&caller.node));

    let call = NamedCall::new("Echo", "after", &(1u64, "hi".to_owned())).unwrap();
    let reply = caller.run(stack.clone().oneshot(call.clone())).unwrap();
    assert_eq!(call.decode::<String>(&reply).unwrap(), "hi");

    // The timeout layer ends a slow call, and says so with its own error.
    let slow = NamedCall::new("Echo", "after", &(2_000u64, "late".to_owned())).unwrap();
    let err = caller.run(stack.clone().oneshot(slow)).unwrap_err();
    println!("{err}");
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");

    // A malla error passes through the stack unchanged.
    let missing = NamedCall::new("Nowhere", "at_all", &()).unwrap();
    let err = caller.run(stack.oneshot(missing)).unwrap_err();
    let err = err.downcast::<malla::Error>().expect("a malla error");
    assert!(matches!(*err, malla::Error::ServiceNotAvailable { .. }), "{err}");
}
