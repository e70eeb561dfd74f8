//! The MySQL / MariaDB dialect.
//!
//! Library timestamps are `DATETIME(6)` in UTC (sqlx binds `DateTime<Utc>` as
//! its UTC wall time), so the connection's time zone never matters.

use std::{borrow::Cow, collections::HashMap, fmt::Write as _};

use chrono::{DateTime, Datelike as _, NaiveDate, NaiveDateTime, Utc};
use sqlx::{
    Arguments as _, Pool, Row as _,
    error::BoxDynError,
    mysql::{MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlRow},
};
use uuid::Uuid;

use super::decode_nullable;
use super::{
    SqlStore, SqlStoreBuilder,
    backend::{Dialect, sqlx_execution},
    group::MergedRow,
    migrate::FoundColumn,
    options::StoreOptions,
    statements::{
        MergedShape, Placeholders, StatementKey, Statements, bucket, decode_id, merged_assignments,
        merged_value_column, padded, quote,
    },
};
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
    /// Opens a pool with the default options; the same as
    /// `MySqlStore::builder().connect(url)`.
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
        Self::builder().connect(url).await
    }
}

impl<T: SessionData> SqlStoreBuilder<MySql, T> {
    /// Opens the pool at `url` with the builder's options.
    pub async fn connect(self, url: &str) -> Result<SqlStore<MySql, T>, StoreError> {
        self.connect_with(url.parse()?).await
    }

    /// Opens the pool with these connect options (TLS, time-outs,
    /// statement logging, ...) and the builder's pool options.
    pub async fn connect_with(
        self,
        options: MySqlConnectOptions,
    ) -> Result<SqlStore<MySql, T>, StoreError> {
        let pool = self.open_pool(options).await?;
        Ok(self.build(pool))
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

impl Dialect for MySql {
    type Database = sqlx::MySql;
    type Upkeep = ();
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

    async fn index_names(
        pool: &Pool<sqlx::MySql>,
        table: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table)
        .fetch_all(pool)
        .await
    }

    /// LONGTEXT and LONGBLOB columns are indexed by their first 255
    /// characters (bytes): enough to tell user ids, emails or names apart.
    fn index_column(quoted: &str, ty: SqlType) -> String {
        match ty {
            SqlType::Text | SqlType::Bytes => format!("{quoted}(255)"),
            _ => quoted.to_owned(),
        }
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
            // As DATETIME, the column's type: sqlx would bind a
            // DateTime<Utc> as a TIMESTAMP, whose range ends in 1970 and
            // 2038 (MariaDB turns a value outside it into NULL or refuses it).
            Value::Timestamp(v) => args.add(v.naive_utc()),
            Value::DateTime(v) => args.add(v),
            Value::Date(v) => args.add(v),
            Value::Uuid(v) => args.add(v),
        }
    }

    fn bind_id(args: &mut MySqlArguments, id: &SessionId) -> Result<(), BoxDynError> {
        args.add(&id.as_bytes()[..])
    }

    fn bind_time(args: &mut MySqlArguments, time: DateTime<Utc>) -> Result<(), BoxDynError> {
        // A library time past DATETIME's last instant (a lifetime of
        // centuries) is that instant: the session lives as long as it can.
        args.add(time.naive_utc().min(datetime_max()))
    }

    /// Locks the value's range of the column's index (next-key locks), so
    /// that another transaction's insert of the same value waits.
    fn cap_lock(
        statements: &Statements<Self>,
        field: usize,
        key: &Value<'static>,
    ) -> Option<(std::sync::Arc<str>, Vec<super::group::Param>)> {
        let schema = statements.schema();
        let sql = statements.cached(StatementKey::Dialect(CAP_LOCK, None, field), || {
            format!(
                "SELECT `id` FROM {} WHERE {} = ? FOR UPDATE",
                quote::<MySql>(schema.table),
                quote::<MySql>(schema.column(field).name)
            )
        });
        Some((sql, vec![super::group::Param::Value(key.clone())]))
    }

    fn check_value(value: &Value<'_>) -> Result<(), String> {
        let in_range = |year: i32| (1000..=9999).contains(&year);
        match value {
            Value::Timestamp(v) if !in_range(v.year()) => Err(format!(
                "{v} is outside MySQL's DATETIME range (years 1000 to 9999)"
            )),
            Value::DateTime(v) if !in_range(v.year()) => Err(format!(
                "{v} is outside MySQL's DATETIME range (years 1000 to 9999)"
            )),
            Value::Date(v) if !in_range(v.year()) => Err(format!(
                "{v} is outside MySQL's DATE range (years 1000 to 9999)"
            )),
            Value::F32(v) if !v.is_finite() => Err(format!(
                "{v} is not a number MySQL and MariaDB can store (no NaN or infinity)"
            )),
            Value::F64(v) if !v.is_finite() => Err(format!(
                "{v} is not a number MySQL and MariaDB can store (no NaN or infinity)"
            )),
            _ => Ok(()),
        }
    }

