//! `#[derive(Session)]` for `axum-typed-session`: use it through the runtime
//! crate (`use axum_typed_session::Session;`), which documents it.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Turns a struct with named fields into a typed session: see the
/// `axum_typed_session` crate documentation.
#[proc_macro_derive(Session, attributes(session))]
pub fn derive_session(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
