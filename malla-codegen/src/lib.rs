//! Code generation shared by `#[malla::service]` and `malla-build`.
//!
//! **Not a public API**: use the `malla` crate. This is a separate library
//! because two front ends must emit byte-identical clients: the proc macro
//! (from a trait) and `malla-build` (from a manifest, for services whose crate
//! is not a dependency). A proc-macro crate cannot be linked as a library, so
//! the stages live here:
//!
//! - `attr` reads `#[malla::service(..)]` and `#[malla(..)]`;
//! - `ast` builds the [`Service`] IR from a trait, keeping the user's tokens
//!   for spans;
//! - `valid` checks rules that span several items;
//! - `expand` generates the code, one function per emitted item;
//! - `fallback` is what is emitted when the input is invalid;
//! - `signature` gives method ids and signature hashes their wire values.

#![deny(missing_docs)]

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod signature;
mod valid;

use proc_macro2::TokenStream;
use quote::ToTokens;

pub use ast::{Arg, Method, Service, unsendable_type};
pub use attr::{MethodAttrs, ServiceAttrs, check_wire_name, is_malla_attr};
pub use expand::expand;
pub use signature::{canonical_signature, method_id, normalize_tokens, normalize_type, signature_hash};
pub use valid::{MAX_ARGS, RESERVED_CLIENT_METHODS};

/// `#[malla::service(args)] input`, start to finish. Errors come back as
/// `compile_error!` tokens next to a fallback, never as a panic.
pub fn service_attribute(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = match syn::parse2::<syn::Item>(input.clone()) {
        Ok(syn::Item::Trait(item)) => item,
        Ok(other) => {
            let err = syn::Error::new_spanned(
                item_keyword(&other),
                "`#[malla::service]` goes on a trait, e.g. `pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }`",
            );
            return with_error(input, err);
        }
        Err(err) => return with_error(input, err),
    };
    try_expand(args, &item).unwrap_or_else(|err| fallback::expand(&item, err))
}

fn try_expand(args: TokenStream, item: &syn::ItemTrait) -> syn::Result<TokenStream> {
    let svc = Service::from_syn(args, item)?;
    svc.validate()?;
    Ok(expand(&svc))
}

/// The input untouched plus the error, so the item still exists for the rest
/// of the crate.
fn with_error(input: TokenStream, err: syn::Error) -> TokenStream {
    let mut out = err.into_compile_error();
    out.extend(input);
    out
}

/// The token that says what kind of item this is (`struct`, `fn`, …), to
/// span the "goes on a trait" error on it.
fn item_keyword(item: &syn::Item) -> TokenStream {
    match item {
        syn::Item::Struct(i) => i.struct_token.to_token_stream(),
        syn::Item::Enum(i) => i.enum_token.to_token_stream(),
        syn::Item::Fn(i) => i.sig.fn_token.to_token_stream(),
        syn::Item::Impl(i) => i.impl_token.to_token_stream(),
        syn::Item::Mod(i) => i.mod_token.to_token_stream(),
        syn::Item::Union(i) => i.union_token.to_token_stream(),
        syn::Item::Type(i) => i.type_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}
