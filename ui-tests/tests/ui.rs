//! Every misuse of `#[malla::service]` is a compile error with a span on the
//! offending token (`fail/`), and the valid forms compile, including under
//! `#![no_implicit_prelude]`, with shadowed std names and a renamed crate
//! (`pass/`). Regenerate `.stderr` with `TRYBUILD=overwrite` and review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("fail/**/*.rs");
    cases.pass("pass/**/*.rs");
}
