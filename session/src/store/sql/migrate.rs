//! `migrate()`: create the table, or verify an existing one against the
//! struct and add what is missing.

use std::fmt::Write as _;

use super::{
    backend::Dialect,
    statements::{comma_list, quote},
};
use crate::{
    data::SessionData,
    error::StoreError,
    schema::{ColumnDef, Schema},
    value::{SqlType, Value},
};

/// A column of an existing table, as the database describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundColumn {
    /// Its name.
    pub(crate) name: String,
    /// Its type as the database spells it.
    pub(crate) declared_type: String,
    /// Whether it accepts NULL.
    pub(crate) nullable: bool,
    /// Whether it has a default value.
    pub(crate) has_default: bool,
}

/// The library's columns with their DDL types, in table order.
fn library_columns<B: Dialect>() -> [(&'static str, &'static str); 5] {
    [
        ("id", B::ID_TYPE),
        ("expires_at", B::TIME_TYPE),
        ("version", "BIGINT"),
        ("created_at", B::TIME_TYPE),
        ("remember", B::column_type(SqlType::Bool)),
    ]
}

/// The longest identifier every backend takes (PostgreSQL: 63 bytes).
const MAX_IDENTIFIER: usize = 63;

/// The name of the index on a field's column: `<table>_<column>_idx`, or,
/// past the identifier limit, its first bytes and a hash of the whole.
pub(crate) fn index_name(table: &str, column: &str) -> String {
    let name = format!("{table}_{column}_idx");
    if name.len() <= MAX_IDENTIFIER {
        return name;
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(name.as_bytes());
    let hash: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut cut = MAX_IDENTIFIER - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &name[..cut])
}

/// The indexes of `#[session(index)]` fields: each name and statement.
pub(crate) fn field_indexes<B: Dialect>(schema: Schema) -> Vec<(String, String)> {
    schema
        .columns
        .iter()
        .filter(|column| column.indexed)
        .map(|column| {
            let name = index_name(schema.table, column.name);
            let statement = format!(
                "CREATE INDEX {} ON {} ({})",
                quote::<B>(&name),
                quote::<B>(schema.table),
                B::index_column(&quote::<B>(column.name), column.sql_type)
            );
            (name, statement)
        })
        .collect()
}

/// The DDL that creates `T`'s table with its `expires_at` index, then the
/// indexes of its indexed fields.
pub(crate) fn create_table_sql<B: Dialect, T: SessionData>() -> Vec<String> {
    let mut statements = table_sql::<B, T>();
    statements.extend(
        field_indexes::<B>(T::SCHEMA)
            .into_iter()
            .map(|(_, statement)| statement),
    );
    statements
}

/// The statements that create `T`'s table and its `expires_at` index, if
/// they do not exist.
pub(crate) fn table_sql<B: Dialect, T: SessionData>() -> Vec<String> {
    let schema = T::SCHEMA;
    let library = library_columns::<B>().map(|(name, ty)| {
        let constraint = match name {
            "id" => " NOT NULL PRIMARY KEY",
            "remember" => " NOT NULL DEFAULT FALSE",
            _ => " NOT NULL",
        };
        format!("{} {ty}{constraint}", quote::<B>(name))
    });
    let fields = schema.columns.iter().map(|column| {
        format!(
            "{} {}{}",
            quote::<B>(column.name),
            B::column_type(column.sql_type),
            if column.nullable { "" } else { " NOT NULL" }
        )
    });
    B::create_table(&schema, &comma_list(library.into_iter().chain(fields)))
}

/// What comparing a table with its struct found.
#[derive(Default)]
struct Reconciliation {
    /// ALTER statements that fix what can be fixed.
    additions: Vec<String>,
    /// What cannot, one line each.
    problems: Vec<String>,
}

/// Compares the table as found with the struct: the ALTER statements that
/// fix what can be fixed, or every problem that cannot.
pub(crate) fn reconcile<B: Dialect, T: SessionData>(
    found: &[FoundColumn],
) -> Result<Vec<String>, StoreError> {
    let schema = T::SCHEMA;
    let mut result = Reconciliation::default();
    check_library_columns::<B>(schema, found, &mut result);
    let defaults = T::default();
    for (index, column) in schema.columns.iter().enumerate() {
        match find(found, column.name) {
            None => add_missing_field::<B, T>(schema, column, &defaults, index, &mut result),
            Some(existing) => check_field_column::<B>(column, existing, &mut result),
        }
    }
    check_extra_columns::<B>(schema, found, &mut result);
    if result.problems.is_empty() {
        Ok(result.additions)
    } else {
        Err(StoreError::Schema {
            table: schema.table.to_owned(),
            problem: result.problems.join("; "),
        })
    }
}

/// Column names are compared as the databases do: case-insensitively.
fn find<'a>(found: &'a [FoundColumn], name: &str) -> Option<&'a FoundColumn> {
    found
        .iter()
        .find(|column| column.name.eq_ignore_ascii_case(name))
}

