//! Stores on SQL databases through sqlx: one table per session struct, one
//! column per field.
//!
//! [`SqlStore`] is the public face: its constructors, `migrate()` and its
//! [`SessionStore`] implementation. Behind it, each concept has a file:
//! [`Backend`] and the dialect trait (`backend.rs`), statement text
//! (`statements.rs`), `migrate.rs`, group commit and grouped loads
//! (`group/`), and one module per database holding all of its differences
//! (`sqlite/`, `postgres.rs`, `mysql.rs`).

mod backend;
mod group;
mod health;
mod migrate;
#[cfg(feature = "mysql")]
mod mysql;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod state;
mod statements;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, Utc};
use sqlx::Pool;

#[cfg(feature = "mysql")]
pub use self::mysql::MySql;
pub use self::options::SqlStoreBuilder;
#[cfg(feature = "postgres")]
pub use self::postgres::Postgres;
#[cfg(feature = "sqlite")]
pub use self::sqlite::Sqlite;
pub(crate) use self::state::Core;
pub use backend::Backend;
use backend::{Arguments, Dialect};
use group::{LoadQueue, Param, Write};
use options::StoreOptions;
use statements::Statements;

use super::{Record, SessionStore, Update};
use crate::{data::SessionData, error::StoreError, token::SessionId, value::Value};

/// Rows deleted per statement by [`SqlStore::purge_expired`], so a large
/// backlog never holds locks for long.
const PURGE_BATCH: i64 = 1000;

/// A session store on a SQL database; use the aliases
/// [`SqliteStore`](crate::SqliteStore), [`PgStore`](crate::PgStore) and
/// [`MySqlStore`](crate::MySqlStore).
///
/// Clones share the pool, the statements and the group-commit queues.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # async fn run() -> Result<(), axum_typed_session::StoreError> {
/// use axum_typed_session::{Session, SessionConfig, SessionLayer, SqliteStore};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// let store = SqliteStore::<Visit>::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let layer = SessionLayer::new(store, SessionConfig::default());
/// # Ok(()) }
/// ```
pub struct SqlStore<B: Backend, T> {
    core: Arc<Core<B>>,
    /// Loads waiting to share one `SELECT … WHERE id IN (…)`.
    loads: Arc<Mutex<LoadQueue<T>>>,
}

impl<B: Backend, T> Clone for SqlStore<B, T> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            loads: self.loads.clone(),
        }
    }
}

impl<B: Backend, T> std::fmt::Debug for SqlStore<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("table", &self.core.statements.schema().table)
            .field("group_commit", &self.core.options.group_commit)
            .field("pool_size", &self.core.pool.size())
            .finish_non_exhaustive()
    }
}

/// How many writes a store made, and in how many commits: with group
/// commit under concurrent load, fewer commits than writes.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStats {
    /// INSERTs and UPDATEs.
    pub writes: u64,
    /// Commits that held them.
    pub commits: u64,
}

impl<B: Backend, T: SessionData> SqlStore<B, T> {
    /// A store on an existing pool, with the default options (group commit
    /// on). Call [`migrate`](Self::migrate) (or run
    /// [`create_table_sql`](Self::create_table_sql) yourself) before serving.
    pub fn new(pool: Pool<B::Database>) -> Self {
        Self::builder().build(pool)
    }

    /// Options for a store before it exists; see [`SqlStoreBuilder`].
    pub fn builder() -> SqlStoreBuilder<B, T> {
        SqlStoreBuilder::new()
    }

    fn from_parts(pool: Pool<B::Database>, options: StoreOptions) -> Self {
        Self {
            core: Arc::new(Core {
                pool,
                statements: Statements::new(T::SCHEMA),
                upkeep: B::upkeep(&options),
                options,
                writes: Mutex::default(),
                health: health::Health::default(),
                tickets: AtomicU64::new(0),
                written: AtomicU64::new(0),
                commits: AtomicU64::new(0),
            }),
            loads: Arc::default(),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool<B::Database> {
        &self.core.pool
    }

    /// Writes and commits so far. Not public API.
    #[doc(hidden)]
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            writes: self.core.written.load(Ordering::Relaxed),
            commits: self.core.commits.load(Ordering::Relaxed),
        }
    }

    /// The cached text of the lone UPDATE `update` needs. Not public API.
    #[cfg(feature = "_internals")]
    #[doc(hidden)]
    pub fn cached_update_statement(&self, update: &Update) -> Arc<str> {
        self.core.statements.update(update)
    }

    /// The text of the query by field `field`. Not public API.
    #[cfg(feature = "_internals")]
    #[doc(hidden)]
    pub fn find_by_statement(&self, field: usize) -> Arc<str> {
        self.core.statements.find_by(field)
    }

