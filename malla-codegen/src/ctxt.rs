//! Collects every error found while reading a service, so one compile reports
//! all of them (after serde_derive's `internals/ctxt.rs`).

use std::cell::RefCell;
use std::fmt::Display;

use quote::ToTokens;

/// Error accumulator that must be [`Ctxt::check`]ed before it is dropped.
#[derive(Default)]
pub(crate) struct Ctxt {
    // `None` once checked; dropping an unchecked context with errors is a bug.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }

    /// Records an error spanned on `tokens`.
    pub(crate) fn error_spanned_by<T: ToTokens, M: Display>(&self, tokens: T, message: M) {
        self.syn_error(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    /// Records an error built elsewhere (for example by `ParseNestedMeta::error`).
    pub(crate) fn syn_error(&self, err: syn::Error) {
        self.errors
            .borrow_mut()
            .as_mut()
            .expect("Ctxt used after check")
            .push(err);
    }

    /// Combines every recorded error into one, or `Ok` if there were none.
    pub(crate) fn check(self) -> syn::Result<()> {
        let mut errors = self.errors.take().expect("Ctxt checked twice").into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for rest in errors {
            combined.combine(rest);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.errors.borrow().is_some() {
            panic!("malla-codegen: Ctxt dropped without being checked");
        }
    }
}
