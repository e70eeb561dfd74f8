//! The struct being derived, as a model: names resolved, attributes parsed.

use proc_macro2::Span;
use syn::{
    Data, DeriveInput, Fields, Ident, Type, Visibility, ext::IdentExt as _, spanned::Spanned as _,
};

use crate::{
    attr::{self, Spanned},
    ctxt::Ctxt,
};

pub(crate) struct Container<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub table: Spanned<String>,
    /// Whether `table` was written by the user (errors then point at it).
    pub table_given: bool,
    pub fields: Vec<Field<'a>>,
    pub generics: &'a syn::Generics,
}

pub(crate) struct Field<'a> {
    pub ident: &'a Ident,
    /// The field name without `r#`, used for the column and method names.
    pub name: String,
    pub ty: &'a Type,
    pub column: Spanned<String>,
    pub renamed: bool,
    pub json: Option<Span>,
    /// `#[session(index)]`: an index on the column, and queries by it.
    pub index: Option<Span>,
}

/// `None` when the input is not a struct with named fields: nothing else
/// can be checked then.
pub(crate) fn container<'a>(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<Container<'a>> {
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => Some(&fields.named),
            Fields::Unnamed(_) => {
                cx.error_spanned_by(
                    &input.ident,
                    "#[derive(Session)] needs a struct with named fields (one column per field); \
                     this is a tuple struct: name its fields, e.g. `struct Visit { count: i64 }`",
                );
                None
            }
            Fields::Unit => {
                cx.error_spanned_by(
                    &input.ident,
                    "#[derive(Session)] needs a struct with named fields (one column per field); \
                     this is a unit struct: add fields, e.g. `struct Visit { count: i64 }`",
                );
                None
            }
        },
        Data::Enum(data) => {
            cx.error_spanned_by(
                data.enum_token,
                "#[derive(Session)] works on structs with named fields, not on enums: \
                 wrap the enum in a struct field marked `#[session(json)]`",
            );
            None
        }
        Data::Union(data) => {
            cx.error_spanned_by(
                data.union_token,
                "#[derive(Session)] works on structs with named fields, not on unions",
            );
            None
        }
    };
    let attrs = attr::container(cx, &input.attrs);
    let fields = fields?;
    let table_given = attrs.table.is_some();
    let table = attrs.table.unwrap_or_else(|| Spanned {
        value: default_table(&input.ident.unraw().to_string()),
        span: input.ident.span(),
    });
    let fields = fields
        .iter()
        .map(|field| {
            let ident = field.ident.as_ref().expect("named fields have names");
            let attrs = attr::field(cx, &field.attrs);
            let name = ident.unraw().to_string();
            let renamed = attrs.rename.is_some();
            let column = attrs.rename.unwrap_or_else(|| Spanned {
                value: name.clone(),
                span: ident.span(),
            });
            Field {
                ident,
                name,
                ty: &field.ty,
                column,
                renamed,
                json: attrs.json,
                index: attrs.index,
            }
        })
        .collect();
    Some(Container {
        ident: &input.ident,
        vis: &input.vis,
        table,
        table_given,
        fields,
        generics: &input.generics,
    })
}

/// `Visit` → `visit_sessions`, `CartSession` → `cart_sessions`.
pub(crate) fn default_table(struct_name: &str) -> String {
    let mut snake = String::new();
    for (index, ch) in struct_name.chars().enumerate() {
        if ch.is_uppercase() {
            if index > 0 {
                snake.push('_');
            }
            snake.extend(ch.to_lowercase());
        } else {
            snake.push(ch);
        }
    }
    if snake.ends_with("_session") || snake == "session" {
        snake.push('s');
    } else {
        snake.push_str("_sessions");
    }
    snake
}

impl Field<'_> {
    pub(crate) fn ty_span(&self) -> Span {
        self.ty.span()
    }

    /// The type a query by this field takes: `T` for an `Option<T>` field
    /// (sessions without a value are not found by one), else the field's.
    pub(crate) fn key_type(&self) -> &Type {
        if let Type::Path(path) = self.ty
            && path.qself.is_none()
            && let Some(last) = path.path.segments.last()
            && last.ident == "Option"
            && let syn::PathArguments::AngleBracketed(args) = &last.arguments
            && args.args.len() == 1
            && let Some(syn::GenericArgument::Type(inner)) = args.args.first()
        {
            return inner;
        }
        self.ty
    }
}