    /// The DDL that creates this struct's table, its `expires_at` index and
    /// an index per `#[session(index)]` field, for people who run their own
    /// migrations.
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")] {
    /// use axum_typed_session::{Session, SqliteStore};
    ///
    /// #[derive(Session, Default)]
    /// #[session(table = "visits")]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let ddl = SqliteStore::<Visit>::create_table_sql();
    /// assert!(ddl[0].starts_with(r#"CREATE TABLE IF NOT EXISTS "visits""#));
    /// assert!(ddl[0].contains(r#""count" INTEGER NOT NULL"#));
    /// # }
    /// ```
    pub fn create_table_sql() -> Vec<String> {
        migrate::create_table_sql::<B, T>()
    }

    /// Creates the table and its index if they do not exist; on an existing
    /// table, checks every column against the struct and adds what is
    /// missing, before the app serves a request.
    ///
    /// A missing field column is added when it is nullable (`Option`) or when
    /// the field's `Default` value can be written as a SQL default (booleans,
    /// numbers, text and JSON without backslashes). Anything else that does
    /// not match — a column of another type or nullability, a missing
    /// library column, an extra `NOT NULL` column without a default that
    /// would make every INSERT fail — is a [`StoreError::Schema`] naming the
    /// table and, for each column, the expected and the found type. All
    /// problems are reported at once; nothing is altered when there is one.
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")]
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{Session, SqliteStore};
    ///
    /// #[derive(Session, Default)]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let store = SqliteStore::<Visit>::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// store.migrate().await?; // verifies, changes nothing
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        for statement in migrate::table_sql::<B, T>() {
            self.execute(statement.into(), Arguments::<B>::default())
                .await?;
        }
        let found = B::table_columns(&self.core.pool, T::SCHEMA.table).await?;
        for statement in migrate::reconcile::<B, T>(&found)? {
            self.execute(statement.into(), Arguments::<B>::default())
                .await?;
        }
        // After the columns: an index may be on one just added.
        let existing = B::index_names(&self.core.pool, T::SCHEMA.table).await?;
        for (name, statement) in migrate::field_indexes::<B>(T::SCHEMA) {
            if !existing
                .iter()
                .any(|found| found.eq_ignore_ascii_case(&name))
            {
                self.execute(statement.into(), Arguments::<B>::default())
                    .await?;
            }
        }
        Ok(())
    }

    /// Runs one statement on a pooled connection: the rows it affected.
    async fn execute(&self, sql: Arc<str>, args: Arguments<B>) -> Result<u64, StoreError> {
        let mut connection = self.core.acquire().await?;
        B::execute(&mut connection, sql, args)
            .await
            .map_err(|error| self.core.failed(error))
    }

    /// A lone UPDATE's parameters, in the order of its statement.
    fn update_params(id: &SessionId, data: &T, update: &Update) -> Result<Vec<Param>, StoreError> {
        let mut params = Vec::with_capacity(update.dirty.iter().count() + 6);
        for index in update.dirty.iter() {
            params.push(Param::Value(encode_for::<B, T>(data, index)?));
        }
        params.extend(update.expires_at.map(Param::Time));
        params.extend(
            update
                .remember
                .map(|remember| Param::Value(Value::Bool(remember))),
        );
        params.extend(update.new_id.map(Param::Id));
        params.push(Param::Id(*id));
        params.push(Param::Time(update.now));
        params.extend(update.expected_version.map(Param::I64));
        Ok(params)
    }

    /// `write`, with the caps it must enforce: those of fields it sets
    /// (`dirty`; every field for an insert) to a value.
    fn capped(
        &self,
        write: Write,
        data: &T,
        keep: SessionId,
        dirty: Option<crate::data::DirtyFields>,
    ) -> Result<Write, StoreError> {
        let caps: Vec<group::Cap> = super::capped_values(&self.core.options.caps, data, dirty)?
            .into_iter()
            .map(|(field, max, key)| group::Cap {
                field,
                key,
                keep,
                max,
            })
            .collect();
        Ok(if caps.is_empty() {
            write
        } else {
            Write::Capped(Box::new(write), caps)
        })
    }

    /// An UPDATE that can share a statement with others of its shape.
    fn merged_row(
        id: &SessionId,
        data: &T,
        update: &Update,
    ) -> Result<group::MergedRow, StoreError> {
        let values = update
            .dirty
            .iter()
            .map(|index| encode_for::<B, T>(data, index))
            .collect::<Result<_, StoreError>>()?;
        Ok(group::MergedRow {
            dirty: update.dirty,
            id: *id,
            expires_at: update.expires_at,
            now: update.now,
            expected_version: update.expected_version,
            values,
        })
    }
}

/// The SQLite page cache per connection, in KiB. Not public API.
#[cfg(all(feature = "sqlite", feature = "_internals"))]
pub const SQLITE_PAGE_CACHE_KIB: u32 = sqlite::PAGE_CACHE_KIB;

