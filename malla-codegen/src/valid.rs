//! Rules that look at the service as a whole: names that would collide with
//! generated items, method ids, argument counts.

use std::collections::HashMap;

use crate::ast::Service;
use crate::ctxt::Ctxt;

/// Inherent methods of the generated `…Client`; a service method with one of
/// these names could not be called through the client.
pub const RESERVED_CLIENT_METHODS: &[&str] = &["new", "with_options", "with_interceptor", "on_node", "named"];

/// serde implements `Serialize` for tuples of up to 16 elements, and the
/// arguments travel as one tuple.
pub const MAX_ARGS: usize = 16;

impl Service<'_> {
    /// Checks the rules that span several items, reporting all at once.
    pub fn validate(&self) -> syn::Result<()> {
        let cx = Ctxt::new();
        let client = format!("{}Client", self.ident);
        let mut seen_names: HashMap<String, &syn::Ident> = HashMap::new();
        let mut seen_ids: HashMap<u32, &syn::Ident> = HashMap::new();

        for method in &self.methods {
            let name = method.wire_name();
            if RESERVED_CLIENT_METHODS.contains(&name.as_str()) {
                cx.error_spanned_by(
                    &method.ident,
                    format_args!(
                        "method name `{name}` collides with the generated `{client}::{name}`; rename the method"
                    ),
                );
            }
            if let Some(first) = seen_names.insert(name.clone(), &method.ident) {
                cx.error_spanned_by(
                    &method.ident,
                    format_args!("duplicate method `{name}` (first declared as `{first}`)"),
                );
            } else if let Some(other) = seen_ids.insert(method.id(), &method.ident) {
                // Method ids are 32-bit hashes of the name; a clash is
                // astronomically rare but would make two methods one.
                cx.error_spanned_by(
                    &method.ident,
                    format_args!("method `{name}` has the same wire id as `{other}`; rename one of them"),
                );
            }
            if method.args.len() > MAX_ARGS {
                cx.error_spanned_by(
                    &method.args[MAX_ARGS].ident,
                    format_args!("a malla method takes at most {MAX_ARGS} arguments; group them in a struct"),
                );
            }
        }
        cx.check()
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use crate::ast::Service;

    fn validate(item: proc_macro2::TokenStream) -> Result<(), Vec<String>> {
        let item: syn::ItemTrait = syn::parse2(item).unwrap();
        let svc = Service::from_syn(quote!(), &item).unwrap();
        svc.validate()
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn rejects_names_of_generated_client_methods() {
        let errors = validate(quote! {
            trait Factory {
                async fn new(&self);
                async fn with_options(&self);
                async fn build(&self);
            }
        })
        .unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("`FactoryClient::new`"));
    }

    #[test]
    fn accepts_a_plain_service() {
        validate(quote! {
            trait Calculator {
                async fn add(&self, a: i64, b: i64) -> i64;
                async fn sub(&self, a: i64, b: i64) -> i64;
            }
        })
        .unwrap();
    }
}
