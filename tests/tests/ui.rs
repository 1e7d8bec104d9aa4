//! Compile-time behaviour of `#[task]` and `#[workflow]`: what compiles, and the errors of what
//! does not (reviewed `.stderr` snapshots; regenerate with `TRYBUILD=overwrite`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/*/pass/*.rs");
    t.compile_fail("ui/*/fail/*.rs");
}