/// The library's own columns must all be there with their types; only
/// `remember`, added by a later version of this library, can be added.
fn check_library_columns<B: Dialect>(
    schema: Schema,
    found: &[FoundColumn],
    result: &mut Reconciliation,
) {
    for (name, expected) in library_columns::<B>() {
        match find(found, name) {
            None if name == "remember" => result.additions.push(format!(
                "ALTER TABLE {} ADD COLUMN {} {expected} NOT NULL DEFAULT FALSE",
                quote::<B>(schema.table),
                quote::<B>(name)
            )),
            None => result.problems.push(format!(
                "library column `{name}` is missing (expected {expected})"
            )),
            Some(column) if !B::type_matches(expected, &column.declared_type) => {
                result.problems.push(format!(
                    "column `{name}`: expected {expected}, found {}",
                    column.declared_type
                ))
            }
            Some(_) => {}
        }
    }
}

/// A missing field column can be added when existing rows can get a value
/// for it: NULL, or the field's `Default` as a SQL default.
fn add_missing_field<B: Dialect, T: SessionData>(
    schema: Schema,
    column: &ColumnDef,
    defaults: &T,
    index: usize,
    result: &mut Reconciliation,
) {
    let expected = B::column_type(column.sql_type);
    let mut statement = format!(
        "ALTER TABLE {} ADD COLUMN {} {expected}",
        quote::<B>(schema.table),
        quote::<B>(column.name)
    );
    if column.nullable {
        result.additions.push(statement);
        return;
    }
    let literal = defaults
        .encode_column(index)
        .ok()
        .and_then(|value| default_literal(&value));
    match literal {
        Some(literal) => {
            let _ = write!(statement, " NOT NULL DEFAULT {literal}");
            result.additions.push(statement);
        }
        None => result.problems.push(format!(
            "column `{}` (field `{}`) is missing; it is NOT NULL {expected} and its default value cannot be written as a SQL default: add it by hand, or make the field an `Option`",
            column.name, column.field
        )),
    }
}

/// An existing field column must have the field's type and nullability.
fn check_field_column<B: Dialect>(
    column: &ColumnDef,
    existing: &FoundColumn,
    result: &mut Reconciliation,
) {
    let expected = B::column_type(column.sql_type);
    if !B::type_matches(expected, &existing.declared_type) {
        result.problems.push(format!(
            "column `{}` (field `{}`): expected {expected}, found {}",
            column.name, column.field, existing.declared_type
        ));
    } else if existing.nullable != column.nullable {
        let (expected, found) = if column.nullable {
            ("NULL allowed (the field is an Option)", "NOT NULL")
        } else {
            (
                "NOT NULL",
                "NULL allowed (make the field an Option, or the column NOT NULL)",
            )
        };
        result.problems.push(format!(
            "column `{}` (field `{}`): expected {expected}, found {found}",
            column.name, column.field
        ));
    }
}

/// A column the struct does not know is harmless unless it would make
/// every INSERT fail.
fn check_extra_columns<B: Dialect>(
    schema: Schema,
    found: &[FoundColumn],
    result: &mut Reconciliation,
) {
    for column in found {
        let known = library_columns::<B>()
            .iter()
            .any(|(name, _)| column.name.eq_ignore_ascii_case(name))
            || schema
                .columns
                .iter()
                .any(|c| column.name.eq_ignore_ascii_case(c.name));
        if !known && !column.nullable && !column.has_default {
            result.problems.push(format!(
                "column `{}` ({}) is not in the struct and is NOT NULL without a default, so no session could be inserted: drop it, give it a default, or add a field for it",
                column.name, column.declared_type
            ));
        }
    }
}

/// A field's `Default` value as a SQL literal, where one is safe to write on
/// every backend.
pub(crate) fn default_literal(value: &Value<'_>) -> Option<String> {
    let quoted = |text: &str| {
        // Backslashes mean different things to MySQL and the others, and NUL
        // cannot appear in a literal: leave those to a hand-written migration.
        (!text.contains(['\\', '\0'])).then(|| format!("'{}'", text.replace('\'', "''")))
    };
    match value {
        Value::Bool(v) => Some(if *v { "TRUE" } else { "FALSE" }.to_owned()),
        Value::I16(v) => Some(v.to_string()),
        Value::I32(v) => Some(v.to_string()),
        Value::I64(v) => Some(v.to_string()),
        Value::U64(v) => Some(v.to_string()),
        Value::F32(v) if v.is_finite() => Some(format!("{v:?}")),
        Value::F64(v) if v.is_finite() => Some(format!("{v:?}")),
        Value::Text(text) | Value::Json(text) => quoted(text),
        _ => None,
    }
}

