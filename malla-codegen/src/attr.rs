//! Reads `#[malla::service(..)]` arguments and `#[malla(..)]` method
//! attributes. Nothing else: rules that need the whole trait live in
//! `valid.rs`.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;

use crate::ctxt::Ctxt;

/// Options given to `#[malla::service(..)]`.
pub struct ServiceAttrs {
    /// Register the service cluster-wide (`global`).
    pub global: bool,
    /// Version published with every instance (`vsn = "1.2.0"`); empty if unset.
    pub vsn: String,
    /// Wire name (`name = "calc"`); the trait name if unset.
    pub name: Option<syn::LitStr>,
    /// Path of the `malla` crate for generated code (`crate = "::my_malla"`).
    pub krate: syn::Path,
    /// Served as a singleton (`singleton`, `singleton = "strict"`).
    pub singleton: Option<SingletonAttr>,
}

/// The singleton mode a service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingletonAttr {
    Gossip,
    Strict,
}

/// Options given to `#[malla(..)]` on a method.
#[derive(Default)]
pub struct MethodAttrs {
    /// Safe to re-send after the node died mid-call (`idempotent`).
    pub idempotent: bool,
    /// Default deadline for the method (`timeout_ms = 500`).
    pub timeout_ms: Option<u64>,
}

const SERVICE_OPTIONS: &str = "`global`, `singleton`, `vsn`, `name`, `crate`";
const METHOD_OPTIONS: &str = "`idempotent`, `timeout_ms`";

/// One option's value, recording a duplicate as an error on the second use
/// (serde_derive's `Attr`).
struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: &'static str,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    fn none(cx: &'c Ctxt, name: &'static str) -> Self {
        Attr { cx, name, value: None }
    }

    fn set(&mut self, meta: &ParseNestedMeta, value: T) {
        if self.value.is_some() {
            self.cx
                .syn_error(meta.error(format_args!("duplicate malla option `{}`", self.name)));
        } else {
            self.value = Some(value);
        }
    }
}

/// Parses the arguments of `#[malla::service(..)]`.
pub(crate) fn service_attrs(cx: &Ctxt, args: TokenStream) -> ServiceAttrs {
    let mut global = Attr::none(cx, "global");
    let mut vsn = Attr::none(cx, "vsn");
    let mut name = Attr::none(cx, "name");
    let mut krate = Attr::none(cx, "crate");
    let mut singleton = Attr::none(cx, "singleton");

    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("global") {
            // #[malla::service(global)]
            no_value(cx, &meta, "global")?;
            global.set(&meta, ());
        } else if meta.path.is_ident("singleton") {
            // #[malla::service(global, singleton)] or singleton = "strict"
            if meta.input.peek(syn::Token![=]) {
                let lit: syn::LitStr = meta.value()?.parse()?;
                match lit.value().as_str() {
                    "gossip" => singleton.set(&meta, (SingletonAttr::Gossip, meta.path.clone())),
                    "strict" => singleton.set(&meta, (SingletonAttr::Strict, meta.path.clone())),
                    _ => cx.error_spanned_by(
                        &lit,
                        "a singleton's mode is `\"gossip\"` (the default) or `\"strict\"` (a lease from the consensus group)",
                    ),
                }
            } else {
                no_value(cx, &meta, "singleton")?;
                singleton.set(&meta, (SingletonAttr::Gossip, meta.path.clone()));
            }
        } else if meta.path.is_ident("vsn") {
            // #[malla::service(vsn = "1.2.0")]
            if let Some(lit) = string_value(cx, &meta, "vsn", "vsn = \"1.2.0\"")? {
                vsn.set(&meta, lit.value());
            }
        } else if meta.path.is_ident("name") {
            // #[malla::service(name = "calc")]
            if let Some(lit) = string_value(cx, &meta, "name", "name = \"calc\"")? {
                if let Err(why) = check_wire_name(&lit.value()) {
                    cx.error_spanned_by(&lit, why);
                }
                name.set(&meta, lit);
            }
        } else if meta.path.is_ident("crate") {
            // #[malla::service(crate = "::my_malla")]
            if let Some(lit) = string_value(cx, &meta, "crate", "crate = \"::malla\"")? {
                match lit.parse::<syn::Path>() {
                    Ok(path) => krate.set(&meta, path),
                    Err(_) => cx.error_spanned_by(&lit, "`crate` expects a path, e.g. `crate = \"::malla\"`"),
                }
            }
        } else if let Some(option) = method_option(&meta.path) {
            cx.syn_error(meta.error(format_args!(
                "`{option}` is a method option; put `#[malla({option})]` on the method"
            )));
            skip_value(&meta)?;
        } else {
            cx.syn_error(meta.error(format_args!(
                "unknown malla option `{}`; expected one of {SERVICE_OPTIONS}",
                path_text(&meta.path)
            )));
            skip_value(&meta)?;
        }
        Ok(())
    });
    if let Err(err) = parser.parse2(args) {
        cx.syn_error(err);
    }

    let global_set = global.value.is_some();
    if let (false, Some((_, path))) = (global_set, &singleton.value) {
        cx.error_spanned_by(
            path,
            "a singleton is one instance cluster-wide: it needs `global`, as in `#[malla::service(global, singleton)]`",
        );
    }
    ServiceAttrs {
        singleton: singleton.value.map(|(mode, _)| mode),
        global: global.value.is_some(),
        vsn: vsn.value.unwrap_or_default(),
        name: name.value,
        krate: krate.value.unwrap_or_else(|| syn::parse_quote!(::malla)),
    }
}

