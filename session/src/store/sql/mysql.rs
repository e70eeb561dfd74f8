//! The MySQL / MariaDB dialect.
//!
//! Library timestamps are `DATETIME(6)` in UTC (sqlx binds `DateTime<Utc>` as
//! its UTC wall time), so the connection's time zone never matters.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::{
    Arguments as _, Pool, Row as _,
    error::BoxDynError,
    mysql::{MySqlArguments, MySqlPoolOptions, MySqlRow},
};
use uuid::Uuid;

use super::{Backend, FoundColumn, SqlStore};
use crate::{
    data::SessionData,
    error::StoreError,
    schema::Schema,
    token::SessionId,
    value::{SqlType, Value},
};

/// The MySQL / MariaDB backend of [`SqlStore`].
#[derive(Debug)]
pub enum MySql {}

impl<T: SessionData> SqlStore<MySql, T> {
    /// Opens a pool with sqlx's defaults.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{MySqlStore, Session};
    ///
    /// #[derive(Session, Default)]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let store = MySqlStore::<Visit>::connect("mysql://root@127.0.0.1/test").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(MySqlPoolOptions::new().connect(url).await?))
    }
}

/// `column_type` without the display widths of integer types (`int(11)`),
/// which MySQL 8 no longer shows and MariaDB still does; `tinyint(1)` is
/// how both spell BOOLEAN and stays.
fn normalize(found: &str) -> String {
    let found = found.to_ascii_lowercase();
    for integer in ["smallint", "mediumint", "bigint", "int"] {
        if let Some(rest) = found.strip_prefix(integer)
            && let Some(after) = rest
                .strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .map(|(_, after)| after)
        {
            return format!("{integer}{after}");
        }
    }
    found
}

impl Backend for MySql {
    type Database = sqlx::MySql;
    const QUOTE: char = '`';
    const ID_TYPE: &'static str = "BINARY(32)";
    const TIME_TYPE: &'static str = "DATETIME(6)";

    fn push_placeholder(sql: &mut String, _index: usize, _ty: Option<SqlType>) {
        sql.push('?');
    }