    fn bind_i64(args: &mut MySqlArguments, value: i64) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn decode(row: &MySqlRow, index: usize, ty: SqlType) -> Result<Value<'static>, sqlx::Error> {
        match ty {
            SqlType::Bool => decode_nullable(row, index, ty, Value::Bool),
            SqlType::I16 => decode_nullable(row, index, ty, Value::I16),
            SqlType::I32 => decode_nullable(row, index, ty, Value::I32),
            SqlType::I64 => decode_nullable(row, index, ty, Value::I64),
            SqlType::U64 => decode_nullable(row, index, ty, Value::U64),
            SqlType::F32 => decode_nullable(row, index, ty, Value::F32),
            SqlType::F64 => decode_nullable(row, index, ty, Value::F64),
            SqlType::Text => {
                decode_nullable(row, index, ty, |v: String| Value::Text(Cow::Owned(v)))
            }
            SqlType::Json => {
                // MySQL reports JSON columns as JSON, MariaDB as LONGTEXT: both are text.
                let text: Option<String> = row.try_get_unchecked(index)?;
                Ok(text.map_or(Value::Null(ty), |v| Value::Json(Cow::Owned(v))))
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

    fn decode_time(row: &MySqlRow, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        row.try_get(index)
    }

    fn decode_i64(row: &MySqlRow, index: usize) -> Result<i64, sqlx::Error> {
        row.try_get(index)
    }

    sqlx_execution!(sqlx::MySql);

    fn upkeep(_: &StoreOptions) {}

    /// MySQL and MariaDB have no `UPDATE … RETURNING`: lock the rows, check
    /// each, and update the passing ones in one statement.
    async fn merged_update(
        connection: &mut MySqlConnection,
        statements: &Statements<Self>,
        rows: &[&MergedRow],
        alone: bool,
    ) -> Result<Vec<SessionId>, sqlx::Error> {
        if !alone {
            return locked_update(connection, statements, rows).await;
        }
        // The lock must be held until the UPDATE: a transaction of its own.
        let mut transaction = sqlx::Connection::begin(connection).await?;
        let updated = locked_update(&mut transaction, statements, rows).await?;
        transaction.commit().await?;
        Ok(updated)
    }
}

/// The last instant a `DATETIME(6)` holds.
fn datetime_max() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_micro_opt(23, 59, 59, 999_999))
        .unwrap_or(NaiveDateTime::MAX)
}

/// Kinds of this dialect's own cached statements ([`StatementKey::Dialect`]).
const LOCK_ROWS: u8 = 0;
const JOIN_UPDATE: u8 = 1;
const CAP_LOCK: u8 = 2;

/// The merged update as `SELECT … FOR UPDATE` of the rows, a check of each
/// row's expiry and version, then one UPDATE of those that pass; answers
/// the ids updated. Runs inside a transaction.
async fn locked_update(
    connection: &mut MySqlConnection,
    statements: &Statements<MySql>,
    rows: &[&MergedRow],
) -> Result<Vec<SessionId>, sqlx::Error> {
    let Some(last) = rows.last() else {
        return Ok(Vec::new());
    };
    let count = bucket(rows.len());
    let select = statements.cached(StatementKey::Dialect(LOCK_ROWS, None, count), || {
        lock_rows_statement(statements.schema(), count)
    });
    let mut args = MySqlArguments::default();
    // Padded to the bucket by repeating the last id: `IN` ignores repeats.
    for row in padded(rows.iter(), last) {
        MySql::bind_id(&mut args, &row.id).map_err(sqlx::Error::Encode)?;
    }
    let mut current = HashMap::with_capacity(rows.len());
    for row in MySql::fetch_all(connection, select, args).await? {
        let version = MySql::decode_i64(&row, 1)?;
        let expires_at = MySql::decode_time(&row, 2)?;
        current.insert(decode_id::<MySql>(&row, 0)?, (version, expires_at));
    }
    let passing: Vec<&MergedRow> = rows
        .iter()
        .copied()
        .filter(|row| {
            current.get(&row.id).is_some_and(|(version, expires_at)| {
                *expires_at > row.now
                    && row
                        .expected_version
                        .is_none_or(|expected| expected == *version)
            })
        })
        .collect();
    let Some(first) = passing.first() else {
        return Ok(Vec::new());
    };
    let shape = first.shape();
    let count = bucket(passing.len());
    let update = statements.cached(
        StatementKey::Dialect(JOIN_UPDATE, Some(shape), count),
        || join_update_statement(statements.schema(), shape, count),
    );
    let mut args = MySqlArguments::default();
    // Padded to the bucket with rows that match nothing.
    let padding = first.padding();
    for row in padded(passing.iter().copied(), &padding) {
        MySql::bind_id(&mut args, &row.id).map_err(sqlx::Error::Encode)?;
        if let Some(expires_at) = row.expires_at {
            MySql::bind_time(&mut args, expires_at).map_err(sqlx::Error::Encode)?;
        }
        row.bind_values::<MySql>(&mut args)
            .map_err(sqlx::Error::Encode)?;
    }
    MySql::execute(connection, update, args).await?;
    Ok(passing.iter().map(|row| row.id).collect())
}

