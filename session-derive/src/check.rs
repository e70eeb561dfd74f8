//! Every check on a session struct, one function per rule, all reported
//! together.

use std::collections::HashMap;

use crate::{
    ast::{Container, Field},
    ctxt::Ctxt,
    names::{LIBRARY_COLUMNS, SESSION_METHODS},
};

/// The shortest identifier limit among the backends (PostgreSQL: 63 bytes;
/// MySQL allows 64).
const MAX_IDENTIFIER: usize = 63;

/// Bits in `DirtyFields`.
const MAX_FIELDS: usize = 64;

pub(crate) fn container(cx: &mut Ctxt, container: &Container<'_>) {
    check_no_generics(cx, container);
    check_table_name(cx, container);
    check_field_count(cx, container);
    let reserved = check_column_names(cx, container);
    check_accessor_names(cx, container, &reserved);
    check_indexes(cx, container);
}

/// An index is on one column of the field's own SQL type: a JSON document
/// has no value to look sessions up by.
fn check_indexes(cx: &mut Ctxt, container: &Container<'_>) {
    for field in &container.fields {
        if let (Some(index), Some(_)) = (field.index, field.json) {
            cx.syn_error(syn::Error::new(
                index,
                format!(
                    "`index` cannot go on a `#[session(json)]` field (`{}`): index a field with a column type, e.g. `user_id: Option<i64>`",
                    field.name
                ),
            ));
        }
    }
}

/// A table has one fixed column type per field, so the struct cannot be
/// generic; and sessions outlive the request, so they cannot borrow.
fn check_no_generics(cx: &mut Ctxt, container: &Container<'_>) {
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

/// Why `name` cannot be a SQL identifier on every backend, if it cannot:
/// names are quoted, but a name every backend accepts unquoted is one users
/// can also type in their own SQL.
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

/// The table name must be an identifier on every backend, and SQLite
/// refuses names starting with `sqlite_`.
fn check_table_name(cx: &mut Ctxt, container: &Container<'_>) {
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

/// A table needs a column besides the library's, and the dirty set is one
/// 64-bit word.
fn check_field_count(cx: &mut Ctxt, container: &Container<'_>) {
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
}

/// Each column must be an identifier, must not be one of the library's own
/// columns, and must be unique — case-insensitively, as the databases
/// compare them. Returns the fields whose column was reserved (already
/// reported).
fn check_column_names<'a>(cx: &mut Ctxt, container: &'a Container<'_>) -> Vec<&'a str> {
    let mut reserved = Vec::new();
    let mut columns: HashMap<String, &str> = HashMap::new();
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
            reserved.push(field.name.as_str());
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
    }
    reserved
}

/// The methods generated for a field: getter, setter, updater.
fn accessor_names(field: &Field<'_>) -> [String; 3] {
    [
        field.name.clone(),
        format!("set_{}", field.name),
        format!("update_{}", field.name),
    ]
}

/// Generated methods are reached through `Deref`, so an inherent method of
/// `Session<T>` with the same name silently wins: `visit.set_store(true)`
/// would give consent instead of setting a field `store`. Two fields must
/// not generate the same method either. `rename` cannot help: it renames
/// the column, not the methods.
fn check_accessor_names(cx: &mut Ctxt, container: &Container<'_>, reserved: &[&str]) {
    let mut methods: HashMap<String, &str> = HashMap::new();
    for field in &container.fields {
        let names = accessor_names(field);
        // A reserved column already got its error; a second one about the
        // same field would only repeat it.
        if !reserved.contains(&field.name.as_str())
            && let Some(method) = names
                .iter()
                .find(|name| SESSION_METHODS.contains(&name.as_str()))
        {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "a field named `{name}` would generate `{method}()`, which is hidden by `Session::{method}()`: \
                     rename the field (e.g. `last_{name}`); `#[session(rename = \"...\")]` only renames the column, \
                     so add `#[session(rename = \"{column}\")]` to keep the column `{column}`",
                    name = field.name,
                    column = field.column.value,
                ),
            );
        }
        for method in names {
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
