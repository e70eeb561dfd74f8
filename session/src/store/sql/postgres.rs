//! The PostgreSQL dialect.
//!
//! JSON fields are `JSONB` columns: written as text with a `::jsonb` cast and
//! read back with `::text`, so serde (not the driver) owns the format.

use std::borrow::Cow;

use chrono::{DateTime, Datelike as _, NaiveDate, NaiveDateTime, Utc};
use sqlx::{
    Arguments as _, Pool, Row as _,
    error::BoxDynError,
    postgres::{PgArguments, PgConnectOptions, PgRow},
};
use uuid::Uuid;

use super::decode_nullable;
use super::{
    SqlStore, SqlStoreBuilder,
    backend::{Dialect, sqlx_execution},
    migrate::FoundColumn,
    options::StoreOptions,
};
use crate::{
    data::SessionData,
    error::StoreError,
    token::SessionId,
    value::{SqlType, Value},
};

/// The PostgreSQL backend of [`SqlStore`].
#[derive(Debug)]
pub enum Postgres {}

impl<T: SessionData> SqlStore<Postgres, T> {
    /// Opens a pool with the default options; the same as
    /// `PgStore::builder().connect(url)`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{PgStore, Session};
    ///
    /// #[derive(Session, Default)]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let store = PgStore::<Visit>::connect("postgres://postgres@127.0.0.1/test").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder().connect(url).await
    }
}

impl<T: SessionData> SqlStoreBuilder<Postgres, T> {
    /// Opens the pool at `url` with the builder's options.
    pub async fn connect(self, url: &str) -> Result<SqlStore<Postgres, T>, StoreError> {
        self.connect_with(url.parse()?).await
    }

    /// Opens the pool with these connect options (TLS, time-outs,
    /// statement logging, ...) and the builder's pool options.
    pub async fn connect_with(
        self,
        options: PgConnectOptions,
    ) -> Result<SqlStore<Postgres, T>, StoreError> {
        let pool = self.open_pool(options).await?;
        Ok(self.build(pool))
    }
}

impl Dialect for Postgres {
    type Database = sqlx::Postgres;
    type Upkeep = ();
    const QUOTE: char = '"';
    const ID_TYPE: &'static str = "BYTEA";
    const TIME_TYPE: &'static str = "TIMESTAMPTZ";

    fn push_placeholder(sql: &mut String, index: usize, ty: Option<SqlType>) {
        sql.push('$');
        sql.push_str(&index.to_string());
        if ty == Some(SqlType::Json) {
            sql.push_str("::jsonb");
        }
    }

    fn push_select(sql: &mut String, quoted: &str, ty: SqlType) {
        sql.push_str(quoted);
        if ty == SqlType::Json {
            sql.push_str("::text");
        }
    }

