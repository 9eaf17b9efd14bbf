//! Build-script helper for malla: typed stubs for services whose crate is
//! not a dependency, generated from a manifest (Malla's `:precompile`
//! config, checked at build time).
//!
//! A client crate lists the remote services it calls in `malla.toml`:
//!
//! ```toml
//! # Paths the types below need, for every service of the file.
//! use = ["inventory_types::Item"]
//!
//! [[service]]
//! name = "Inventory"        # wire name, as the service declares it
//! vsn = "1.0.0"             # informative
//! # rust_name = "Stock"     # generated types: `StockClient` (default: the name)
//! # use = ["..."]           # paths for this service only
//!
//!   [[service.method]]
//!   name = "add"
//!   args = ["sku: String", "count: u32"]
//!   returns = "u32"         # default "()"
//!
//!   [[service.method]]
//!   name = "get"
//!   args = ["sku: String"]
//!   returns = "Option<Item>"
//!   idempotent = true       # may be re-sent to another node (default false)
//!   timeout_ms = 500        # default deadline (default: none, 15 s)
//!   doc = "The item, if any."
//! ```
//!
//! and generates the clients from its `build.rs`:
//!
//! ```no_run
//! // build.rs, in `fn main()`:
//! malla_build::precompile("malla.toml");
//! ```
//!
//! ```ignore
//! // src/lib.rs
//! malla::include_stubs!();
//! // `InventoryClient` is now here, wire-compatible with the real service:
//! // same method ids, same signature hashes.
//! ```
//!
//! Until the service is discovered somewhere in the cluster, a call on the
//! stub answers `Error::ServiceNotAvailable`; once it is, the same handle
//! routes to it. A stub whose manifest no longer matches the service gets
//! `Error::SignatureMismatch` naming the method.
//!
//! A service crate produces its manifest instead of anyone writing it by
//! hand: [`export`] reads its sources (every `#[malla::service]` trait) and
//! [`export_manifest`] writes `$OUT_DIR/malla.toml` from its `build.rs`; the
//! `malla manifest <service>` command prints the one a running node publishes.
//!
//! Bad manifests fail the build with the file, line and column:
//!
//! ```text
//! error: malla.toml:12:9: `Vec<u8` is not a Rust type (unexpected end of input, expected `>`)
//! ```

#![deny(missing_docs)]

mod error;
mod export;
mod manifest;
mod stubs;
mod write;

use std::path::{Path, PathBuf};

pub use error::ManifestError;
pub use write::{MethodEntry, ServiceEntry, write_manifest};

/// Why stubs could not be generated or a manifest exported.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The manifest (or source) is wrong; every problem found, with its place.
    Manifest(Vec<ManifestError>),
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `OUT_DIR` is not set: not running in a build script.
    NotInBuildScript,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Manifest(errors) => {
                for (i, error) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{error}")?;
                }
                Ok(())
            }
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::NotInBuildScript => f.write_str("OUT_DIR is not set: call malla-build from a build script"),
        }
    }
}

impl std::error::Error for Error {}

/// Generates the stubs of `manifest` into `$OUT_DIR/malla_stubs.rs`, for
/// `malla::include_stubs!()`. For `build.rs`: on a bad manifest, prints each
/// problem with its file, line and column and fails the build.
pub fn precompile(manifest: impl AsRef<Path>) {
    Stubs::new().manifest(manifest).run();
}

/// Options of stub generation: several manifests, another output file, a
/// renamed malla crate.
///
/// ```no_run
/// // build.rs
/// malla_build::Stubs::new()
///     .manifest("malla.toml")
///     .manifest("billing.toml")
///     .out_file("remote_stubs.rs") // malla::include_stubs!("remote_stubs.rs")
///     .run();
/// ```
#[derive(Debug, Clone)]
pub struct Stubs {
    manifests: Vec<PathBuf>,
    out_file: String,
    krate: String,
}

impl Default for Stubs {
    fn default() -> Self {
        Stubs {
            manifests: Vec::new(),
            out_file: "malla_stubs.rs".into(),
            krate: "::malla".into(),
        }
    }
}

impl Stubs {
    /// No manifest yet; output `malla_stubs.rs`; malla at `::malla`.
    pub fn new() -> Self {
        Stubs::default()
    }

