use std::collections::BTreeMap;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
}

/// Docs on the trait are kept.
#[malla::service(global, vsn = "1.2.0", name = "kv")]
pub trait KeyValue: Send {
    /// Docs on methods are copied to the client.
    #[malla(idempotent, timeout_ms = 250)]
    async fn get(&self, key: String) -> Option<Entry>;
    async fn put(&self, entry: Entry) -> Result<(), String>;
    async fn dump(&self) -> BTreeMap<String, Vec<u8>>;
    async fn clear(&self);
    async fn r#type(&self) -> str2;
}

pub type str2 = String;

struct Kv;

impl KeyValue for Kv {
    async fn get(&self, _key: String) -> Option<Entry> {
        None
    }
    async fn put(&self, _entry: Entry) -> Result<(), String> {
        Ok(())
    }
    async fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::new()
    }
    async fn clear(&self) {}
    async fn r#type(&self) -> String {
        "memory".into()
    }
}

fn main() {
    let _server = KeyValueServer::new(Kv);
    let manifest = KeyValueClient::MANIFEST;
    assert_eq!(manifest.name(), "kv");
    assert_eq!(manifest.vsn(), "1.2.0");
    assert!(manifest.is_global());
    assert_eq!(manifest.method("type").unwrap().ret(), "str2");
}
