//! Proves the generated code on one node: every method shape through the
//! typed client, the stub before serving, panics turned into errors,
//! deadlines, admin status, and the manifests listed by `declared_services`.

mod common;

use std::time::Duration;

use common::*;
use malla::{AdminStatus, CallOptions, Error, Node};

async fn node(name: &str) -> Node {
    Node::builder(name).start().await.unwrap()
}

#[tokio::test]
async fn every_method_shape_works_in_process() {
    let node = node("n1").await;
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    exercise_every_shape(&GeometryClient::new(&node)).await;
}

/// Regression: a JSON call reaching a service served on the same node was
/// decoded as postcard (the local path had a dispatcher of its own).
#[tokio::test]
async fn calls_by_name_reach_a_service_served_here_in_their_format() {
    let node = node("by-name").await;
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    let sum: i64 = node
        .remote("Geometry", "add", &(40i64, 2i64), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(sum, 42);
    let reply = node_json(&node, serde_json::json!([40, 2])).await.unwrap();
    assert_eq!(reply, serde_json::json!(42));
    // Arguments of the wrong type are refused before the handler runs.
    let err = node_json(&node, serde_json::json!(["forty", 2])).await.unwrap_err();
    assert!(
        matches!(err, Error::Remote { .. }) && err.to_string().contains("bad request"),
        "{err}"
    );
}

async fn node_json(node: &Node, args: serde_json::Value) -> Result<serde_json::Value, Error> {
    node.call_json("Geometry", "add", &args, CallOptions::default()).await
}

#[tokio::test]
async fn a_stub_answers_before_serving_and_routes_after() {
    let node = node("n1").await;
    let client = GeometryClient::new(&node);
    match client.add(1, 2).await {
        Err(Error::ServiceNotAvailable { service, .. }) => assert_eq!(service, "Geometry"),
        other => panic!("expected ServiceNotAvailable, got {other:?}"),
    }
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    // The same handle, made before the service existed.
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
}

#[tokio::test]
async fn a_declared_but_unserved_service_is_not_available() {
    let node = node("n1").await;
    let err = UnservedClient::new(&node).add(1, 2).await.unwrap_err();
    assert!(matches!(err, Error::ServiceNotAvailable { ref service, .. } if service == "Unserved"));
    assert_eq!(err.to_string(), "service `Unserved` is not available on any known node");
}

#[tokio::test]
async fn a_panicking_handler_is_an_error_and_the_server_keeps_serving() {
    let node = node("n1").await;
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    let client = GeometryClient::new(&node);
    match client.boom("kaput".into()).await {
        Err(Error::Remote {
            message, method, node, ..
        }) => {
            assert!(message.contains("kaput"), "{message}");
            assert_eq!(method, "boom");
            assert_eq!(node, "n1");
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
}

#[tokio::test]
async fn the_method_deadline_and_the_call_options_bound_a_call() {
    let node = node("n1").await;
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    let client = GeometryClient::new(&node);
    // `#[malla(timeout_ms = 50)]`
    match client.sleep_ms(2_000).await {
        Err(Error::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_millis(50)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    // Options override the method's default.
    let patient = client.with_options(CallOptions::default().timeout(Duration::from_secs(5)));
    assert_eq!(patient.sleep_ms(80).await.unwrap(), 80);
}

#[tokio::test]
async fn paused_services_answer_not_available_until_active_again() {
    let node = node("n1").await;
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    let client = GeometryClient::new(&node);
    node.set_admin_status("Geometry", AdminStatus::Paused).await.unwrap();
    assert_eq!(node.admin_status("Geometry"), Some(AdminStatus::Paused));
    assert!(matches!(client.add(1, 2).await, Err(Error::ServiceNotAvailable { .. })));
    node.set_admin_status("Geometry", AdminStatus::Inactive).await.unwrap();
    assert!(matches!(client.add(1, 2).await, Err(Error::ServiceNotAvailable { .. })));
    node.set_admin_status("Geometry", AdminStatus::Active).await.unwrap();
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    assert!(matches!(
        node.set_admin_status("Nope", AdminStatus::Paused).await,
        Err(Error::NotServed(name)) if name == "Nope"
    ));
}

#[tokio::test]
async fn sna_retries_wait_for_a_late_service() {
    let node = node("n1").await;
    let client = GeometryClient::new(&node).with_options(
        CallOptions::default()
            .sna_retries(20)
            .retry_interval(Duration::from_millis(20)),
    );
    let late = node.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        late.serve(GeometryServer::new(Geo::default())).await.unwrap();
    });
    assert_eq!(client.add(20, 22).await.unwrap(), 42);
}

#[tokio::test]
async fn a_service_name_is_served_once_per_node() {
    let node = node("n1").await;
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    let again = node.serve(GeometryServer::new(Geo::default())).await;
    assert!(matches!(again, Err(Error::AlreadyServed(name)) if name == "Geometry"));
    assert_eq!(node.local_services(), vec!["Geometry".to_string()]);
}

#[tokio::test]
async fn clients_are_shared_between_tasks() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
    let node = node("n1").await;
    node.serve(GeometryServer::new(Geo::default())).await.unwrap();
    let client = GeometryClient::new(&node);
    assert_send_sync_clone(&client);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.add(i, i).await.unwrap() })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), 2 * i as i64);
    }
    assert_eq!(client.count().await.unwrap(), 1);
}

