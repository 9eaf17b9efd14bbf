// Generated code names only `::malla::__private::…` and `::core::…`.
#![no_implicit_prelude]

#[::malla::service(global, vsn = "1")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn name(&self, id: ::std::string::String) -> ::std::option::Option<::std::string::String>;
}

fn main() {}
