//! What a SQL dialect provides, grouped by concern.
//!
//! [`Backend`] is the public name of a dialect and is sealed: its methods live
//! on [`Dialect`], which this crate alone can name and implement. The shared
//! code calls these methods and never branches on which database it talks to;
//! where a dialect does something its own way (MySQL's merged update,
//! SQLite's checkpoints and single lane), it overrides a hook here.

use std::{future::Future, sync::Arc};

use chrono::{DateTime, Utc};
use sqlx::{Database, Pool, error::BoxDynError};

use super::{
    Core,
    group::{Lanes, MergedRow},
    migrate::FoundColumn,
    statements::{self, Statements},
};
use crate::{
    schema::Schema,
    token::SessionId,
    value::{SqlType, Value},
};

/// A SQL database a [`SqlStore`](super::SqlStore) runs on:
/// [`Sqlite`](super::Sqlite), [`Postgres`](super::Postgres) or
/// [`MySql`](super::MySql), each behind its crate feature.
///
/// Sealed: the dialect's methods are the library's own, so a new version can
/// change them without breaking anyone. To keep sessions elsewhere, implement
/// [`SessionStore`](crate::SessionStore) instead.
pub trait Backend: Dialect {}

impl<D: Dialect> Backend for D {}

pub(crate) type Arguments<B> = <<B as Dialect>::Database as Database>::Arguments;
pub(crate) type Row<B> = <<B as Dialect>::Database as Database>::Row;
pub(crate) type Connection<B> = <<B as Dialect>::Database as Database>::Connection;

