//! The manifest format, and its reading into the code generator's IR with
//! every value checked and every error placed.
//!
//! ```toml
//! # Paths the types below need, for every service of the file.
//! use = ["my_types::Stats"]
//!
//! [[service]]
//! name = "Calculator"     # wire name
//! vsn = "1.2.0"           # informative
//! # rust_name = "Calc"    # generated types: `CalcClient` (default: the name)
//! # global = true         # default
//! # use = ["..."]         # paths for this service only
//!
//!   [[service.method]]
//!   name = "add"
//!   args = ["a: i64", "b: i64"]
//!   returns = "i64"       # default "()"
//!
//!   [[service.method]]
//!   name = "stats"
//!   args = ["values: Vec<f64>"]
//!   returns = "Option<Stats>"
//!   idempotent = true     # default false
//!   timeout_ms = 500      # default: none
//!   doc = "Mean and count of `values`."
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use malla_codegen::{Arg, Method, MethodAttrs, Service, ServiceAttrs};
use proc_macro2::Span;
use serde::Deserialize;
use toml::Spanned;

use crate::error::ManifestError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default, rename = "use")]
    uses: Vec<Spanned<String>>,
    #[serde(default, rename = "service")]
    services: Vec<Spanned<ServiceEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    name: Spanned<String>,
    #[serde(default)]
    rust_name: Option<Spanned<String>>,
    #[serde(default)]
    vsn: String,
    #[serde(default = "global_by_default")]
    global: bool,
    #[serde(default, rename = "use")]
    uses: Vec<Spanned<String>>,
    #[serde(default, rename = "method")]
    methods: Vec<Spanned<MethodEntry>>,
}

fn global_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodEntry {
    name: Spanned<String>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
    #[serde(default)]
    returns: Option<Spanned<String>>,
    #[serde(default)]
    idempotent: bool,
    #[serde(default)]
    timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    doc: Option<String>,
}

/// A service read from a manifest, ready for the code generator.
pub(crate) struct StubService {
    pub(crate) service: Service<'static>,
    /// `use` trees the generated code needs, from the file and the service.
    pub(crate) uses: Vec<syn::UseTree>,
}

/// Reads a manifest. Returns every problem found, each with its position.
pub(crate) fn read(file: &Path, text: &str) -> Result<Vec<StubService>, Vec<ManifestError>> {
    let manifest: ManifestFile = toml::from_str(text).map_err(|err| {
        let offset = err.span().map_or(0, |span| span.start);
        vec![ManifestError::at(
            file,
            text,
            offset,
            err.message().trim_end().to_owned(),
        )]
    })?;
    let mut cx = Reader {
        file,
        text,
        errors: Vec::new(),
    };
    let shared_uses: Vec<syn::UseTree> = manifest.uses.iter().filter_map(|u| cx.use_tree(u)).collect();
    let mut wire_names: HashMap<String, usize> = HashMap::new();
    let mut rust_names: HashMap<String, usize> = HashMap::new();
    let mut services = Vec::new();
    for entry in &manifest.services {
        let entry_ref = entry.get_ref();
        if let Some(first) = wire_names.insert(entry_ref.name.get_ref().clone(), entry_ref.name.span().start) {
            cx.error(
                entry_ref.name.span(),
                format!(
                    "duplicate service `{}` (first declared on line {})",
                    entry_ref.name.get_ref(),
                    cx.line_of(first)
                ),
            );
            continue;
        }
        let Some(service) = cx.service(entry) else { continue };
        let rust_name = service.ident.to_string();
        if let Some(first) = rust_names.insert(rust_name.clone(), entry_ref.name.span().start) {
            cx.error(
                entry.span(),
                format!(
                    "two services generate `{rust_name}Client` (the other on line {}); set `rust_name` on one",
                    cx.line_of(first)
                ),
            );
            continue;
        }
        let mut uses = shared_uses.clone();
        uses.extend(entry_ref.uses.iter().filter_map(|u| cx.use_tree(u)));
        services.push(StubService { service, uses });
    }
    if cx.errors.is_empty() {
        Ok(services)
    } else {
        Err(cx.errors)
    }
}

struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ManifestError>,
}

