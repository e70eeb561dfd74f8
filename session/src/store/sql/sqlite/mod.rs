//! The SQLite dialect.
//!
//! Library timestamps are `INTEGER` milliseconds since the Unix epoch, so
//! expiry comparisons are integer comparisons on the index.

mod checkpoint;

use std::{borrow::Cow, str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    Arguments as _, Pool, Row as _,
    error::BoxDynError,
    sqlite::{
        SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous,
    },
};

use self::checkpoint::Checkpoints;
use super::{
    Core, SqlStore, SqlStoreBuilder,
    backend::{Dialect, sqlx_execution},
    group::Lanes,
    migrate::FoundColumn,
    options::StoreOptions,
};
use crate::{
    data::SessionData,
    error::StoreError,
    token::SessionId,
    value::{SqlType, Value},
};

/// The SQLite backend of [`SqlStore`].
#[derive(Debug)]
pub enum Sqlite {}

/// How long a connection waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The page cache of each connection [`SqliteStore::connect`](crate::SqliteStore::connect)
/// opens, in KiB. Pages are allocated as they are read, so an idle
/// connection does not hold it.
pub(crate) const PAGE_CACHE_KIB: u32 = 16 * 1024;

impl<T: SessionData> SqlStore<Sqlite, T> {
    /// Opens a pool with the settings a session table wants; the same as
    /// `SqliteStore::builder().connect(url)`, see
    /// [`SqlStoreBuilder::connect`](SqlStoreBuilder#method.connect-2).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{Session, SqliteStore};
    ///
    /// #[derive(Session, Default)]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let store = SqliteStore::<Visit>::connect("sqlite://sessions.db?mode=rwc").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder().connect(url).await
    }
}

impl<T: SessionData> SqlStoreBuilder<Sqlite, T> {
    /// Whether the store checkpoints the write-ahead log itself, in the
    /// background on a connection of its own, instead of leaving it to
    /// SQLite's automatic checkpoint (default: on with
    /// [`connect`](Self::connect), off with [`build`](Self::build) on your
    /// own pool). The automatic checkpoint runs inside the commit that
    /// crosses the log's size limit, so every request waiting on that
    /// connection waits for the copy and its `fsync` too; the background one
    /// does not block readers or writers (`PRAGMA wal_checkpoint(PASSIVE)`).
    /// Once the log passes 1000 frames, one checkpoint also starts it over
    /// (`RESTART`: writers wait while it copies the few frames left and
    /// syncs), so the log file stays near 6 MB with 4 KiB pages. On your own
    /// pool, set `wal_autocheckpoint = 0` on its connections when you turn
    /// this on.
    pub fn background_checkpoints(mut self, enabled: bool) -> Self {
        self.options.background_checkpoints = Some(enabled);
        self
    }

    /// Opens a pool with the settings a session table wants: WAL (readers
    /// never wait for the writer), `synchronous = NORMAL` (durable across
    /// process crashes; a power loss may lose the last commits, the usual
    /// trade-off for WAL) and a busy timeout of 10 s so that concurrent
    /// writers queue instead of failing with "database is locked". Each
    /// connection keeps up to 16 MiB of pages (SQLite's default is 2 MiB,
    /// which a table of some 100k sessions outgrows). The write-ahead log
    /// is checkpointed in the background, off the request path (see
    /// [`background_checkpoints`](Self::background_checkpoints)).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{Session, SqliteStore};
    ///
    /// #[derive(Session, Default)]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let store = SqliteStore::<Visit>::builder()
    ///     .connect("sqlite://sessions.db?mode=rwc")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, url: &str) -> Result<SqlStore<Sqlite, T>, StoreError> {
        self.connect_with(SqliteConnectOptions::from_str(url)?)
            .await
    }

    /// Like [`connect`](Self::connect), with your connect options (a
    /// filename, extensions, pragmas of your own): the library's tuning is
    /// applied on top of them, and the builder's pool options are used.
    pub async fn connect_with(
        mut self,
        options: SqliteConnectOptions,
    ) -> Result<SqlStore<Sqlite, T>, StoreError> {
        let checkpoints = *self.options.background_checkpoints.get_or_insert(true);
        let mut options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("cache_size", format!("-{PAGE_CACHE_KIB}"));
        if checkpoints {
            // The store checkpoints in the background instead.
            options = options.pragma("wal_autocheckpoint", "0");
        }
        let pool = self.open_pool(options).await?;
        Ok(self.build(pool))
    }
}

