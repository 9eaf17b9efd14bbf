//! What the inventory service and its clients exchange. Both sides depend on
//! this crate; neither depends on the other.

use serde::{Deserialize, Serialize};

/// A stock item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stock keeping unit.
    pub sku: String,
    /// Units in stock.
    pub count: u32,
}