#[tokio::test]
async fn the_server_dispatches_method_ids_and_postcard_bytes() {
    use malla::Service;
    let server = GeometryServer::new(Geo::default());
    let manifest = server.manifest();
    let index = manifest.methods().iter().position(|m| m.name() == "add").unwrap();
    let args = malla::__private::postcard_to_vec(&(40i64, 2i64));
    let reply = server
        .dispatch(index, malla::__private::Format::Postcard, &args)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(reply, malla::__private::postcard_to_vec(&42i64));
    // Garbage arguments are an error, not a panic.
    assert!(
        server
            .dispatch(index, malla::__private::Format::Postcard, &[0xff])
            .is_err()
    );
    assert!(server.dispatch(999, malla::__private::Format::Postcard, &[]).is_err());
}

#[test]
fn declared_services_lists_manifests_with_signature_hashes() {
    let geometry = malla::declared_service("Geometry").expect("Geometry is declared");
    assert_eq!(geometry.vsn(), "1.0.0");
    assert!(geometry.is_global());
    let add = geometry.method("add").unwrap();
    assert_eq!(
        add.args().iter().map(|a| (a.name(), a.ty())).collect::<Vec<_>>(),
        [("a", "i64"), ("b", "i64")]
    );
    assert_eq!(add.ret(), "i64");
    assert!(!add.is_idempotent());
    assert!(geometry.method("count").unwrap().is_idempotent());
    assert_eq!(geometry.method("sleep_ms").unwrap().timeout_ms(), Some(50));
    assert_eq!(geometry.method("ping").unwrap().ret(), "()");
    assert_eq!(
        geometry.method("totals").unwrap().args()[0].ty(),
        "HashMap<String,Vec<i32>>"
    );
    // The same method in another service declaration gets the same hash.
    let unserved = malla::declared_service("Unserved").unwrap();
    assert_eq!(unserved.method("add").unwrap().signature(), add.signature());
    assert_eq!(unserved.method("add").unwrap().id(), add.id());
    assert!(malla::declared_services().count() >= 2);
}

mod hashing {
    //! The signature hash follows the types, not how they are written.
    #[malla::service(name = "Spaced")]
    pub trait Spaced {
        async fn put(&self, key: String, values: Vec<Option<u8>>) -> Result<(), String>;
    }

    #[malla::service(name = "Tight")]
    pub trait Tight {
        async fn put(&self, key: String, values: Vec<Option<u8>>) -> Result<(), String>;
    }

    #[malla::service(name = "Changed")]
    pub trait Changed {
        async fn put(&self, key: String, values: Vec<Option<u16>>) -> Result<(), String>;
    }

    #[test]
    fn whitespace_does_not_change_the_hash_but_a_type_does() {
        let hash = |m: &malla::ServiceManifest| m.method("put").unwrap().signature();
        assert_eq!(hash(SpacedClient::MANIFEST), hash(TightClient::MANIFEST));
        assert_ne!(hash(TightClient::MANIFEST), hash(ChangedClient::MANIFEST));
    }
}
