//! Starts before the service exists: its stub answers `ServiceNotAvailable`;
//! once the inventory node joins, the same stub returns real answers.
//!
//! ```text
//! cargo run -p precompile-client [-- SEED_ADDR]   # default 127.0.0.1:7100
//! cargo run -p precompile-service                 # in another terminal
//! ```

use std::time::Duration;

use malla::{Error, Node};
use precompile_client::InventoryClient;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let seed = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7100".into());
    let node = Node::builder("shop")
        .cookie(std::env::var(malla::COOKIE_ENV).unwrap_or_else(|_| "precompile-demo".into()))
        .listen("127.0.0.1:0".parse().unwrap())
        .seeds([seed.parse().expect("a socket address")])
        .start()
        .await?;
    let inventory = InventoryClient::new(&node);
    match inventory.levels().await {
        Err(Error::ServiceNotAvailable { service, .. }) => {
            println!(
                "shop: `{service}` is not available yet, its stub says so; start `cargo run -p precompile-service`"
            )
        }
        other => println!("shop: {other:?}"),
    }
    node.wait_for_services(&["Inventory"], Duration::from_secs(600)).await?;
    println!("shop: discovered Inventory on {:?}", node.get_nodes("Inventory"));
    println!("shop: add(\"apple\", 3) = {}", inventory.add("apple".into(), 3).await?);
    println!("shop: get(\"apple\") = {:?}", inventory.get("apple".into()).await?);
    println!("shop: levels() = {:?}", inventory.levels().await?);
    node.shutdown().await;
    Ok(())
}
