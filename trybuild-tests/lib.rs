//! Compile-fail and compile-pass cases of `#[derive(Session)]`: see `tests/`.
