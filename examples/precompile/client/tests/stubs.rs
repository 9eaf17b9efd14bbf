//! Proves that stubs generated from a manifest, in a crate that does not
//! depend on the service's, are wire-compatible with the real service: a
//! stub answers `ServiceNotAvailable` until the service node joins, then the
//! same handle returns its answers; a stub from an outdated manifest gets
//! `SignatureMismatch` naming the method; and the manifest the service
//! exports is the one this crate precompiles.

use std::time::Duration;

use inventory_types::Item;
use malla::{Error, Node};
use precompile_client::InventoryClient;

mod outdated {
    malla::include_stubs!("outdated_stubs.rs");
}

const COOKIE: &str = "precompile-test-cookie";

/// The service node, on its own runtime as another process would be.
struct ServiceNode {
    node: Node,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ServiceNode {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn start_service(seed: std::net::SocketAddr) -> ServiceNode {
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let node = runtime.block_on(async {
                let node = Node::builder("inventory")
                    .cookie(COOKIE)
                    .listen("127.0.0.1:0".parse().unwrap())
                    .seeds([seed])
                    .start()
                    .await
                    .unwrap();
                let stock = precompile_service::InventoryServer::new(precompile_service::Stock::default());
                node.serve(stock).await.unwrap();
                node
            });
            ServiceNode {
                node,
                runtime: Some(runtime),
            }
        })
        .join()
        .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precompiled_stub_routes_to_the_service_once_it_joins() {
    let shop = Node::builder("shop")
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let inventory = InventoryClient::new(&shop);
    assert!(matches!(
        inventory.add("apple".into(), 1).await,
        Err(Error::ServiceNotAvailable { service, .. }) if service == "Inventory"
    ));

    let service = start_service(shop.local_addr().unwrap());
    shop.wait_for_services(&["Inventory"], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(shop.get_nodes("Inventory"), vec![service.node.id().clone()]);
    assert_eq!(inventory.add("apple".into(), 3).await.unwrap(), 3);
    assert_eq!(inventory.add("apple".into(), 2).await.unwrap(), 5);
    assert_eq!(
        inventory.get("apple".into()).await.unwrap(),
        Some(Item {
            sku: "apple".into(),
            count: 5
        })
    );
    assert_eq!(inventory.get("pear".into()).await.unwrap(), None);
    assert_eq!(inventory.levels().await.unwrap().get("apple"), Some(&5));

    // A stub from an outdated manifest is refused, by name, not garbled.
    match outdated::OldInventoryClient::new(&shop).add("apple".into(), 1).await {
        Err(Error::SignatureMismatch {
            service: name,
            method,
            node,
        }) => {
            assert_eq!((name.as_ref(), method.as_ref()), ("Inventory", "add"));
            assert_eq!(&node, service.node.id());
        }
        other => panic!("expected SignatureMismatch, got {other:?}"),
    }
}

#[test]
fn the_stubs_carry_the_services_wire_identities() {
    let stub = precompile_client::InventoryClient::MANIFEST;
    let real = precompile_service::InventoryClient::MANIFEST;
    assert_eq!(stub.name(), real.name());
    assert_eq!(stub.methods().len(), real.methods().len());
    for (stub, real) in stub.methods().iter().zip(real.methods()) {
        assert_eq!(
            (stub.name(), stub.id(), stub.signature()),
            (real.name(), real.id(), real.signature())
        );
        assert_eq!(stub.is_idempotent(), real.is_idempotent());
        assert_eq!(stub.timeout_ms(), real.timeout_ms());
    }
    // Both are listed among the services this binary knows.
    let declared = malla::declared_services().filter(|m| m.name() == "Inventory").count();
    assert_eq!(declared, 3, "the real service, its stub and the outdated stub");
}

#[test]
fn the_precompiled_manifest_is_the_one_the_service_exports() {
    let committed = include_str!("../malla.toml");
    assert_eq!(
        committed,
        precompile_service::MANIFEST_TOML,
        "malla.toml is stale: cargo run -q -p precompile-service -- --manifest > examples/precompile/client/malla.toml"
    );
}
