//! What to emit when the service is invalid: the errors, plus the trait and
//! empty `…Server`/`…Client` types, so one mistake does not turn every use
//! of the service into a second error and IDEs keep completing
//! (thiserror's `fallback.rs`).

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::attr;

/// The trait as written (minus `#[malla(..)]`), and placeholder types.
pub(crate) fn expand(item: &syn::ItemTrait, errors: syn::Error) -> TokenStream {
    let mut stripped = item.clone();
    stripped.attrs.retain(|a| !attr::is_malla_attr(a));
    for trait_item in &mut stripped.items {
        if let syn::TraitItem::Fn(method) = trait_item {
            method.attrs.retain(|a| !attr::is_malla_attr(a));
            for input in &mut method.sig.inputs {
                if let syn::FnArg::Typed(arg) = input {
                    arg.attrs.retain(|a| !attr::is_malla_attr(a));
                }
            }
        }
    }

    let vis = &item.vis;
    let server = format_ident!("{}Server", item.ident, span = item.ident.span());
    let client = format_ident!("{}Client", item.ident, span = item.ident.span());
    let errors = errors.into_compile_error();
    quote! {
        #errors
        #stripped

        #vis struct #server<T>(::core::marker::PhantomData<T>);

        impl<T> #server<T> {
            pub fn new(_service: T) -> Self {
                ::core::unimplemented!()
            }
        }

        #vis struct #client;
    }
}
