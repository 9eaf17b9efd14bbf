//! The inventory service: its trait, its implementation, and its manifest.

use std::collections::BTreeMap;
use std::sync::Mutex;

use inventory_types::Item;

/// This crate's services as a manifest, for clients that do not depend on
/// it (exported by `build.rs`).
pub const MANIFEST_TOML: &str = include_str!(concat!(env!("OUT_DIR"), "/malla.toml"));

/// Stock keeping.
#[malla::service(global, vsn = "1.0.0")]
pub trait Inventory {
    /// Adds `count` units of `sku`; returns the new level.
    async fn add(&self, sku: String, count: u32) -> u32;
    /// The item, if it was ever stocked.
    #[malla(idempotent)]
    async fn get(&self, sku: String) -> Option<Item>;
    /// Every level, by SKU.
    #[malla(idempotent, timeout_ms = 2000)]
    async fn levels(&self) -> BTreeMap<String, u32>;
}

/// An in-memory inventory.
#[derive(Default)]
pub struct Stock {
    levels: Mutex<BTreeMap<String, u32>>,
}

impl Inventory for Stock {
    async fn add(&self, sku: String, count: u32) -> u32 {
        let mut levels = self.levels.lock().unwrap();
        let level = levels.entry(sku).or_default();
        *level += count;
        *level
    }

    async fn get(&self, sku: String) -> Option<Item> {
        let count = *self.levels.lock().unwrap().get(&sku)?;
        Some(Item { sku, count })
    }

    async fn levels(&self) -> BTreeMap<String, u32> {
        self.levels.lock().unwrap().clone()
    }
}