/// Everything that differs between databases. Only this crate can name it.
pub trait Dialect: Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Database: Database;
    /// What the store keeps for [`after_commit`](Self::after_commit).
    type Upkeep: Send + Sync + 'static;

    // --- Identifiers and DDL ---------------------------------------------

    /// Quotes identifiers.
    const QUOTE: char;
    /// The column type of `id`.
    const ID_TYPE: &'static str;
    /// The column type of `expires_at` and `created_at`.
    const TIME_TYPE: &'static str;
    /// The column type of a field's SQL type.
    fn column_type(ty: SqlType) -> &'static str;
    /// Statements that create the table and its `expires_at` index
    /// (default: `CREATE TABLE IF NOT EXISTS`, then `CREATE INDEX IF NOT
    /// EXISTS`).
    fn create_table(schema: &Schema, columns: &str) -> Vec<String> {
        let table = statements::quote::<Self>(schema.table);
        let index = statements::quote::<Self>(&format!("{}_expires_at", schema.table));
        let expires_at = statements::quote::<Self>("expires_at");
        vec![
            format!("CREATE TABLE IF NOT EXISTS {table} ({columns})"),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {table} ({expires_at})"),
        ]
    }
    /// A statement deleting up to a batch of expired rows of `table`
    /// (quoted); binds `now`, then the batch size (default: the ids of a
    /// `LIMIT`ed subquery).
    fn purge_statement(table: &str) -> String {
        let id = statements::quote::<Self>("id");
        let expires_at = statements::quote::<Self>("expires_at");
        let mut placeholders = statements::Placeholders::<Self>::new();
        let mut sql = format!(
            "DELETE FROM {table} WHERE {id} IN (SELECT {id} FROM {table} WHERE {expires_at} <= "
        );
        placeholders.push(&mut sql, None);
        sql.push_str(" LIMIT ");
        placeholders.push(&mut sql, None);
        sql.push(')');
        sql
    }
    /// Whether an existing column of type `found` (as the database spells
    /// it) is what the DDL type `expected` creates.
    fn type_matches(expected: &str, found: &str) -> bool;
    /// The columns of `table` as the database describes them (empty if it
    /// does not exist).
    fn table_columns<'a>(
        pool: &'a Pool<Self::Database>,
        table: &'a str,
    ) -> impl Future<Output = Result<Vec<FoundColumn>, sqlx::Error>> + Send + 'a;

    /// The column list entry of an index on a column of type `ty` (MySQL
    /// indexes text and bytes by a prefix).
    fn index_column(quoted: &str, ty: SqlType) -> String {
        let _ = ty;
        quoted.to_owned()
    }
    /// The names of the indexes on `table`.
    fn index_names<'a>(
        pool: &'a Pool<Self::Database>,
        table: &'a str,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a;

    // --- Statement text --------------------------------------------------

    /// Appends the placeholder of the `index`-th parameter (1-based).
    fn push_placeholder(sql: &mut String, index: usize, ty: Option<SqlType>);
    /// Appends a column in a SELECT list (a cast where decoding needs one).
    fn push_select(sql: &mut String, quoted: &str, ty: SqlType) {
        let _ = ty;
        sql.push_str(quoted);
    }
    /// Appends a cast of a parameter to a column type, where the dialect
    /// needs it to type a `VALUES` list.
    fn push_cast(sql: &mut String, ddl_type: &str) {
        let _ = (sql, ddl_type);
    }
    /// Appends `RETURNING <the id column of table>` (default: qualified by
    /// the table, as PostgreSQL wants it).
    fn push_returning_id(sql: &mut String, table: &str) {
        sql.push_str("RETURNING ");
        sql.push_str(table);
        sql.push('.');
        sql.push_str(&statements::quote::<Self>("id"));
    }

    // --- Binding and decoding --------------------------------------------

    /// Why the database cannot store `value` as it is, if it cannot
    /// (default: it can). Checked before binding, so that an out-of-range
    /// value is an error naming its field, never a silent change.
    fn check_value(value: &Value<'_>) -> Result<(), String> {
        let _ = value;
        Ok(())
    }
    /// Binds a field value.
    fn bind(args: &mut Arguments<Self>, value: Value<'_>) -> Result<(), BoxDynError>;
    /// Binds a session id.
    fn bind_id(args: &mut Arguments<Self>, id: &SessionId) -> Result<(), BoxDynError>;
    /// Binds a library timestamp.
    fn bind_time(args: &mut Arguments<Self>, time: DateTime<Utc>) -> Result<(), BoxDynError>;
    /// Binds an integer (version, batch size).
    fn bind_i64(args: &mut Arguments<Self>, value: i64) -> Result<(), BoxDynError>;
    /// Decodes a field column.
    fn decode(row: &Row<Self>, index: usize, ty: SqlType) -> Result<Value<'static>, sqlx::Error>;
    /// Decodes a library timestamp column.
    fn decode_time(row: &Row<Self>, index: usize) -> Result<DateTime<Utc>, sqlx::Error>;
    /// Decodes an integer column.
    fn decode_i64(row: &Row<Self>, index: usize) -> Result<i64, sqlx::Error>;

    // --- Running statements (the calls sqlx has no trait for) ------------

    /// Runs a statement, returns the number of rows it affected.
    fn execute<'a>(
        connection: &'a mut Connection<Self>,
        sql: Arc<str>,
        args: Arguments<Self>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;
    /// Runs a query, returns all its rows.
    fn fetch_all<'a>(
        connection: &'a mut Connection<Self>,
        sql: Arc<str>,
        args: Arguments<Self>,
    ) -> impl Future<Output = Result<Vec<Row<Self>>, sqlx::Error>> + Send + 'a;

    // --- Hooks: where a dialect does things its own way ------------------

    /// Which group tasks serve loads and writes (default: one each).
    fn lanes() -> Lanes {
        Lanes::Separate
    }

    /// Many sessions' UPDATEs of one shape as one statement, each row with
    /// its own expiry check and compare-and-swap; answers the ids updated.
    /// `alone`: not inside a group transaction.
    ///
    /// Default: `WITH v AS (VALUES …) UPDATE … FROM v … RETURNING id`.
    fn merged_update<'a>(
        connection: &'a mut Connection<Self>,
        statements: &'a Statements<Self>,
        rows: &'a [&'a MergedRow],
        alone: bool,
    ) -> impl Future<Output = Result<Vec<SessionId>, sqlx::Error>> + Send + 'a {
        let _ = alone;
        async move {
            let (sql, args) = statements
                .merged_update(rows)
                .map_err(sqlx::Error::Encode)?;
            let found = Self::fetch_all(connection, sql, args).await?;
            found
                .iter()
                .map(|row| statements::decode_id::<Self>(row, 0))
                .collect()
        }
    }

    /// A statement that makes concurrent transactions setting `key` in a
    /// capped field take turns, run first in the transaction (default:
    /// none — SQLite has one writer at a time anyway).
    fn cap_lock(
        statements: &Statements<Self>,
        field: usize,
        key: &Value<'static>,
    ) -> Option<(Arc<str>, Vec<super::group::Param>)> {
        let _ = (statements, field, key);
        None
    }

    /// The upkeep state of a store built with `options`.
    fn upkeep(options: &super::StoreOptions) -> Self::Upkeep;

    /// Runs after every commit of the store's writes (default: nothing).
    fn after_commit(core: &Arc<Core<Self>>) {
        let _ = core;
    }
}

/// The [`Dialect`] methods that run statements: the same for every
/// database, but each names its own sqlx types (sqlx has no trait for
/// `rows_affected`, and generic executor bounds would have to be repeated at
/// every caller).
macro_rules! sqlx_execution {
    ($db:ty) => {
        async fn execute(
            connection: &mut <$db as sqlx::Database>::Connection,
            sql: std::sync::Arc<str>,
            args: <$db as sqlx::Database>::Arguments,
        ) -> Result<u64, sqlx::Error> {
            let result = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(connection)
                .await?;
            Ok(result.rows_affected())
        }

        async fn fetch_all(
            connection: &mut <$db as sqlx::Database>::Connection,
            sql: std::sync::Arc<str>,
            args: <$db as sqlx::Database>::Arguments,
        ) -> Result<Vec<<$db as sqlx::Database>::Row>, sqlx::Error> {
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .fetch_all(connection)
                .await
        }
    };
}
pub(crate) use sqlx_execution;