    fn column_type(ty: SqlType) -> &'static str {
        match ty {
            SqlType::Bool => "BOOLEAN",
            SqlType::I16 => "SMALLINT",
            SqlType::I32 => "INT",
            SqlType::I64 => "BIGINT",
            SqlType::U64 => "BIGINT UNSIGNED",
            SqlType::F32 => "FLOAT",
            SqlType::F64 => "DOUBLE",
            // LONG*: a session value must never be cut at 64 KiB.
            SqlType::Text => "LONGTEXT",
            SqlType::Bytes => "LONGBLOB",
            SqlType::Json => "JSON",
            SqlType::Timestamp | SqlType::DateTime => "DATETIME(6)",
            SqlType::Date => "DATE",
            SqlType::Uuid => "BINARY(16)",
        }
    }

    fn create_table(schema: &Schema, columns: &str) -> Vec<String> {
        // MySQL has no CREATE INDEX IF NOT EXISTS: the index is part of the table.
        vec![format!(
            "CREATE TABLE IF NOT EXISTS `{}` ({columns}, INDEX `{}_expires_at` (`expires_at`))",
            schema.table, schema.table
        )]
    }

    fn purge_statement(table: &str) -> String {
        format!("DELETE FROM {table} WHERE `expires_at` <= ? LIMIT ?")
    }

    fn type_matches(expected: &str, found: &str) -> bool {
        let found = normalize(found);
        match expected {
            "BOOLEAN" => found == "tinyint(1)",
            // MariaDB's JSON is LONGTEXT with a json_valid check.
            "JSON" => found == "json" || found == "longtext",
            other => found == other.to_ascii_lowercase(),
        }
    }

    async fn table_columns(
        pool: &Pool<sqlx::MySql>,
        table: &str,
    ) -> Result<Vec<FoundColumn>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), \
             CAST(is_nullable = 'YES' AS SIGNED), CAST(column_default IS NOT NULL AS SIGNED) \
             FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? \
             ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FoundColumn {
                    name: row.try_get(0)?,
                    declared_type: row.try_get(1)?,
                    nullable: row.try_get::<i64, _>(2)? != 0,
                    has_default: row.try_get::<i64, _>(3)? != 0,
                })
            })
            .collect()
    }

    fn bind(args: &mut MySqlArguments, value: Value<'_>) -> Result<(), BoxDynError> {
        match value {
            Value::Null(_) => args.add(Option::<i64>::None),
            Value::Bool(v) => args.add(v),
            Value::I16(v) => args.add(v),
            Value::I32(v) => args.add(v),
            Value::I64(v) => args.add(v),
            Value::U64(v) => args.add(v),
            Value::F32(v) => args.add(v),
            Value::F64(v) => args.add(v),
            Value::Text(v) | Value::Json(v) => args.add(&*v),
            Value::Bytes(v) => args.add(&*v),
            Value::Timestamp(v) => args.add(v),
            Value::DateTime(v) => args.add(v),
            Value::Date(v) => args.add(v),
            Value::Uuid(v) => args.add(v),
        }
    }

    fn bind_id(args: &mut MySqlArguments, id: &SessionId) -> Result<(), BoxDynError> {
        args.add(&id.as_bytes()[..])
    }

    fn bind_time(args: &mut MySqlArguments, time: DateTime<Utc>) -> Result<(), BoxDynError> {
        args.add(time)
    }

    fn bind_i64(args: &mut MySqlArguments, value: i64) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn decode(row: &MySqlRow, index: usize, ty: SqlType) -> Result<Value<'static>, sqlx::Error> {
        match ty {
            SqlType::Bool => super::decode_nullable(row, index, ty, Value::Bool),
            SqlType::I16 => super::decode_nullable(row, index, ty, Value::I16),
            SqlType::I32 => super::decode_nullable(row, index, ty, Value::I32),
            SqlType::I64 => super::decode_nullable(row, index, ty, Value::I64),
            SqlType::U64 => super::decode_nullable(row, index, ty, Value::U64),
            SqlType::F32 => super::decode_nullable(row, index, ty, Value::F32),
            SqlType::F64 => super::decode_nullable(row, index, ty, Value::F64),
            SqlType::Text => {
                super::decode_nullable(row, index, ty, |v: String| Value::Text(Cow::Owned(v)))
            }
            SqlType::Json => {
                // MySQL reports JSON columns as JSON, MariaDB as LONGTEXT: both are text.
                let text: Option<String> = row.try_get_unchecked(index)?;
                Ok(text.map_or(Value::Null(ty), |v| Value::Json(Cow::Owned(v))))
            }
            SqlType::Bytes => {
                super::decode_nullable(row, index, ty, |v: Vec<u8>| Value::Bytes(Cow::Owned(v)))
            }
            SqlType::Timestamp => super::decode_nullable(row, index, ty, Value::Timestamp),
            SqlType::DateTime => {
                super::decode_nullable::<_, NaiveDateTime>(row, index, ty, Value::DateTime)
            }
            SqlType::Date => super::decode_nullable::<_, NaiveDate>(row, index, ty, Value::Date),
            SqlType::Uuid => super::decode_nullable::<_, Uuid>(row, index, ty, Value::Uuid),
        }
    }

    fn decode_time(row: &MySqlRow, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        row.try_get(index)
    }

    fn decode_i64(row: &MySqlRow, index: usize) -> Result<i64, sqlx::Error> {
        row.try_get(index)
    }

    sqlx_execution!(
        MySql,
        sqlx::MySql,
        sqlx::MySqlConnection,
        MySqlArguments,
        MySqlRow
    );

    const MERGED_UPDATES: bool = false;

    fn push_returning_id(sql: &mut String, _table: &str) {
        // Never called: MySQL and MariaDB have no UPDATE … RETURNING.
        let _ = sql;
    }
}
