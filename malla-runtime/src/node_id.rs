//! Node names.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name of a node, unique in its cluster (`"node1"`, `"api@10.0.0.7"`).
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that `name` can name a node: 1 to 255 bytes, no whitespace or
    /// control characters.
    pub fn validate(name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("a node name cannot be empty".into());
        }
        if name.len() > 255 {
            return Err(format!("node name `{name}` is longer than 255 bytes"));
        }
        if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("node name `{name}` contains {c:?}"));
        }
        Ok(())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for NodeId {
    fn from(name: &str) -> Self {
        NodeId(name.into())
    }
}

impl From<String> for NodeId {
    fn from(name: String) -> Self {
        NodeId(name.into())
    }
}

impl From<&NodeId> for NodeId {
    fn from(id: &NodeId) -> Self {
        id.clone()
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}
