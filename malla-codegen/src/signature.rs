//! Stable identities for methods on the wire: a method id derived from the
//! method's name, and a signature hash derived from its argument and return
//! types written in a whitespace-insensitive normal form.
//!
//! Both the `#[malla::service]` macro and `malla-build` (stubs generated from a
//! manifest) go through these functions, which is what makes a precompiled stub
//! wire-compatible with the real service. Changing anything here is a wire
//! protocol change.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use sha2::{Digest, Sha256};

/// Writes a type the way the manifest and the signature hash see it: tokens
/// separated by a single space only where two words would otherwise merge
/// (`std::collections::HashMap<String,Vec<u8>>`, `<T as Trait>::X`).
pub fn normalize_type(ty: &syn::Type) -> String {
    normalize_tokens(ty)
}

/// The same normal form for any tokens (`use` trees, paths).
pub fn normalize_tokens(tokens: &impl ToTokens) -> String {
    let mut out = String::new();
    write_tokens(tokens.to_token_stream(), &mut out);
    out
}

fn write_tokens(tokens: TokenStream, out: &mut String) {
    for tt in tokens {
        match tt {
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::Brace => ("{", "}"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_tokens(group.stream(), out);
                out.push_str(close);
            }
            TokenTree::Ident(ident) => push_word(out, &ident.to_string()),
            TokenTree::Literal(lit) => push_word(out, &lit.to_string()),
            TokenTree::Punct(punct) => out.push(punct.as_char()),
        }
    }
}

fn push_word(out: &mut String, word: &str) {
    // `'static` is a punct followed by a word: no space after the quote.
    if out.chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
        out.push(' ');
    }
    out.push_str(word);
}

/// The text that the signature hash covers: `add(i64,i64)->i64`. Argument
/// names are left out: renaming an argument does not change the wire format.
pub fn canonical_signature<'a>(method: &str, arg_types: impl IntoIterator<Item = &'a str>, ret: &str) -> String {
    let args: Vec<&str> = arg_types.into_iter().collect();
    format!("{method}({})->{ret}", args.join(","))
}

/// 64-bit hash of [`canonical_signature`]. Never 0: the wire reserves 0 for
/// "unchecked" dynamic calls.
pub fn signature_hash(canonical: &str) -> u64 {
    let digest = Sha256::digest(canonical.as_bytes());
    let hash = u64::from_be_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"));
    hash.max(1)
}

/// 32-bit method id derived from the method name, so ids survive reordering
/// and adding methods.
pub fn method_id(method: &str) -> u32 {
    let digest = Sha256::digest(format!("malla-method:{method}").as_bytes());
    u32::from_be_bytes(digest[..4].try_into().expect("sha256 is 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(src: &str) -> String {
        normalize_type(&syn::parse_str(src).unwrap())
    }

    #[test]
    fn normal_form_ignores_whitespace() {
        assert_eq!(norm("Vec < String >"), "Vec<String>");
        assert_eq!(
            norm("std :: collections::HashMap<String,\n Vec<u8>>"),
            "std::collections::HashMap<String,Vec<u8>>"
        );
        assert_eq!(norm("( i64 , String )"), "(i64,String)");
        assert_eq!(norm("[u8; 32]"), "[u8;32]");
        assert_eq!(norm("Cow<'static, str>"), "Cow<'static,str>");
        assert_eq!(norm("<T as Trait>::Out"), "<T as Trait>::Out");
    }

    #[test]
    fn signature_hash_follows_types_not_names_or_spacing() {
        let a = signature_hash(&canonical_signature("add", ["i64", "i64"], "i64"));
        let same = signature_hash(&canonical_signature("add", [norm("i64 ").as_str(), "i64"], "i64"));
        let other = signature_hash(&canonical_signature("add", ["i32", "i64"], "i64"));
        assert_eq!(a, same);
        assert_ne!(a, other);
        assert_ne!(a, 0);
    }

    /// Pins the wire values: the runtime and older stubs rely on them.
    #[test]
    fn wire_values_are_stable() {
        // sha256("malla-method:add")[..4] and sha256("add(i64,i64)->i64")[..8].
        assert_eq!(method_id("add"), 0xda6c_24dd);
        let add = canonical_signature("add", ["i64", "i64"], "i64");
        assert_eq!(add, "add(i64,i64)->i64");
        assert_eq!(signature_hash(&add), 0x1453_40b9_2e9d_07ff);
    }
}