    fn column_type(ty: SqlType) -> &'static str {
        match ty {
            SqlType::Bool => "BOOLEAN",
            SqlType::I16 => "SMALLINT",
            SqlType::I32 => "INTEGER",
            // No lossless column exists; the derive rejects u64 on PostgreSQL.
            SqlType::I64 | SqlType::U64 => "BIGINT",
            SqlType::F32 => "REAL",
            SqlType::F64 => "DOUBLE PRECISION",
            SqlType::Text => "TEXT",
            SqlType::Bytes => "BYTEA",
            SqlType::Json => "JSONB",
            SqlType::Timestamp => "TIMESTAMPTZ",
            SqlType::DateTime => "TIMESTAMP",
            SqlType::Date => "DATE",
            SqlType::Uuid => "UUID",
        }
    }

    fn type_matches(expected: &str, found: &str) -> bool {
        // information_schema's `data_type` spelling of each DDL type.
        let accepted: &[&str] = match expected {
            "BOOLEAN" => &["boolean"],
            "SMALLINT" => &["smallint"],
            "INTEGER" => &["integer"],
            "BIGINT" => &["bigint"],
            "REAL" => &["real"],
            "DOUBLE PRECISION" => &["double precision"],
            "TEXT" => &["text", "character varying"],
            "BYTEA" => &["bytea"],
            "JSONB" => &["jsonb", "json"],
            "TIMESTAMPTZ" => &["timestamp with time zone"],
            "TIMESTAMP" => &["timestamp without time zone"],
            "DATE" => &["date"],
            "UUID" => &["uuid"],
            _ => &[],
        };
        accepted
            .iter()
            .any(|spelling| found.eq_ignore_ascii_case(spelling))
    }

    async fn table_columns(
        pool: &Pool<sqlx::Postgres>,
        table: &str,
    ) -> Result<Vec<FoundColumn>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT column_name::text, data_type::text, is_nullable = 'YES', column_default IS NOT NULL \
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 \
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
                    nullable: row.try_get(2)?,
                    has_default: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn index_names(
        pool: &Pool<sqlx::Postgres>,
        table: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
        )
        .bind(table)
        .fetch_all(pool)
        .await
    }

    fn bind(args: &mut PgArguments, value: Value<'_>) -> Result<(), BoxDynError> {
        match value {
            Value::Null(ty) => bind_null(args, ty),
            Value::Bool(v) => args.add(v),
            Value::I16(v) => args.add(v),
            Value::I32(v) => args.add(v),
            Value::I64(v) => args.add(v),
            Value::U64(v) => args.add(i64::try_from(v)?),
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

    fn bind_id(args: &mut PgArguments, id: &SessionId) -> Result<(), BoxDynError> {
        args.add(&id.as_bytes()[..])
    }

    fn bind_time(args: &mut PgArguments, time: DateTime<Utc>) -> Result<(), BoxDynError> {
        args.add(time)
    }

    /// A transaction-scoped advisory lock on (table, column, value).
    fn cap_lock(
        statements: &super::statements::Statements<Self>,
        field: usize,
        key: &Value<'static>,
    ) -> Option<(std::sync::Arc<str>, Vec<super::group::Param>)> {
        let schema = statements.schema();
        let name = format!("{}/{}/{key:?}", schema.table, schema.column(field).name);
        Some((
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))".into(),
            vec![super::group::Param::Value(Value::Text(name.into()))],
        ))
    }

    fn check_value(value: &Value<'_>) -> Result<(), String> {
        // PostgreSQL's dates and times start in 4713 BC; chrono's reach
        // further back. Its ends (294276 AD) lie past chrono's.
        const FIRST_YEAR: i32 = -4712;
        match value {
            Value::Text(text) if text.contains('\0') => {
                Err("PostgreSQL text cannot hold NUL (\\0) characters".into())
            }
            Value::Json(text) if text.contains("\\u0000") => {
                Err("PostgreSQL's JSONB cannot hold the NUL character (\\u0000)".into())
            }
            Value::Timestamp(v) if v.year() < FIRST_YEAR => {
                Err(format!("{v} is before PostgreSQL's first date (4713 BC)"))
            }
            Value::DateTime(v) if v.year() < FIRST_YEAR => {
                Err(format!("{v} is before PostgreSQL's first date (4713 BC)"))
            }
            Value::Date(v) if v.year() < FIRST_YEAR => {
                Err(format!("{v} is before PostgreSQL's first date (4713 BC)"))
            }
            _ => Ok(()),
        }
    }

    fn bind_i64(args: &mut PgArguments, value: i64) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn decode(row: &PgRow, index: usize, ty: SqlType) -> Result<Value<'static>, sqlx::Error> {
        match ty {
            SqlType::Bool => decode_nullable(row, index, ty, Value::Bool),
            SqlType::I16 => decode_nullable(row, index, ty, Value::I16),
            SqlType::I32 => decode_nullable(row, index, ty, Value::I32),
            SqlType::I64 | SqlType::U64 => decode_nullable(row, index, ty, Value::I64),
            SqlType::F32 => decode_nullable(row, index, ty, Value::F32),
            SqlType::F64 => decode_nullable(row, index, ty, Value::F64),
            SqlType::Text => {
                decode_nullable(row, index, ty, |v: String| Value::Text(Cow::Owned(v)))
            }
            SqlType::Json => {
                decode_nullable(row, index, ty, |v: String| Value::Json(Cow::Owned(v)))
            }
            SqlType::Bytes => {
                decode_nullable(row, index, ty, |v: Vec<u8>| Value::Bytes(Cow::Owned(v)))
            }
            SqlType::Timestamp => decode_nullable(row, index, ty, Value::Timestamp),
            SqlType::DateTime => {
                decode_nullable::<_, NaiveDateTime>(row, index, ty, Value::DateTime)
            }
            SqlType::Date => decode_nullable::<_, NaiveDate>(row, index, ty, Value::Date),
            SqlType::Uuid => decode_nullable::<_, Uuid>(row, index, ty, Value::Uuid),
        }
    }

    fn decode_time(row: &PgRow, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        row.try_get(index)
    }

    fn decode_i64(row: &PgRow, index: usize) -> Result<i64, sqlx::Error> {
        row.try_get(index)
    }

    sqlx_execution!(sqlx::Postgres);

    fn upkeep(_: &StoreOptions) {}

    fn push_cast(sql: &mut String, ddl_type: &str) {
        // A VALUES list has no column types of its own: say them.
        sql.push_str("::");
        sql.push_str(ddl_type);
    }
}

/// PostgreSQL checks a parameter's type even when it is NULL.
fn bind_null(args: &mut PgArguments, ty: SqlType) -> Result<(), BoxDynError> {
    match ty {
        SqlType::Bool => args.add(None::<bool>),
        SqlType::I16 => args.add(None::<i16>),
        SqlType::I32 => args.add(None::<i32>),
        SqlType::I64 | SqlType::U64 => args.add(None::<i64>),
        SqlType::F32 => args.add(None::<f32>),
        SqlType::F64 => args.add(None::<f64>),
        SqlType::Text | SqlType::Json => args.add(None::<String>),
        SqlType::Bytes => args.add(None::<Vec<u8>>),
        SqlType::Timestamp => args.add(None::<DateTime<Utc>>),
        SqlType::DateTime => args.add(None::<NaiveDateTime>),
        SqlType::Date => args.add(None::<NaiveDate>),
        SqlType::Uuid => args.add(None::<Uuid>),
    }
}
