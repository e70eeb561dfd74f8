//! The `#[session(...)]` attributes, on the struct and on fields.

use proc_macro2::Span;
use syn::{Attribute, meta::ParseNestedMeta, spanned::Spanned as _};

use crate::ctxt::Ctxt;

/// A value given in an attribute, with where it was written.
pub(crate) struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

#[derive(Default)]
pub(crate) struct ContainerAttrs {
    pub table: Option<Spanned<String>>,
}

#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub rename: Option<Spanned<String>>,
    pub json: Option<Span>,
    pub index: Option<Span>,
}

const CONTAINER_KEYS: &str = "`table = \"...\"`";
const FIELD_KEYS: &str = "`rename = \"...\"`, `json` and `index`";

/// Walks every `#[session(...)]`, reporting malformed ones and carrying on.
fn each_session_attr(
    cx: &mut Ctxt,
    attrs: &[Attribute],
    expected: &str,
    mut on_key: impl FnMut(&mut Ctxt, &str, &ParseNestedMeta<'_>) -> syn::Result<bool>,
) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("session")) {
        if let syn::Meta::Path(path) = &attr.meta {
            cx.error_spanned_by(
                path,
                format!("`#[session]` needs arguments: the keys here are {expected}"),
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if !on_key(cx, &key, &meta)? {
                let shown = meta.path.to_token_stream_string();
                return Err(meta.error(format!(
                    "unknown session attribute `{shown}`: the keys here are {expected}"
                )));
            }
            Ok(())
        });
        if let Err(error) = result {
            cx.syn_error(error);
        }
    }
}

trait PathString {
    fn to_token_stream_string(&self) -> String;
}

impl PathString for syn::Path {
    fn to_token_stream_string(&self) -> String {
        quote::ToTokens::to_token_stream(self)
            .to_string()
            .replace(' ', "")
    }
}

/// Parses `key = "string"`, with a message naming the key when the value is not a string.
fn string_value(meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<Spanned<String>> {
    let expr: syn::Expr = meta.value()?.parse()?;
    match &expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Ok(Spanned {
            value: lit.value(),
            span: lit.span(),
        }),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{key}` takes a string: `{key} = \"...\"`"),
        )),
    }
}

fn set_once<T>(
    cx: &mut Ctxt,
    slot: &mut Option<T>,
    value: T,
    meta: &ParseNestedMeta<'_>,
    key: &str,
) {
    if slot.is_some() {
        cx.syn_error(meta.error(format!("`{key}` specified more than once")));
    } else {
        *slot = Some(value);
    }
}

pub(crate) fn container(cx: &mut Ctxt, attrs: &[Attribute]) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    each_session_attr(cx, attrs, CONTAINER_KEYS, |cx, key, meta| {
        match key {
            "table" => {
                let value = string_value(meta, "table")?;
                set_once(cx, &mut out.table, value, meta, "table");
            }
            "rename" | "json" | "index" => {
                return Err(meta.error(format!(
                    "`{key}` belongs on a field, not on the struct: the struct takes {CONTAINER_KEYS}"
                )));
            }
            _ => return Ok(false),
        }
        Ok(true)
    });
    out
}

pub(crate) fn field(cx: &mut Ctxt, attrs: &[Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    each_session_attr(cx, attrs, FIELD_KEYS, |cx, key, meta| {
        match key {
            "rename" => {
                let value = string_value(meta, "rename")?;
                set_once(cx, &mut out.rename, value, meta, "rename");
            }
            "json" => {
                if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                    return Err(meta.error("`json` takes no value: write `#[session(json)]`"));
                }
                let span = meta.path.span();
                set_once(cx, &mut out.json, span, meta, "json");
            }
            "index" => {
                if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                    return Err(meta.error("`index` takes no value: write `#[session(index)]`"));
                }
                let span = meta.path.span();
                set_once(cx, &mut out.index, span, meta, "index");
            }
            "table" => {
                return Err(meta.error(format!(
                    "`table` belongs on the struct, not on a field: a field takes {FIELD_KEYS}"
                )));
            }
            _ => return Ok(false),
        }
        Ok(true)
    });
    out
}