    /// Adds a manifest.
    pub fn manifest(mut self, path: impl AsRef<Path>) -> Self {
        self.manifests.push(path.as_ref().to_owned());
        self
    }

    /// The file written in `OUT_DIR` (default `malla_stubs.rs`).
    pub fn out_file(mut self, name: impl Into<String>) -> Self {
        self.out_file = name.into();
        self
    }

    /// The path of the malla crate, if it is renamed in `Cargo.toml`.
    pub fn crate_path(mut self, path: impl Into<String>) -> Self {
        self.krate = path.into();
        self
    }

    /// Generates the stubs into `OUT_DIR` and asks cargo to run the build
    /// script again only when a manifest changes. Returns the file written.
    pub fn generate(&self) -> Result<PathBuf, Error> {
        let out_dir = std::env::var_os("OUT_DIR").ok_or(Error::NotInBuildScript)?;
        let mut source = String::new();
        let mut errors = Vec::new();
        let mut rust_names = std::collections::HashMap::new();
        for path in &self.manifests {
            println!("cargo::rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            match self.file_source(path, &text, &mut rust_names) {
                Ok(code) => source.push_str(&code),
                Err(mut found) => errors.append(&mut found),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Manifest(errors));
        }
        let out = Path::new(&out_dir).join(&self.out_file);
        std::fs::write(&out, source).map_err(|source| Error::Io {
            path: out.clone(),
            source,
        })?;
        Ok(out)
    }

    /// [`generate`](Self::generate), failing the build with readable errors.
    pub fn run(&self) {
        if let Err(err) = self.generate() {
            fail_build(&err);
        }
    }

    fn file_source(
        &self,
        path: &Path,
        text: &str,
        rust_names: &mut std::collections::HashMap<String, PathBuf>,
    ) -> Result<String, Vec<ManifestError>> {
        let mut services = manifest::read(path, text)?;
        for stub in &services {
            let name = stub.service.ident.to_string();
            if let Some(other) = rust_names.insert(name.clone(), path.to_owned()) {
                return Err(vec![ManifestError::whole(
                    path,
                    format!(
                        "`{name}Client` is also generated from {}; set `rust_name` on one",
                        other.display()
                    ),
                )]);
            }
        }
        let krate: syn::Path = syn::parse_str(&self.krate).map_err(|_| {
            vec![ManifestError::whole(
                path,
                format!("`{}` is not a crate path", self.krate),
            )]
        })?;
        Ok(stubs::source(&mut services, &krate, &path.display().to_string()))
    }
}

/// The Rust source of the stubs a manifest describes, without writing
/// anything: for tools and tests.
pub fn stubs_source(manifest_text: &str, file: impl AsRef<Path>) -> Result<String, Error> {
    Stubs::new()
        .file_source(file.as_ref(), manifest_text, &mut Default::default())
        .map_err(Error::Manifest)
}

/// The manifest of every `#[malla::service]` trait in `sources`, as TOML a
/// client crate can precompile.
pub fn export<I, P>(sources: I) -> Result<String, Error>
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    let mut manifest = String::new();
    for path in sources {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        manifest.push_str(&export::manifest(path, &text).map_err(|e| Error::Manifest(vec![e]))?);
    }
    Ok(manifest)
}

/// For a service crate's `build.rs`: writes the manifest of `sources` to
/// `$OUT_DIR/malla.toml` (include it with
/// `include_str!(concat!(env!("OUT_DIR"), "/malla.toml"))` to ship it), and
/// fails the build with readable errors if a service is invalid.
pub fn export_manifest<I, P>(sources: I)
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    let sources: Vec<PathBuf> = sources.into_iter().map(|p| p.as_ref().to_owned()).collect();
    for source in &sources {
        println!("cargo::rerun-if-changed={}", source.display());
    }
    let written = export(&sources).and_then(|manifest| {
        let out_dir = std::env::var_os("OUT_DIR").ok_or(Error::NotInBuildScript)?;
        let out = Path::new(&out_dir).join("malla.toml");
        std::fs::write(&out, manifest).map_err(|source| Error::Io { path: out, source })
    });
    if let Err(err) = written {
        fail_build(&err);
    }
}

/// Reports `err` to cargo, one problem per line, and ends the build script.
fn fail_build(err: &Error) -> ! {
    for line in err.to_string().lines() {
        println!("cargo::error={line}");
    }
    std::process::exit(1);
}
