//! Manifests from sources: every `#[malla::service]` trait of the given
//! files, read with `syn` through the macro's own parser, written as a
//! manifest a client crate can precompile.

use std::fmt::Write as _;
use std::path::Path;

use malla_codegen::Service;

use crate::error::ManifestError;

/// The manifest of the services declared in `source` (the text of `file`).
pub(crate) fn manifest(file: &Path, source: &str) -> Result<String, ManifestError> {
    let parsed = syn::parse_file(source).map_err(|err| {
        let start = err.span().start();
        ManifestError {
            file: file.to_owned(),
            line: start.line,
            column: start.column + 1,
            message: format!("cannot parse the file: {err}"),
        }
    })?;
    let mut out = String::new();
    let mut traits = Vec::new();
    collect(&parsed.items, &mut traits);
    let uses = external_uses(&parsed.items);
    writeln!(out, "# Exported by malla-build from {}.", file.display()).unwrap();
    writeln!(
        out,
        "# Types the methods use must exist in the crate that precompiles this"
    )
    .unwrap();
    writeln!(
        out,
        "# manifest, with the same serde shape: import them with `use` below."
    )
    .unwrap();
    if !uses.is_empty() {
        writeln!(
            out,
            "use = [{}]",
            uses.iter().map(|u| quoted(u)).collect::<Vec<_>>().join(", ")
        )
        .unwrap();
    }
    for (attr, item) in traits {
        let args = match &attr.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            _ => proc_macro2::TokenStream::new(),
        };
        let service = Service::from_syn(args, item).map_err(|err| {
            let start = err.span().start();
            ManifestError {
                file: file.to_owned(),
                line: start.line,
                column: start.column + 1,
                message: format!("invalid service `{}`: {err}", item.ident),
            }
        })?;
        write_service(&mut out, &service);
    }
    Ok(out)
}

fn write_service(out: &mut String, service: &Service) {
    writeln!(out, "\n[[service]]").unwrap();
    writeln!(out, "name = {}", quoted(&service.wire_name())).unwrap();
    if service.ident != service.wire_name() {
        writeln!(out, "rust_name = {}", quoted(&service.ident.to_string())).unwrap();
    }
    writeln!(out, "vsn = {}", quoted(&service.attrs.vsn)).unwrap();
    if !service.attrs.global {
        writeln!(out, "global = false").unwrap();
    }
    for method in &service.methods {
        writeln!(out, "\n  [[service.method]]").unwrap();
        writeln!(out, "  name = {}", quoted(&method.wire_name())).unwrap();
        let args: Vec<String> = method
            .args
            .iter()
            .zip(method.arg_types())
            .map(|(arg, ty)| quoted(&format!("{}: {ty}", arg.ident.to_string().trim_start_matches("r#"))))
            .collect();
        writeln!(out, "  args = [{}]", args.join(", ")).unwrap();
        writeln!(out, "  returns = {}", quoted(&method.ret_type())).unwrap();
        if method.attrs.idempotent {
            writeln!(out, "  idempotent = true").unwrap();
        }
        if let Some(ms) = method.attrs.timeout_ms {
            writeln!(out, "  timeout_ms = {ms}").unwrap();
        }
        let doc: Vec<String> = method.docs.iter().filter_map(doc_line).collect();
        if !doc.is_empty() {
            writeln!(out, "  doc = {}", quoted(&doc.join("\n"))).unwrap();
        }
    }
}

/// Traits carrying `#[malla::service(..)]` (or `#[service(..)]`), in inline
/// modules too.
fn collect<'a>(items: &'a [syn::Item], out: &mut Vec<(&'a syn::Attribute, &'a syn::ItemTrait)>) {
    for item in items {
        match item {
            syn::Item::Trait(item) => {
                if let Some(attr) = item.attrs.iter().find(|a| is_service_attr(a)) {
                    out.push((attr, item));
                }
            }
            syn::Item::Mod(module) => {
                if let Some((_, items)) = &module.content {
                    collect(items, out);
                }
            }
            _ => {}
        }
    }
}

fn is_service_attr(attr: &syn::Attribute) -> bool {
    let segments: Vec<String> = attr.path().segments.iter().map(|s| s.ident.to_string()).collect();
    matches!(
        segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
        ["malla", "service"] | ["service"]
    )
}

/// `use` paths of the file that make sense in another crate: not `crate::`,
/// `self::` or `super::`, and not malla itself.
fn external_uses(items: &[syn::Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Use(item) => Some(&item.tree),
            _ => None,
        })
        .map(malla_codegen::normalize_tokens)
        .filter(|path| {
            let first = path.split("::").next().unwrap_or_default();
            !matches!(first, "crate" | "self" | "super" | "malla" | "serde")
        })
        .collect()
}

fn doc_line(attr: &syn::Attribute) -> Option<String> {
    match &attr.meta {
        syn::Meta::NameValue(syn::MetaNameValue {
            value: syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s), ..
            }),
            ..
        }) => Some(s.value().trim().to_owned()),
        _ => None,
    }
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}
