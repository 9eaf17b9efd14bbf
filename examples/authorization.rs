//! `Malla.authorize`, as call layers: a vault node admits only calls that
//! carry a valid token in their metadata. A client interceptor adds the
//! token; a server interceptor checks it, on calls from other nodes and on
//! the vault's own local calls alike. Refused calls never run.
//!
//! ```text
//! cargo run --example authorization
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use malla::{CallInfo, Decision, Error, Interceptor, Node, Rejection, ServeInterceptor, ServeOptions, ServedCall};

#[malla::service(global)]
pub trait Vault {
    async fn put(&self, key: String, value: String);
    #[malla(idempotent)]
    async fn get(&self, key: String) -> Option<String>;
}

#[derive(Default)]
struct Store(Mutex<HashMap<String, String>>);

impl Vault for Store {
    async fn put(&self, key: String, value: String) {
        self.0.lock().unwrap().insert(key, value);
    }

    async fn get(&self, key: String) -> Option<String> {
        self.0.lock().unwrap().get(&key).cloned()
    }
}

/// The caller's side: every call carries `authorization: Bearer <token>`.
struct BearerToken(String);

impl Interceptor for BearerToken {
    fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
        let value = format!("Bearer {}", self.0).into_bytes();
        match call.metadata.insert("authorization", value) {
            Ok(()) => Decision::Continue,
            Err(err) => Decision::Refuse(err),
        }
    }
}

/// The vault's side: tokens it knows, and the methods each may call. A
/// real deployment would check a signed token (a JWT, a macaroon) here.
struct Authorize {
    tokens: HashMap<&'static str, &'static [&'static str]>,
}

impl ServeInterceptor for Authorize {
    fn before(&self, call: &ServedCall<'_>) -> Result<(), Rejection> {
        let token = call
            .metadata()
            .get("authorization")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(allowed) = token.and_then(|t| self.tokens.get(t)) else {
            return Err(Rejection::new("no valid token"));
        };
        if allowed.contains(&call.method()) {
            Ok(())
        } else {
            Err(Rejection::new(format!("this token may not call `{}`", call.method())))
        }
    }
}

const COOKIE: &str = "malla-authorization-demo-cookie";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let vault = Node::builder("vault")
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse().unwrap())
        .gossip_interval(Duration::from_millis(100))
        .start()
        .await?;
    let authorize = Authorize {
        tokens: HashMap::from([("admin-7f3a", &["put", "get"][..]), ("reader-19c2", &["get"][..])]),
    };
    let options = ServeOptions::default().intercept(authorize);
    vault.serve_with(VaultServer::new(Store::default()), options).await?;

    let app = Node::builder("app")
        .cookie(COOKIE)
        .listen("127.0.0.1:0".parse().unwrap())
        .seeds(vault.local_addr())
        .gossip_interval(Duration::from_millis(100))
        .start()
        .await?;
    while app.get_nodes("Vault").is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("app sees the vault on {:?}", app.get_nodes("Vault"));

    let anonymous = VaultClient::new(&app);
    let admin = anonymous.with_interceptor(BearerToken("admin-7f3a".into()));
    let reader = anonymous.with_interceptor(BearerToken("reader-19c2".into()));

    admin.put("launch-code".into(), "0000".into()).await?;
    println!("admin put launch-code");
    println!("reader got {:?}", reader.get("launch-code".into()).await?);

    report("reader put", reader.put("launch-code".into(), "1234".into()).await);
    report("anonymous get", anonymous.get("launch-code".into()).await);
    // The vault's own calls go through the same check, on the direct path.
    report(
        "vault's own get",
        VaultClient::new(&vault).get("launch-code".into()).await,
    );
    println!("value now {:?}", admin.get("launch-code".into()).await?);

    app.shutdown().await;
    vault.shutdown().await;
    Ok(())
}

fn report<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Ok(value) => println!("{what}: {value:?}"),
        Err(err @ Error::Refused { .. }) => println!("{what}: refused ({err}; did not run: {})", err.is_not_run()),
        Err(err) => println!("{what}: failed: {err}"),
    }
}