/// SQLite's type affinity of a declared column type (section 3.1 of its
/// datatype documentation): what decides how values are stored.
fn affinity(declared: &str) -> &'static str {
    let declared = declared.to_ascii_uppercase();
    if declared.contains("INT") {
        "INTEGER"
    } else if ["CHAR", "CLOB", "TEXT"]
        .iter()
        .any(|t| declared.contains(t))
    {
        "TEXT"
    } else if declared.contains("BLOB") || declared.is_empty() {
        "BLOB"
    } else if ["REAL", "FLOA", "DOUB"]
        .iter()
        .any(|t| declared.contains(t))
    {
        "REAL"
    } else {
        "NUMERIC"
    }
}

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

impl Dialect for Sqlite {
    type Database = sqlx::Sqlite;
    type Upkeep = Option<Checkpoints>;
    const QUOTE: char = '"';
    const ID_TYPE: &'static str = "BLOB";
    const TIME_TYPE: &'static str = "INTEGER";

    fn push_placeholder(sql: &mut String, _index: usize, _ty: Option<SqlType>) {
        sql.push('?');
    }

    fn column_type(ty: SqlType) -> &'static str {
        match ty {
            SqlType::Bool => "BOOLEAN",
            SqlType::I16 | SqlType::I32 | SqlType::I64 | SqlType::U64 => "INTEGER",
            SqlType::F32 | SqlType::F64 => "REAL",
            SqlType::Text | SqlType::Json => "TEXT",
            SqlType::Timestamp | SqlType::DateTime | SqlType::Date => "TEXT",
            SqlType::Bytes | SqlType::Uuid => "BLOB",
        }
    }

    // `create_table` and `purge_statement`: the defaults. A rowid table, not
    // WITHOUT ROWID: rows stay in the order they were created, so the
    // sessions active at one time share pages and a grouped UPDATE writes a
    // few pages, not one per session. The random 32-byte key lives in its own
    // index, which UPDATEs (other than a renew) never touch.

    fn type_matches(expected: &str, found: &str) -> bool {
        affinity(expected) == affinity(found)
    }

    async fn table_columns(
        pool: &Pool<sqlx::Sqlite>,
        table: &str,
    ) -> Result<Vec<FoundColumn>, sqlx::Error> {
        let rows = sqlx::query(r#"SELECT "name", "type", "notnull", "dflt_value" IS NOT NULL FROM pragma_table_info(?)"#)
            .bind(table)
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(FoundColumn {
                    name: row.try_get(0)?,
                    declared_type: row.try_get(1)?,
                    nullable: !row.try_get::<bool, _>(2)?,
                    has_default: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn index_names(
        pool: &Pool<sqlx::Sqlite>,
        table: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(r#"SELECT "name" FROM pragma_index_list(?)"#)
            .bind(table)
            .fetch_all(pool)
            .await
    }

    fn bind(args: &mut SqliteArguments, value: Value<'_>) -> Result<(), BoxDynError> {
        match value {
            Value::Null(_) => args.add(Option::<i64>::None),
            Value::Bool(v) => args.add(v),
            Value::I16(v) => args.add(v),
            Value::I32(v) => args.add(v),
            Value::I64(v) => args.add(v),
            Value::U64(v) => args.add(i64::try_from(v)?),
            Value::F32(v) => args.add(v),
            Value::F64(v) => args.add(v),
            Value::Text(v) | Value::Json(v) => args.add(v.into_owned()),
            Value::Bytes(v) => args.add(v.into_owned()),
            Value::Timestamp(v) => args.add(v),
            Value::DateTime(v) => args.add(v),
            Value::Date(v) => args.add(v),
            Value::Uuid(v) => args.add(v),
        }
    }

    fn bind_id(args: &mut SqliteArguments, id: &SessionId) -> Result<(), BoxDynError> {
        args.add(id.as_bytes().to_vec())
    }

    fn bind_time(args: &mut SqliteArguments, time: DateTime<Utc>) -> Result<(), BoxDynError> {
        args.add(millis(time))
    }

    fn check_value(value: &Value<'_>) -> Result<(), String> {
        match value {
            // SQLite stores a NaN as NULL: it would come back as no value.
            Value::F32(v) if v.is_nan() => Err("SQLite stores NaN as NULL".into()),
            Value::F64(v) if v.is_nan() => Err("SQLite stores NaN as NULL".into()),
            _ => Ok(()),
        }
    }

    fn bind_i64(args: &mut SqliteArguments, value: i64) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn decode(row: &SqliteRow, index: usize, ty: SqlType) -> Result<Value<'static>, sqlx::Error> {
        // A NULL in any column is read first, whatever the declared type.
        if row
            .try_get_raw(index)
            .map(|raw| sqlx::ValueRef::is_null(&raw))?
        {
            return Ok(Value::Null(ty));
        }
        Ok(match ty {
            SqlType::Bool => Value::Bool(row.try_get(index)?),
            SqlType::I16 => Value::I16(row.try_get(index)?),
            SqlType::I32 => Value::I32(row.try_get(index)?),
            SqlType::I64 => Value::I64(row.try_get(index)?),
            SqlType::U64 => {
                Value::U64(u64::try_from(row.try_get::<i64, _>(index)?).map_err(|e| {
                    sqlx::Error::ColumnDecode {
                        index: index.to_string(),
                        source: Box::new(e),
                    }
                })?)
            }
            SqlType::F32 => Value::F32(row.try_get(index)?),
            SqlType::F64 => Value::F64(row.try_get(index)?),
            SqlType::Text => Value::Text(Cow::Owned(row.try_get(index)?)),
            SqlType::Json => Value::Json(Cow::Owned(row.try_get(index)?)),
            SqlType::Bytes => Value::Bytes(Cow::Owned(row.try_get(index)?)),
            SqlType::Timestamp => Value::Timestamp(row.try_get(index)?),
            SqlType::DateTime => Value::DateTime(row.try_get(index)?),
            SqlType::Date => Value::Date(row.try_get(index)?),
            SqlType::Uuid => Value::Uuid(row.try_get(index)?),
        })
    }

    fn decode_time(row: &SqliteRow, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        let millis: i64 = row.try_get(index)?;
        DateTime::from_timestamp_millis(millis).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!("{millis} is not a valid timestamp in milliseconds").into(),
        })
    }

    fn decode_i64(row: &SqliteRow, index: usize) -> Result<i64, sqlx::Error> {
        row.try_get(index)
    }

    sqlx_execution!(sqlx::Sqlite);

    fn push_returning_id(sql: &mut String, _table: &str) {
        // SQLite's RETURNING names the updated table's columns unqualified.
        sql.push_str("RETURNING \"id\"");
    }

    /// Its connections run in-process, one writer at a time, and a commit on
    /// one connection empties the page cache of every other: one connection
    /// keeps its cache and halves the hand-offs between threads.
    fn lanes() -> Lanes {
        Lanes::Shared
    }

    fn upkeep(options: &StoreOptions) -> Option<Checkpoints> {
        options
            .background_checkpoints
            .unwrap_or(false)
            .then(Checkpoints::new)
    }

    fn after_commit(core: &Arc<Core<Self>>) {
        checkpoint::checkpoint_if_due(core);
    }
}

#[cfg(test)]
mod tests {
    use super::affinity;

    #[test]
    fn affinity_follows_sqlites_rules_in_order() {
        for (declared, expected) in [
            ("INTEGER", "INTEGER"),
            ("BIGINT", "INTEGER"),
            ("POINT", "INTEGER"), // "INT" wins, as in SQLite
            ("VARCHAR(20)", "TEXT"),
            ("CLOB", "TEXT"),
            ("BLOB", "BLOB"),
            ("", "BLOB"),
            ("DOUBLE PRECISION", "REAL"),
            ("FLOAT", "REAL"),
            ("BOOLEAN", "NUMERIC"),
            ("DATETIME", "NUMERIC"),
        ] {
            assert_eq!(affinity(declared), expected, "{declared}");
        }
    }
}
