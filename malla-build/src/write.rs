//! Writing manifests: the one place that knows how a manifest looks on disk,
//! used by `export` (from sources) and by tools (`malla manifest`, from what a
//! running node publishes).

use std::fmt::Write as _;

/// A service as a manifest lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Wire name.
    pub name: String,
    /// Name of the generated types, when it differs from the wire name.
    pub rust_name: Option<String>,
    /// Version.
    pub vsn: String,
    /// Whether it is published cluster-wide.
    pub global: bool,
    /// Methods, in order.
    pub methods: Vec<MethodEntry>,
}

/// A method as a manifest lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodEntry {
    /// Name.
    pub name: String,
    /// `(name, type)` of each argument.
    pub args: Vec<(String, String)>,
    /// Return type.
    pub returns: String,
    /// `#[malla(idempotent)]`.
    pub idempotent: bool,
    /// `#[malla(timeout_ms = …)]`.
    pub timeout_ms: Option<u64>,
    /// Documentation, if any.
    pub doc: Option<String>,
}

/// The manifest text: `header` as comment lines, the shared `use` paths, then
/// every service.
pub fn write_manifest(header: &str, uses: &[String], services: &[ServiceEntry]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        writeln!(out, "# {line}").unwrap();
    }
    if !uses.is_empty() {
        let uses: Vec<String> = uses.iter().map(|u| quoted(u)).collect();
        writeln!(out, "use = [{}]", uses.join(", ")).unwrap();
    }
    for service in services {
        writeln!(out, "\n[[service]]").unwrap();
        writeln!(out, "name = {}", quoted(&service.name)).unwrap();
        if let Some(rust_name) = &service.rust_name {
            writeln!(out, "rust_name = {}", quoted(rust_name)).unwrap();
        }
        writeln!(out, "vsn = {}", quoted(&service.vsn)).unwrap();
        if !service.global {
            writeln!(out, "global = false").unwrap();
        }
        for method in &service.methods {
            writeln!(out, "\n  [[service.method]]").unwrap();
            writeln!(out, "  name = {}", quoted(&method.name)).unwrap();
            let args: Vec<String> = method
                .args
                .iter()
                .map(|(name, ty)| quoted(&format!("{name}: {ty}")))
                .collect();
            writeln!(out, "  args = [{}]", args.join(", ")).unwrap();
            writeln!(out, "  returns = {}", quoted(&method.returns)).unwrap();
            if method.idempotent {
                writeln!(out, "  idempotent = true").unwrap();
            }
            if let Some(ms) = method.timeout_ms {
                writeln!(out, "  timeout_ms = {ms}").unwrap();
            }
            if let Some(doc) = &method.doc {
                writeln!(out, "  doc = {}", quoted(doc)).unwrap();
            }
        }
    }
    out
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}