impl Reader<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors
            .push(ManifestError::at(self.file, self.text, span.start, message));
    }

    fn line_of(&self, offset: usize) -> usize {
        ManifestError::at(self.file, self.text, offset, "").line
    }

    fn use_tree(&mut self, path: &Spanned<String>) -> Option<syn::UseTree> {
        match syn::parse_str::<syn::UseTree>(path.get_ref()) {
            Ok(tree) => Some(tree),
            Err(err) => {
                self.error(path.span(), format!("`{}` is not a use path ({err})", path.get_ref()));
                None
            }
        }
    }

    fn service(&mut self, entry: &Spanned<ServiceEntry>) -> Option<Service<'static>> {
        let entry = entry.get_ref();
        let name = entry.name.get_ref();
        if let Err(why) = malla_codegen::check_wire_name(name) {
            self.error(entry.name.span(), why);
            return None;
        }
        let rust_name = entry.rust_name.as_ref().unwrap_or(&entry.name);
        let Ok(ident) = syn::parse_str::<syn::Ident>(rust_name.get_ref()) else {
            let message = if entry.rust_name.is_some() {
                format!("`rust_name` must be a Rust identifier, not `{}`", rust_name.get_ref())
            } else {
                format!(
                    "service `{name}` is not a Rust identifier; add `rust_name = \"...\"` to name the generated types"
                )
            };
            self.error(rust_name.span(), message);
            return None;
        };

        let errors_before = self.errors.len();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut methods = Vec::new();
        for method in &entry.methods {
            let method_name = method.get_ref().name.get_ref();
            if let Some(first) = seen.insert(method_name.clone(), method.get_ref().name.span().start) {
                let line = self.line_of(first);
                self.error(
                    method.get_ref().name.span(),
                    format!("duplicate method `{method_name}` in service `{name}` (first declared on line {line})"),
                );
                continue;
            }
            if let Some(method) = self.method(name, &ident, method) {
                methods.push(method);
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let service = Service {
            original: None,
            vis: syn::parse_quote!(pub),
            ident,
            attrs: ServiceAttrs {
                global: entry.global,
                vsn: entry.vsn.clone(),
                name: Some(syn::LitStr::new(name, Span::call_site())),
                krate: syn::parse_quote!(::malla),
                // A stub calls; how the service is served is its server's.
                singleton: None,
            },
            methods,
        };
        // The macro's own cross-item rules, as a backstop.
        if let Err(err) = service.validate() {
            self.error(entry.name.span(), format!("service `{name}`: {err}"));
            return None;
        }
        Some(service)
    }

    fn method(&mut self, service: &str, ident: &syn::Ident, entry: &Spanned<MethodEntry>) -> Option<Method<'static>> {
        let entry = entry.get_ref();
        let name = entry.name.get_ref();
        let Some(method_ident) = identifier(name) else {
            self.error(
                entry.name.span(),
                format!("method name `{name}` is not a Rust identifier"),
            );
            return None;
        };
        if malla_codegen::RESERVED_CLIENT_METHODS.contains(&name.as_str()) {
            self.error(
                entry.name.span(),
                format!("method name `{name}` collides with the generated `{ident}Client::{name}`"),
            );
            return None;
        }
        let mut ok = true;
        let mut args = Vec::new();
        for arg in &entry.args {
            match self.arg(arg) {
                Some(arg) => args.push(arg),
                None => ok = false,
            }
        }
        if args.len() > malla_codegen::MAX_ARGS {
            let span = entry.args[malla_codegen::MAX_ARGS].span();
            self.error(
                span,
                format!("a method takes at most {} arguments", malla_codegen::MAX_ARGS),
            );
            ok = false;
        }
        let mut arg_names: HashMap<String, ()> = HashMap::new();
        for (arg, entry) in args.iter().zip(&entry.args) {
            if arg_names.insert(arg.ident.to_string(), ()).is_some() {
                self.error(
                    entry.span(),
                    format!("duplicate argument `{}` in `{service}.{name}`", arg.ident),
                );
                ok = false;
            }
        }
        let ret = match &entry.returns {
            None => syn::parse_quote!(()),
            Some(returns) => self.ty(returns, returns.get_ref(), "return")?,
        };
        let timeout_ms = match &entry.timeout_ms {
            None => None,
            Some(ms) if *ms.get_ref() > 0 => Some(*ms.get_ref() as u64),
            Some(ms) => {
                self.error(ms.span(), "`timeout_ms` must be a positive number of milliseconds");
                return None;
            }
        };
        let docs = entry
            .doc
            .iter()
            .flat_map(|doc| doc.lines())
            .map(|line| {
                let line = format!(" {line}");
                syn::parse_quote!(#[doc = #line])
            })
            .collect();
        ok.then(|| Method {
            original: None,
            ident: method_ident,
            args,
            ret,
            attrs: MethodAttrs {
                idempotent: entry.idempotent,
                timeout_ms,
            },
            docs,
        })
    }

    /// `name: Type`.
    fn arg(&mut self, arg: &Spanned<String>) -> Option<Arg> {
        let text = arg.get_ref();
        let Some((name, ty)) = text.split_once(':') else {
            self.error(arg.span(), format!("an argument is written `name: Type`, not `{text}`"));
            return None;
        };
        let Some(ident) = identifier(name.trim()) else {
            self.error(
                arg.span(),
                format!("argument name `{}` is not a Rust identifier", name.trim()),
            );
            return None;
        };
        let ty = self.ty(arg, ty.trim(), "argument")?;
        Some(Arg { ident, ty })
    }

    fn ty(&mut self, at: &Spanned<String>, text: &str, position: &str) -> Option<syn::Type> {
        let ty = match syn::parse_str::<syn::Type>(text) {
            Ok(ty) => ty,
            Err(err) => {
                self.error(at.span(), format!("`{text}` is not a Rust type ({err})"));
                return None;
            }
        };
        if let Some(why) = malla_codegen::unsendable_type(&ty, position) {
            self.error(at.span(), why);
            return None;
        }
        Some(ty)
    }
}

/// An identifier, raw if it is a keyword (`type` becomes `r#type`).
fn identifier(name: &str) -> Option<syn::Ident> {
    if let Ok(ident) = syn::parse_str::<syn::Ident>(name) {
        return Some(ident);
    }
    let is_word = !name.is_empty()
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    (is_word && !matches!(name, "self" | "Self" | "super" | "crate" | "_"))
        .then(|| syn::Ident::new_raw(name, Span::call_site()))
}
