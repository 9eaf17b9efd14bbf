//! Manifests from sources: every `#[malla::service]` trait of the given
//! files, read with `syn` through the macro's own parser, written as a
//! manifest a client crate can precompile.

use std::path::Path;

use malla_codegen::Service;

use crate::error::ManifestError;
use crate::write::{MethodEntry, ServiceEntry, write_manifest};

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
    let mut traits = Vec::new();
    collect(&parsed.items, &mut traits);
    let mut services = Vec::new();
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
        services.push(entry(&service));
    }
    let header = format!(
        "Exported by malla-build from {}.\n\
         Types the methods use must exist in the crate that precompiles this\n\
         manifest, with the same serde shape: import them with `use` below.",
        file.display()
    );
    Ok(write_manifest(&header, &external_uses(&parsed.items), &services))
}

fn entry(service: &Service) -> ServiceEntry {
    ServiceEntry {
        name: service.wire_name(),
        rust_name: (service.ident != service.wire_name()).then(|| service.ident.to_string()),
        vsn: service.attrs.vsn.clone(),
        global: service.attrs.global,
        methods: service
            .methods
            .iter()
            .map(|method| {
                let doc: Vec<String> = method.docs.iter().filter_map(doc_line).collect();
                MethodEntry {
                    name: method.wire_name(),
                    args: method
                        .args
                        .iter()
                        .zip(method.arg_types())
                        .map(|(arg, ty)| (arg.ident.to_string().trim_start_matches("r#").to_owned(), ty))
                        .collect(),
                    returns: method.ret_type(),
                    idempotent: method.attrs.idempotent,
                    timeout_ms: method.attrs.timeout_ms,
                    doc: (!doc.is_empty()).then(|| doc.join("\n")),
                }
            })
            .collect(),
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