#[cfg(all(test, feature = "sqlite", feature = "postgres"))]
mod tests {
    use super::*;
    use crate::store::sql::{Postgres, Sqlite};

    #[derive(crate::Session, Default)]
    #[session(table = "visits")]
    struct Visit {
        count: i64,
        nickname: Option<String>,
        #[session(json)]
        cart: Vec<String>,
        token: Vec<u8>,
    }

    fn column(name: &str, declared_type: &str, nullable: bool) -> FoundColumn {
        FoundColumn {
            name: name.to_owned(),
            declared_type: declared_type.to_owned(),
            nullable,
            has_default: false,
        }
    }

    fn library(types: [&str; 5]) -> Vec<FoundColumn> {
        ["id", "expires_at", "version", "created_at", "remember"]
            .iter()
            .zip(types)
            .map(|(name, ty)| column(name, ty, false))
            .collect()
    }

    #[test]
    fn a_matching_table_needs_nothing() {
        let mut found = library([
            "bytea",
            "timestamp with time zone",
            "bigint",
            "timestamp with time zone",
            "boolean",
        ]);
        found.extend([
            column("COUNT", "bigint", false),
            column("nickname", "character varying", true),
            column("cart", "json", false),
            column("token", "bytea", false),
        ]);
        assert_eq!(
            reconcile::<Postgres, Visit>(&found).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn missing_columns_are_added_when_existing_rows_can_get_a_value() {
        let mut found = library(["BLOB", "INTEGER", "BIGINT", "INTEGER", "BOOLEAN"]);
        found.retain(|column| column.name != "remember");
        found.push(column("token", "BLOB", false));
        let additions = reconcile::<Sqlite, Visit>(&found).unwrap();
        assert_eq!(
            additions,
            [
                r#"ALTER TABLE "visits" ADD COLUMN "remember" BOOLEAN NOT NULL DEFAULT FALSE"#,
                r#"ALTER TABLE "visits" ADD COLUMN "count" INTEGER NOT NULL DEFAULT 0"#,
                r#"ALTER TABLE "visits" ADD COLUMN "nickname" TEXT"#,
                r#"ALTER TABLE "visits" ADD COLUMN "cart" TEXT NOT NULL DEFAULT '[]'"#,
            ]
        );
    }

    #[test]
    fn what_cannot_be_reconciled_is_named_all_at_once() {
        let mut found = library([
            "bytea",
            "timestamp with time zone",
            "integer",
            "timestamp with time zone",
            "boolean",
        ]);
        found.extend([
            column("count", "text", false),
            column("nickname", "text", false),
            column("cart", "jsonb", false),
            column("legacy", "text", false),
        ]);
        let Err(StoreError::Schema { table, problem }) = reconcile::<Postgres, Visit>(&found)
        else {
            panic!("expected a schema error");
        };
        assert_eq!(table, "visits");
        for expected in [
            "column `version`: expected BIGINT, found integer",
            "column `count` (field `count`): expected BIGINT, found text",
            "column `nickname` (field `nickname`): expected NULL allowed",
            "column `token` (field `token`) is missing; it is NOT NULL BYTEA",
            "column `legacy` (text) is not in the struct and is NOT NULL without a default",
        ] {
            assert!(problem.contains(expected), "{expected:?} not in {problem}");
        }
    }

    #[test]
    fn default_literals_are_written_only_where_safe_on_every_backend() {
        use std::borrow::Cow;
        assert_eq!(default_literal(&Value::Bool(true)).as_deref(), Some("TRUE"));
        assert_eq!(default_literal(&Value::I64(-3)).as_deref(), Some("-3"));
        assert_eq!(default_literal(&Value::F64(0.5)).as_deref(), Some("0.5"));
        assert_eq!(default_literal(&Value::F64(f64::NAN)), None);
        assert_eq!(
            default_literal(&Value::Text(Cow::Borrowed("it's"))).as_deref(),
            Some("'it''s'")
        );
        assert_eq!(default_literal(&Value::Text(Cow::Borrowed("a\\b"))), None);
        assert_eq!(default_literal(&Value::Text(Cow::Borrowed("a\0b"))), None);
        assert_eq!(default_literal(&Value::Bytes(Cow::Borrowed(b"x"))), None);
    }

    #[test]
    fn the_ddl_lists_library_columns_then_fields() {
        let ddl = create_table_sql::<Sqlite, Visit>();
        assert_eq!(
            ddl[0],
            r#"CREATE TABLE IF NOT EXISTS "visits" ("id" BLOB NOT NULL PRIMARY KEY, "expires_at" INTEGER NOT NULL, "version" BIGINT NOT NULL, "created_at" INTEGER NOT NULL, "remember" BOOLEAN NOT NULL DEFAULT FALSE, "count" INTEGER NOT NULL, "nickname" TEXT, "cart" TEXT NOT NULL, "token" BLOB NOT NULL)"#
        );
    }
}
