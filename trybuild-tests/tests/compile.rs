//! Every mistake in a session struct is a compile error that names the fix;
//! every supported form compiles. Snapshots: see README.md in this folder.

#[test]
fn derive_session() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/pass/*.rs");
    cases.compile_fail("tests/fail/*.rs");
}
