//! A node serving the inventory.
//!
//! ```text
//! cargo run -p precompile-service [-- LISTEN_ADDR]   # default 127.0.0.1:7100
//! cargo run -p precompile-service -- --manifest      # print the manifest
//! ```

use precompile_service::{InventoryServer, MANIFEST_TOML, Stock};

#[tokio::main]
async fn main() -> Result<(), malla::Error> {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("--manifest") {
        print!("{MANIFEST_TOML}");
        return Ok(());
    }
    let listen = arg.unwrap_or_else(|| "127.0.0.1:7100".into());
    let node = malla::Node::builder("inventory")
        .cookie(std::env::var(malla::COOKIE_ENV).unwrap_or_else(|_| "precompile-demo".into()))
        .listen(listen.parse().expect("a socket address"))
        .start()
        .await?;
    node.serve(InventoryServer::new(Stock::default())).await?;
    println!("inventory: serving on {}", node.local_addr().unwrap());
    tokio::signal::ctrl_c().await.ok();
    node.shutdown().await;
    Ok(())
}