/// `SELECT id, version, expires_at FROM t WHERE id IN (<count>) FOR UPDATE`.
fn lock_rows_statement(schema: Schema, count: usize) -> String {
    let mut sql = format!(
        "SELECT `id`, `version`, `expires_at` FROM {} WHERE `id` IN (",
        quote::<MySql>(schema.table)
    );
    Placeholders::<MySql>::new().push_list(&mut sql, count);
    sql.push_str(") FOR UPDATE");
    sql
}

/// `UPDATE t JOIN (SELECT ? AS __id, … UNION ALL SELECT ?, …) AS v ON t.id =
/// v.__id SET …` of `count` rows of `shape`.
fn join_update_statement(schema: Schema, shape: MergedShape, count: usize) -> String {
    let table = quote::<MySql>(schema.table);
    let mut columns = vec![quote::<MySql>("__id")];
    if shape.moves_expiry {
        columns.push(quote::<MySql>("__expires_at"));
    }
    columns.extend(shape.dirty.iter().map(merged_value_column::<MySql>));
    let mut placeholders = Placeholders::<MySql>::new();
    let mut sql = format!("UPDATE {table} JOIN (");
    for row in 0..count {
        sql.push_str(if row == 0 {
            "SELECT "
        } else {
            " UNION ALL SELECT "
        });
        for (position, name) in columns.iter().enumerate() {
            if position > 0 {
                sql.push_str(", ");
            }
            placeholders.push(&mut sql, None);
            if row == 0 {
                let _ = write!(sql, " AS {name}");
            }
        }
    }
    let _ = write!(
        sql,
        ") AS v ON {table}.`id` = v.`__id` SET {}",
        merged_assignments::<MySql>(schema, shape, &format!("{table}."))
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_display_widths_are_ignored_but_boolean_stays() {
        assert_eq!(normalize("int(11)"), "int");
        assert_eq!(normalize("BIGINT(20) UNSIGNED"), "bigint unsigned");
        assert_eq!(normalize("smallint(6)"), "smallint");
        assert_eq!(normalize("tinyint(1)"), "tinyint(1)");
        assert_eq!(normalize("datetime(6)"), "datetime(6)");
        assert!(MySql::type_matches("BOOLEAN", "tinyint(1)"));
        assert!(MySql::type_matches("JSON", "longtext"), "MariaDB's JSON");
        assert!(MySql::type_matches(
            "BIGINT UNSIGNED",
            "bigint(20) unsigned"
        ));
        assert!(!MySql::type_matches("INT", "bigint(20)"));
    }

    #[test]
    fn the_locked_update_joins_one_select_per_row() {
        const COLUMNS: [crate::schema::ColumnDef; 1] = [crate::schema::ColumnDef {
            name: "count",
            field: "count",
            sql_type: SqlType::I64,
            nullable: false,
            indexed: false,
        }];
        let schema = Schema {
            table: "visits",
            struct_name: "Visit",
            columns: &COLUMNS,
        };
        let mut dirty = crate::data::DirtyFields::NONE;
        dirty.insert(0);
        let shape = MergedShape {
            dirty,
            moves_expiry: true,
        };
        assert_eq!(
            join_update_statement(schema, shape, 2),
            "UPDATE `visits` JOIN (SELECT ? AS `__id`, ? AS `__expires_at`, ? AS `c0` UNION ALL SELECT ?, ?, ?) AS v ON `visits`.`id` = v.`__id` SET `visits`.`count` = v.`c0`, `visits`.`version` = `visits`.`version` + 1, `visits`.`expires_at` = v.`__expires_at`"
        );
        assert_eq!(
            lock_rows_statement(schema, 2),
            "SELECT `id`, `version`, `expires_at` FROM `visits` WHERE `id` IN (?, ?) FOR UPDATE"
        );
    }
}