/// Parses every `#[malla(..)]` among a method's attributes.
pub(crate) fn method_attrs(cx: &Ctxt, attrs: &[syn::Attribute]) -> MethodAttrs {
    let mut idempotent = Attr::none(cx, "idempotent");
    let mut timeout_ms = Attr::none(cx, "timeout_ms");

    for attr in attrs.iter().filter(|a| is_malla_attr(a)) {
        if !matches!(attr.meta, syn::Meta::List(_)) {
            cx.error_spanned_by(
                attr,
                "expected `#[malla(..)]` with options, e.g. `#[malla(idempotent)]`",
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                // #[malla(idempotent)]
                no_value(cx, &meta, "idempotent")?;
                idempotent.set(&meta, ());
            } else if meta.path.is_ident("timeout_ms") {
                // #[malla(timeout_ms = 500)]
                let lit: syn::Lit = meta.value()?.parse()?;
                match &lit {
                    syn::Lit::Int(int) => match int.base10_parse::<u64>() {
                        Ok(0) | Err(_) => cx.error_spanned_by(
                            &lit,
                            "`timeout_ms` expects a positive number of milliseconds, e.g. `timeout_ms = 500`",
                        ),
                        Ok(ms) => timeout_ms.set(&meta, ms),
                    },
                    _ => cx.error_spanned_by(
                        &lit,
                        "`timeout_ms` expects a number of milliseconds, e.g. `timeout_ms = 500`",
                    ),
                }
            } else if let Some(option) = service_option(&meta.path) {
                cx.syn_error(meta.error(format_args!(
                    "`{option}` is a service option; put it in `#[malla::service({option})]`"
                )));
                skip_value(&meta)?;
            } else {
                cx.syn_error(meta.error(format_args!(
                    "unknown malla method option `{}`; expected one of {METHOD_OPTIONS}",
                    path_text(&meta.path)
                )));
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            cx.syn_error(err);
        }
    }

    MethodAttrs {
        idempotent: idempotent.value.is_some(),
        timeout_ms: timeout_ms.value,
    }
}

/// Reports `#[malla(..)]` where no option can go (the trait itself, an
/// argument, an associated item).
pub(crate) fn reject_misplaced(cx: &Ctxt, attrs: &[syn::Attribute], place: &str) {
    for attr in attrs.iter().filter(|a| is_malla_attr(a)) {
        cx.error_spanned_by(
            attr,
            format_args!(
                "`#[malla(..)]` is not allowed on {place}; method options go on methods, service options in `#[malla::service(..)]`"
            ),
        );
    }
}

/// `#[malla(..)]`, the attribute this crate consumes.
pub fn is_malla_attr(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("malla")
}

/// What makes a wire name acceptable; shared with manifests.
pub fn check_wire_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a service name cannot be empty".into());
    }
    if name.len() > 255 {
        return Err("a service name is at most 255 bytes".into());
    }
    if name.starts_with('$') {
        return Err("service names starting with `$` are reserved for malla".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("a service name cannot contain {c:?}"));
    }
    Ok(())
}

fn method_option(path: &syn::Path) -> Option<&'static str> {
    ["idempotent", "timeout_ms"].into_iter().find(|o| path.is_ident(o))
}

fn service_option(path: &syn::Path) -> Option<&'static str> {
    ["global", "singleton", "vsn", "name", "crate"]
        .into_iter()
        .find(|o| path.is_ident(o))
}

fn path_text(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// A flag such as `global` must not carry a value.
fn no_value(cx: &Ctxt, meta: &ParseNestedMeta, option: &str) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
        cx.syn_error(meta.error(format_args!("`{option}` takes no value; write `{option}`")));
        skip_value(meta)?;
    }
    Ok(())
}

/// `option = "…"`; a non-string value is recorded as an error and skipped.
fn string_value(cx: &Ctxt, meta: &ParseNestedMeta, option: &str, example: &str) -> syn::Result<Option<syn::LitStr>> {
    if !meta.input.peek(syn::Token![=]) {
        cx.syn_error(meta.error(format_args!("`{option}` expects a value, e.g. `{example}`")));
        skip_value(meta)?;
        return Ok(None);
    }
    let expr: syn::Expr = meta.value()?.parse()?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Ok(Some(lit)),
        other => {
            cx.error_spanned_by(other, format_args!("`{option}` expects a string, e.g. `{example}`"));
            Ok(None)
        }
    }
}

/// Consumes whatever follows an option we already reported, so the next
/// option is still read and reported in the same compile.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

/// Span used for generated identifiers that users never name.
pub(crate) fn private_span() -> Span {
    Span::mixed_site()
}
