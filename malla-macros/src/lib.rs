//! The `#[malla::service]` attribute. Use it through the `malla` crate, which
//! documents it; this crate only hands the tokens to `malla-codegen`, where
//! the parse → validate → expand stages live (shared with `malla-build`).

use proc_macro::TokenStream;

/// Turns a trait into a malla service; see `malla::service` for the full
/// documentation.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    malla_codegen::service_attribute(args.into(), input.into()).into()
}
