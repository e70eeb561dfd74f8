//! Every check on a session struct, reported together.

use std::collections::HashMap;

use crate::{ast::Container, ctxt::Ctxt};

/// The library's own columns (kept in sync with the runtime's `LIBRARY_COLUMNS`).
const LIBRARY_COLUMNS: [&str; 5] = ["id", "expires_at", "version", "created_at", "remember"];

/// Methods of `Session<T>` itself: a getter with one of these names would be
/// shadowed by them.
const SESSION_METHODS: [&str; 13] = [
    "get",
    "update",
    "id",
    "expires_at",
    "created_at",
    "is_stored",
    "is_remembered",
    "is_storable",
    "destroy",
    "renew",
    "set_remember",
    "set_store",
    "remember",
];

/// The shortest identifier limit among the backends (PostgreSQL: 63 bytes;
/// MySQL allows 64).
const MAX_IDENTIFIER: usize = 63;

/// Bits in `DirtyFields`.
const MAX_FIELDS: usize = 64;

pub fn container(cx: &mut Ctxt, container: &Container<'_>) {
    generics(cx, container);
    table(cx, container);
    fields(cx, container);
}

fn generics(cx: &mut Ctxt, container: &Container<'_>) {
    for param in &container.generics.params {
        let (kind, fix) = match param {
            syn::GenericParam::Type(_) => (
                "generic type parameters",
                "use concrete field types (the table has one fixed column type per field)",
            ),
            syn::GenericParam::Lifetime(_) => (
                "lifetime parameters",
                "use owned field types such as `String` instead of `&str`",
            ),
            syn::GenericParam::Const(_) => ("const parameters", "use concrete field types"),
        };
        cx.error_spanned_by(param, format!("a session struct cannot have {kind}: {fix}"));
    }
    if let Some(clause) = &container.generics.where_clause {
        cx.error_spanned_by(clause, "a session struct cannot have a where clause");
    }
}

/// Why `name` cannot be a SQL identifier, if it cannot.
fn identifier_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_IDENTIFIER {
        return Some(format!(
            "is {} bytes long; PostgreSQL allows {MAX_IDENTIFIER} (MySQL 64)",
            name.len()
        ));
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('_');
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Some("is not a valid SQL identifier: use ASCII letters, digits and `_`, not starting with a digit".into());
    }
    None
}

fn table(cx: &mut Ctxt, container: &Container<'_>) {
    let table = &container.table;
    let fix = if container.table_given {
        "choose another `table = \"...\"`"
    } else {
        "set one with `#[session(table = \"...\")]`"
    };
    if let Some(problem) = identifier_problem(&table.value) {
        cx.syn_error(syn::Error::new(
            table.span,
            format!("table name `{}` {problem}; {fix}", table.value),
        ));
    } else if table.value.to_ascii_lowercase().starts_with("sqlite_") {
        cx.syn_error(syn::Error::new(
            table.span,
            format!(
                "table name `{}` starts with `sqlite_`, which SQLite reserves; {fix}",
                table.value
            ),
        ));
    }
}

fn fields(cx: &mut Ctxt, container: &Container<'_>) {
    if container.fields.is_empty() {
        cx.error_spanned_by(
            container.ident,
            "a session struct needs at least one field: a session with nothing to store has no table",
        );
    }
    if container.fields.len() > MAX_FIELDS {
        cx.error_spanned_by(
            container.ident,
            format!(
                "a session struct has at most {MAX_FIELDS} fields, this one has {}: group related fields in a struct stored with `#[session(json)]`",
                container.fields.len()
            ),
        );
    }

    let mut columns: HashMap<String, &str> = HashMap::new();
    let mut methods: HashMap<String, &str> = HashMap::new();
    for field in &container.fields {
        let column = &field.column;
        let how = if field.renamed {
            "renamed with `rename`"
        } else {
            "named after the field"
        };
        if let Some(problem) = identifier_problem(&column.value) {
            cx.syn_error(syn::Error::new(
                column.span,
                format!(
                    "column name `{}` ({how}) {problem}; use `#[session(rename = \"...\")]`",
                    column.value
                ),
            ));
        } else if LIBRARY_COLUMNS.contains(&column.value.to_ascii_lowercase().as_str()) {
            cx.syn_error(syn::Error::new(
                column.span,
                format!(
                    "column `{}` is reserved for the library's own columns ({}): rename the field or use `#[session(rename = \"...\")]`",
                    column.value,
                    LIBRARY_COLUMNS.join(", ")
                ),
            ));
        } else if let Some(previous) =
            columns.insert(column.value.to_ascii_lowercase(), &field.name)
        {
            cx.syn_error(syn::Error::new(
                column.span,
                format!(
                    "column `{}` is already used by field `{previous}` (column names are case-insensitive): give one of them another `#[session(rename = \"...\")]`",
                    column.value
                ),
            ));
        }

        // A reserved column already got its error; a second one about the
        // same name would only repeat it.
        let reserved_column = LIBRARY_COLUMNS.contains(&field.name.as_str());
        if SESSION_METHODS.contains(&field.name.as_str()) && !reserved_column {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "a field named `{name}` would be hidden by `Session::{name}()`: rename the field \
                     (e.g. `last_{name}`) and keep the column with `#[session(rename = \"{name}\")]`",
                    name = field.name
                ),
            );
        }
        for method in [
            field.name.clone(),
            format!("set_{}", field.name),
            format!("update_{}", field.name),
        ] {
            if let Some(previous) = methods.insert(method.clone(), &field.name) {
                cx.error_spanned_by(
                    field.ident,
                    format!(
                        "fields `{previous}` and `{}` both generate a method `{method}`: rename one of them (`#[session(rename = \"...\")]` keeps its column)",
                        field.name
                    ),
                );
            }
        }
    }
}
