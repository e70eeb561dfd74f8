//! `#[derive(Session)]` for `axum-typed-session`: use it through the runtime
//! crate (`use axum_typed_session::Session;`), which documents it.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod names;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Turns a struct with named fields into a typed session: see the
/// `axum_typed_session` crate documentation.
#[proc_macro_derive(Session, attributes(session))]
pub fn derive_session(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

/// The library's own column names, as an array expression (for the runtime
/// crate's `schema::LIBRARY_COLUMNS`, so the list exists once). Not public API.
#[doc(hidden)]
#[proc_macro]
pub fn __library_columns(_: TokenStream) -> TokenStream {
    let names = names::LIBRARY_COLUMNS;
    quote::quote!([#(#names),*]).into()
}

/// The method names of `Session<T>` that no accessor may take, as an array
/// expression (for the runtime crate's test that keeps the list in step).
/// Not public API.
#[doc(hidden)]
#[proc_macro]
pub fn __session_methods(_: TokenStream) -> TokenStream {
    let names = names::SESSION_METHODS;
    quote::quote!([#(#names),*]).into()
}