/// The text of the lone UPDATE `update` needs, as `SqlStore` builds it
/// (uncached). Not public API.
#[cfg(feature = "_internals")]
pub fn update_statement_text<B: Backend, T: SessionData>(update: &Update) -> String {
    statements::build_update::<B>(T::SCHEMA, statements::UpdateShape::of(update))
}

/// Field `index` of `data` as the column value to bind, refused (naming
/// the field) if the database cannot store it.
fn encode_for<B: Dialect, T: SessionData>(
    data: &T,
    index: usize,
) -> Result<Value<'static>, StoreError> {
    let value = data.encode_column(index)?.into_owned();
    B::check_value(&value).map_err(|problem| StoreError::Unstorable {
        struct_name: T::SCHEMA.struct_name,
        field: T::SCHEMA.column(index).field,
        problem,
    })?;
    Ok(value)
}

/// Turns a bind failure into the error a store reports.
fn bound(result: Result<(), sqlx::error::BoxDynError>) -> Result<(), StoreError> {
    result.map_err(|error| sqlx::Error::Encode(error).into())
}

/// Reads column `index` as `Option<V>`: NULL becomes `Value::Null(ty)`,
/// anything else `wrap(value)`. For the backends whose drivers decode
/// nullable columns through `Option`.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
fn decode_nullable<R, V>(
    row: &R,
    index: usize,
    ty: crate::value::SqlType,
    wrap: impl FnOnce(V) -> Value<'static>,
) -> Result<Value<'static>, sqlx::Error>
where
    R: sqlx::Row,
    V: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(row
        .try_get::<Option<V>, _>(index)?
        .map_or(Value::Null(ty), wrap))
}

impl<B: Backend, T: SessionData> SessionStore<T> for SqlStore<B, T> {
    async fn load(
        &self,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        if !self.core.options.group_commit {
            // Boxed: the driver's futures are large, and every load's
            // future would otherwise carry them.
            return Box::pin(async {
                let mut connection = self.core.acquire().await?;
                self.load_one(&mut connection, id, now).await
            })
            .await;
        }
        let record = self.queued_load(id).await?;
        // A group reads with its own clock: re-check against the caller's.
        Ok(record.filter(|record| record.expires_at > now))
    }

    async fn insert(&self, record: &Record<T>) -> Result<(), StoreError> {
        let write = Write::Insert(group::insert_params(record, encode_for::<B, T>)?);
        self.write(self.capped(write, &record.data, record.id, None)?)
            .await?;
        Ok(())
    }

    async fn update(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError> {
        if update.is_empty() {
            return Ok(true);
        }
        let mergeable = update.new_id.is_none() && update.remember.is_none();
        let write = if self.core.options.group_commit && mergeable {
            Write::Merged(Self::merged_row(id, data, &update)?)
        } else {
            Write::Statement {
                sql: self.core.statements.update(&update),
                params: Self::update_params(id, data, &update)?,
            }
        };
        let written = update.new_id.unwrap_or(*id);
        let write = self.capped(write, data, written, Some(update.dirty))?;
        Ok(self.write(write).await? > 0)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut args = Arguments::<B>::default();
        bound(B::bind_id(&mut args, id))?;
        // Boxed: a destroy is rare, and the driver's future would make
        // the layer's per-request future as large as itself.
        Box::pin(self.execute(self.core.statements.delete.clone(), args)).await?;
        Ok(())
    }

    fn events(&self) -> Option<&crate::events::SessionEvents> {
        self.core.options.events.as_ref()
    }

    fn caps(&self) -> &[(usize, u32)] {
        &self.core.options.caps
    }

    async fn find_by(
        &self,
        field: usize,
        key: Value<'static>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Record<T>>, StoreError> {
        let mut args = Arguments::<B>::default();
        bound(B::bind(&mut args, key))?;
        bound(B::bind_time(&mut args, now))?;
        let mut connection = self.core.acquire().await?;
        let rows = B::fetch_all(&mut connection, self.core.statements.find_by(field), args)
            .await
            .map_err(|error| self.core.failed(error))?;
        let id_column = statements::LOADED_LIBRARY_COLUMNS + T::SCHEMA.columns.len();
        rows.iter()
            .map(|row| {
                let id = statements::decode_id::<B>(row, id_column)?;
                Self::decode_record(row, id)
            })
            .collect()
    }

    async fn delete_by(
        &self,
        field: usize,
        key: Value<'static>,
        except: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        let mut args = Arguments::<B>::default();
        bound(B::bind(&mut args, key))?;
        if let Some(except) = &except {
            bound(B::bind_id(&mut args, except))?;
        }
        let sql = self.core.statements.delete_by(field, except.is_some());
        self.execute(sql, args).await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let mut args = Arguments::<B>::default();
            bound(B::bind_time(&mut args, now))?;
            bound(B::bind_i64(&mut args, PURGE_BATCH))?;
            let deleted = self
                .execute(self.core.statements.purge.clone(), args)
                .await?;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}
