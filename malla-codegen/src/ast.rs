//! The intermediate form of a service: what the generators need, with the
//! user's tokens kept for spans. Built from a trait by [`Service::from_syn`],
//! or field by field by `malla-build` from a manifest.

use proc_macro2::TokenStream;
use quote::ToTokens;

use crate::attr::{self, MethodAttrs, ServiceAttrs};
use crate::ctxt::Ctxt;
use crate::signature;

/// A service read from `#[malla::service] trait …` or from a manifest.
pub struct Service<'a> {
    /// The trait, when the service comes from source; `None` for stubs built
    /// from a manifest, which get a client but no trait and no server.
    pub original: Option<&'a syn::ItemTrait>,
    /// Visibility given to the generated items.
    pub vis: syn::Visibility,
    /// Trait name; `…Server` and `…Client` derive from it.
    pub ident: syn::Ident,
    /// Options from `#[malla::service(..)]`.
    pub attrs: ServiceAttrs,
    /// The service's methods, in declaration order.
    pub methods: Vec<Method<'a>>,
}

/// One `async fn` of a service.
pub struct Method<'a> {
    /// The trait item, when the service comes from source.
    pub original: Option<&'a syn::TraitItemFn>,
    /// Method name.
    pub ident: syn::Ident,
    /// Arguments after `&self`.
    pub args: Vec<Arg>,
    /// Return type; `()` when the method declares none.
    pub ret: syn::Type,
    /// Options from `#[malla(..)]`.
    pub attrs: MethodAttrs,
    /// `#[doc]` attributes, copied onto the client method.
    pub docs: Vec<syn::Attribute>,
}

/// A named, typed argument.
pub struct Arg {
    /// Argument name.
    pub ident: syn::Ident,
    /// Argument type.
    pub ty: syn::Type,
}

impl<'a> Service<'a> {
    /// Reads a service trait and the arguments of its `#[malla::service(..)]`,
    /// reporting every problem at once.
    pub fn from_syn(args: TokenStream, item: &'a syn::ItemTrait) -> syn::Result<Self> {
        let cx = Ctxt::new();
        let attrs = attr::service_attrs(&cx, args);
        attr::reject_misplaced(&cx, &item.attrs, "the trait");

        if let Some(unsafety) = &item.unsafety {
            cx.error_spanned_by(unsafety, "a malla service trait cannot be `unsafe`");
        }
        if let Some(auto) = &item.modifiers.auto_token {
            cx.error_spanned_by(auto, "a malla service trait cannot be an auto trait");
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            cx.error_spanned_by(
                &item.generics,
                "a malla service trait cannot be generic; every node must agree on its types",
            );
        }

        let mut methods = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                syn::TraitItem::Fn(method) => {
                    if let Some(method) = Method::from_syn(&cx, method) {
                        methods.push(method);
                    }
                }
                syn::TraitItem::Type(ty) => cx.error_spanned_by(
                    &ty.ident,
                    "associated types are not supported in a malla service; declare the type outside the trait",
                ),
                syn::TraitItem::Const(c) => cx.error_spanned_by(
                    &c.ident,
                    "associated consts are not supported in a malla service; declare the const outside the trait",
                ),
                syn::TraitItem::Macro(m) => cx.error_spanned_by(
                    &m.mac,
                    "macros are not supported inside a malla service trait; write the methods out",
                ),
                other => cx.error_spanned_by(other, "unsupported item in a malla service trait"),
            }
        }

        cx.check()?;
        Ok(Service {
            original: Some(item),
            vis: item.vis.clone(),
            ident: item.ident.clone(),
            attrs,
            methods,
        })
    }

    /// Name on the wire and in the cluster's service table.
    pub fn wire_name(&self) -> String {
        match &self.attrs.name {
            Some(lit) => lit.value(),
            None => self.ident.to_string(),
        }
    }
}

impl<'a> Method<'a> {
    fn from_syn(cx: &Ctxt, method: &'a syn::TraitItemFn) -> Option<Self> {
        let sig = &method.sig;
        let attrs = attr::method_attrs(cx, &method.attrs);
        let mut ok = true;
        let mut fail = |tokens: &dyn ToTokens, message: String| {
            cx.error_spanned_by(tokens.to_token_stream(), message);
            ok = false;
        };
        let name = sig.ident.to_string();

        if sig.asyncness.is_none() {
            fail(
                &sig.fn_token,
                format!("malla service methods must be `async`; write `async fn {name}(..)`"),
            );
        }
        if let Some(constness) = &sig.constness {
            fail(constness, "malla service methods cannot be `const`".into());
        }
        match &sig.safety {
            syn::Safety::Default => {}
            other => fail(other, "malla service methods cannot be `unsafe` or `safe`".into()),
        }
        if let Some(abi) = &sig.abi {
            fail(abi, "malla service methods cannot declare an ABI".into());
        }
        if let Some(variadic) = &sig.variadic {
            fail(variadic, "malla service methods cannot be variadic".into());
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            fail(
                &sig.generics,
                format!("generic methods cannot be called remotely; give `{name}` concrete argument and return types"),
            );
        }

        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(syn::FnArg::Receiver(receiver)) => check_receiver(&mut fail, receiver),
            _ => fail(
                &sig.ident,
                format!("malla service methods take `&self` first; write `async fn {name}(&self, ..)`"),
            ),
        }

