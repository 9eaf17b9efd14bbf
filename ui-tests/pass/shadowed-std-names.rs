// User items named like std's must not leak into generated code.
#![allow(dead_code)]

struct Result;
struct Option;
struct Box;
struct Arc;
struct Send;
struct Future;
struct Vec;
struct String;
mod core {}
mod std {}
mod serde {}
mod postcard {}
mod inventory {}

#[::malla::service(global)]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn maybe(&self, a: ::core::option::Option<i64>) -> ::core::result::Result<i64, u8>;
}

fn main() {}