        let mut args = Vec::new();
        for input in inputs {
            let syn::FnArg::Typed(pat_type) = input else {
                continue;
            };
            attr::reject_misplaced(cx, &pat_type.attrs, "arguments");
            let ident = match &*pat_type.pat {
                syn::Pat::Ident(pat) if pat.by_ref.is_none() && pat.mutability.is_none() && pat.subpat.is_none() => {
                    Some(pat.ident.clone())
                }
                other => {
                    fail(
                        other,
                        "argument patterns are not supported; name the argument, e.g. `point: Point`".into(),
                    );
                    None
                }
            };
            if let Some(message) = unsendable_type(&pat_type.ty, "argument") {
                fail(&pat_type.ty, message);
            }
            if let Some(ident) = ident {
                args.push(Arg {
                    ident,
                    ty: (*pat_type.ty).clone(),
                });
            }
        }

        let ret = match &sig.output {
            syn::ReturnType::Default => syn::parse_quote!(()),
            syn::ReturnType::Type(_, ty) => {
                if let Some(message) = unsendable_type(ty, "return") {
                    fail(ty, message);
                }
                (**ty).clone()
            }
        };

        ok.then(|| Method {
            original: Some(method),
            ident: sig.ident.clone(),
            args,
            ret,
            attrs,
            docs: method
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect(),
        })
    }

    /// Name on the wire (`r#type` is `type`).
    pub fn wire_name(&self) -> String {
        let name = self.ident.to_string();
        name.strip_prefix("r#").map(str::to_owned).unwrap_or(name)
    }

    /// Argument types in normal form, as the manifest lists them.
    pub fn arg_types(&self) -> Vec<String> {
        self.args.iter().map(|a| signature::normalize_type(&a.ty)).collect()
    }

    /// Return type in normal form.
    pub fn ret_type(&self) -> String {
        signature::normalize_type(&self.ret)
    }

    /// Method id on the wire.
    pub fn id(&self) -> u32 {
        signature::method_id(&self.wire_name())
    }

    /// Signature hash on the wire.
    pub fn signature(&self) -> u64 {
        let arg_types = self.arg_types();
        signature::signature_hash(&signature::canonical_signature(
            &self.wire_name(),
            arg_types.iter().map(String::as_str),
            &self.ret_type(),
        ))
    }
}

fn check_receiver(fail: &mut impl FnMut(&dyn ToTokens, String), receiver: &syn::Receiver) {
    match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, None) if receiver.mutability.is_none() => {}
        syn::ReceiverKind::Reference(_, _, Some(mutability)) => fail(
            mutability,
            "`&mut self` is not supported: calls run concurrently; take `&self` and use interior mutability".into(),
        ),
        syn::ReceiverKind::Value => fail(
            &receiver.self_token,
            "`self` by value is not supported: a service outlives each call; take `&self`".into(),
        ),
        syn::ReceiverKind::Typed(_, ty) => fail(ty, "typed `self` receivers are not supported; take `&self`".into()),
        _ => fail(&receiver.self_token, "unsupported receiver; take `&self`".into()),
    }
}

/// Why a type cannot cross the network, if it cannot: borrowed data, `impl
/// Trait`, trait objects, `Self`, inferred types.
pub fn unsendable_type(ty: &syn::Type, position: &str) -> Option<String> {
    match ty {
        syn::Type::Reference(reference) => {
            let owned = match &*reference.elem {
                syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => "String".to_string(),
                syn::Type::Slice(slice) => format!("Vec<{}>", signature::normalize_type(&slice.elem)),
                syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("Path") => "PathBuf".to_string(),
                elem => signature::normalize_type(elem),
            };
            Some(format!(
                "reference {position} types cannot be sent to another node; take `{owned}` instead of `{}`",
                signature::normalize_type(ty)
            ))
        }
        syn::Type::ImplTrait(_) => Some(format!(
            "`impl Trait` {position} types are not supported; use a concrete type"
        )),
        syn::Type::TraitObject(_) => Some(format!(
            "trait object {position} types cannot be sent to another node; use a concrete type"
        )),
        syn::Type::Infer(_) => Some(format!("the {position} type must be written out, not `_`")),
        syn::Type::Ptr(_) | syn::Type::FnPtr(_) => Some(format!(
            "pointer {position} types cannot be sent to another node; use an owned value"
        )),
        syn::Type::Macro(_) => Some(format!("macro {position} types are not supported; write the type out")),
        syn::Type::Paren(inner) => unsendable_type(&inner.elem, position),
        syn::Type::Group(inner) => unsendable_type(&inner.elem, position),
        syn::Type::Array(array) => unsendable_type(&array.elem, position),
        syn::Type::Slice(slice) => unsendable_type(&slice.elem, position),
        syn::Type::Tuple(tuple) => tuple.elems.iter().find_map(|t| unsendable_type(t, position)),
        syn::Type::Path(path) => {
            if let Some(why) = path.qself.as_ref().and_then(|q| unsendable_type(&q.ty, position)) {
                return Some(why);
            }
            if path.path.segments.first().is_some_and(|s| s.ident == "Self") {
                return Some(format!(
                    "`Self` cannot appear in a {position} type: each node has its own implementation; name a concrete type"
                ));
            }
            path.path.segments.iter().find_map(|segment| match &segment.arguments {
                syn::PathArguments::AngleBracketed(generic) => generic.args.iter().find_map(|arg| match arg {
                    syn::GenericArgument::Type(t) => unsendable_type(t, position),
                    syn::GenericArgument::Lifetime(l) if l.ident != "static" => Some(format!(
                        "borrowed {position} types cannot be sent to another node; use owned data instead of `'{}`",
                        l.ident
                    )),
                    _ => None,
                }),
                syn::PathArguments::Parenthesized(_) => {
                    Some(format!("closure {position} types cannot be sent to another node"))
                }
                _ => None,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn parse(args: TokenStream, item: TokenStream) -> syn::Result<(syn::ItemTrait, Vec<String>)> {
        let item: syn::ItemTrait = syn::parse2(item).unwrap();
        let names = Service::from_syn(args, &item)?
            .methods
            .iter()
            .map(|m| format!("{}({})->{}", m.wire_name(), m.arg_types().join(","), m.ret_type()))
            .collect();
        Ok((item, names))
    }

    #[test]
    fn reads_methods_options_and_types() {
        let item: syn::ItemTrait = syn::parse2(quote! {
            pub trait Calculator {
                /// Adds.
                async fn add(&self, a: i64, b: i64) -> i64;
                #[malla(idempotent, timeout_ms = 250)]
                async fn get(&self, key: String) -> Option<Vec<u8>>;
                async fn r#type(&self);
            }
        })
        .unwrap();
        let svc = Service::from_syn(quote!(global, vsn = "1.2.0", name = "calc"), &item).unwrap();
        assert!(svc.attrs.global);
        assert_eq!(svc.attrs.vsn, "1.2.0");
        assert_eq!(svc.wire_name(), "calc");
        let [add, get, ty] = &svc.methods[..] else {
            panic!("three methods")
        };
        assert_eq!(add.arg_types(), ["i64", "i64"]);
        assert_eq!(add.docs.len(), 1);
        assert!(!add.attrs.idempotent);
        assert!(get.attrs.idempotent);
        assert_eq!(get.attrs.timeout_ms, Some(250));
        assert_eq!(get.ret_type(), "Option<Vec<u8>>");
        assert_eq!(ty.wire_name(), "type");
        assert_eq!(ty.ret_type(), "()");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = parse(
            quote!(globl, vsn = 1),
            quote! {
                trait Bad {
                    fn sync(&self);
                    async fn by_value(self);
                    async fn borrowed(&self, s: &str);
                    type Assoc;
                }
            },
        )
        .unwrap_err();
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 6, "{messages:#?}");
        assert!(messages[0].starts_with("unknown malla option `globl`"));
        assert!(messages.iter().any(|m| m.contains("must be `async`")));
        assert!(messages.iter().any(|m| m.contains("take `String` instead of `&str`")));
        assert!(messages.iter().any(|m| m.contains("associated types")));
    }

    #[test]
    fn names_owned_alternatives_for_borrowed_types() {
        let why = |src: &str| unsendable_type(&syn::parse_str(src).unwrap(), "argument");
        assert!(why("&[u8]").unwrap().contains("`Vec<u8>`"));
        assert!(why("&Path").unwrap().contains("`PathBuf`"));
        assert!(why("Option<&'a str>").is_some());
        assert!(why("Cow<'static, str>").is_none());
        assert!(why("Vec<Box<dyn Fn()>>").is_some());
        assert!(why("HashMap<String, (u8, [i32; 4])>").is_none());
    }
}
