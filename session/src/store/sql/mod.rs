//! Stores on SQL databases through sqlx: one table per session struct, one
//! column per field.
//!
//! [`SqlStore`] holds what is common: the statements (built once per struct,
//! UPDATEs once per set of dirty columns), the write protocol with its group
//! commit, and `migrate()`.
//! Each [`Backend`] module holds all of one dialect's differences: quoting,
//! placeholders, column types, binding and decoding.

use std::{
    collections::HashMap,
    fmt::Write as _,
    future::Future,
    marker::PhantomData,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use sqlx::{Database, Pool, pool::PoolConnection};
use tokio::sync::oneshot;

use super::{Record, SessionStore, Update};
use crate::{
    data::{DirtyFields, SessionData},
    error::StoreError,
    schema::{LIBRARY_COLUMNS, Schema},
    sync::{lock, read, write},
    token::SessionId,
    value::{SqlType, Value},
};

/// The [`Backend`] methods that only run statements: the same for every
/// dialect, but each names its own sqlx types (sqlx has no trait for
/// `rows_affected`, and generic executor bounds would have to be repeated at
/// every caller). Expanded inside each backend's `impl Backend`.
macro_rules! sqlx_execution {
    ($backend:ty, $db:ty, $connection:ty, $arguments:ty, $row:ty) => {
        async fn execute(
            pool: &sqlx::Pool<$db>,
            sql: std::sync::Arc<str>,
            args: $arguments,
        ) -> Result<u64, sqlx::Error> {
            let result = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(pool)
                .await?;
            Ok(result.rows_affected())
        }

        async fn execute_batch(
            connection: &mut $connection,
            mut items: Vec<super::BatchItem<$backend>>,
        ) -> Result<Vec<super::BatchResult>, sqlx::Error> {
            fn session_id(
                row: &$row,
                index: usize,
            ) -> Result<$crate::token::SessionId, sqlx::Error> {
                use sqlx::Row as _;
                let bytes: Vec<u8> = row.try_get(index)?;
                let bytes: [u8; 32] = bytes.try_into().map_err(|_| sqlx::Error::ColumnDecode {
                    index: index.to_string(),
                    source: "a session id is 32 bytes".into(),
                })?;
                Ok($crate::token::SessionId::from_bytes(bytes))
            }

            /// One step, on a pooled connection or in the group's transaction.
            async fn run(
                connection: &mut $connection,
                item: super::BatchItem<$backend>,
            ) -> Result<super::BatchResult, sqlx::Error> {
                use sqlx::Row as _;
                match item {
                    super::BatchItem::Statement { sql, args } => {
                        let result = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                            .execute(connection)
                            .await?;
                        Ok(super::BatchResult::Affected(result.rows_affected()))
                    }
                    super::BatchItem::Returning { sql, args } => {
                        let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                            .fetch_all(connection)
                            .await?;
                        let ids = rows
                            .iter()
                            .map(|row| session_id(row, 0))
                            .collect::<Result<_, _>>()?;
                        Ok(super::BatchResult::Ids(ids))
                    }
                    super::BatchItem::Locked(locked) => {
                        let rows = sqlx::query_with(
                            sqlx::AssertSqlSafe(locked.select),
                            locked.select_args,
                        )
                        .fetch_all(&mut *connection)
                        .await?;
                        let mut current = std::collections::HashMap::with_capacity(rows.len());
                        for row in &rows {
                            let version: i64 = row.try_get(1)?;
                            let expires_at = <$backend as super::Backend>::decode_time(row, 2)?;
                            current.insert(session_id(row, 0)?, (version, expires_at));
                        }
                        let passed: Vec<usize> = locked
                            .checks
                            .iter()
                            .enumerate()
                            .filter(|(_, (id, now, expected))| {
                                current.get(id).is_some_and(|(version, expires_at)| {
                                    expires_at > now
                                        && expected.is_none_or(|expected| expected == *version)
                                })
                            })
                            .map(|(position, _)| position)
                            .collect();
                        if !passed.is_empty() {
                            let (sql, args) =
                                (locked.update)(&passed).map_err(sqlx::Error::Encode)?;
                            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                                .execute(connection)
                                .await?;
                        }
                        Ok(super::BatchResult::Ids(
                            passed
                                .iter()
                                .map(|&position| locked.checks[position].0)
                                .collect(),
                        ))
                    }
                }
            }

            // A lone statement needs no transaction; a locked update does.
            if items.len() == 1 && !matches!(items[0], super::BatchItem::Locked(_)) {
                let item = items.pop().expect("one statement");
                return Ok(vec![run(connection, item).await?]);
            }
            let mut transaction = sqlx::Connection::begin(connection).await?;
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push(run(&mut transaction, item).await?);
            }
            transaction.commit().await?;
            Ok(results)
        }

        async fn fetch_all(
            connection: &mut $connection,
            sql: std::sync::Arc<str>,
            args: $arguments,
        ) -> Result<Vec<$row>, sqlx::Error> {
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .fetch_all(connection)
                .await
        }
    };
}

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Rows deleted per statement by [`SqlStore::purge_expired`], so a large
/// backlog never holds locks for long.
pub const PURGE_BATCH: i64 = 1000;

type Arguments<B> = <<B as Backend>::Database as Database>::Arguments;
type Row<B> = <<B as Backend>::Database as Database>::Row;
type Connection<B> = <<B as Backend>::Database as Database>::Connection;

/// One SQL dialect: everything that differs between databases, in one place.
///
/// Implemented by [`Sqlite`](sqlite::Sqlite), [`Postgres`](postgres::Postgres)
/// and [`MySql`](mysql::MySql); not meant to be implemented outside this crate.
pub trait Backend: Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Database: Database;
    /// Quotes identifiers.
    const QUOTE: char;

    /// Appends the placeholder of the `index`-th parameter (1-based).
    fn push_placeholder(sql: &mut String, index: usize, ty: Option<SqlType>);
    /// Appends a column in a SELECT list (a cast where decoding needs one).
    fn push_select(sql: &mut String, quoted: &str, ty: SqlType) {
        let _ = ty;
        sql.push_str(quoted);
    }
    /// The column type of a field's SQL type.
    fn column_type(ty: SqlType) -> &'static str;
    /// The column type of `id`.
    const ID_TYPE: &'static str;
    /// The column type of `expires_at` and `created_at`.
    const TIME_TYPE: &'static str;
    /// Statements that create the table and its index.
    fn create_table(schema: &Schema, columns: &str) -> Vec<String>;
    /// A statement deleting up to [`PURGE_BATCH`] expired rows; binds `now`, then the batch size.
    fn purge_statement(table: &str) -> String;

    /// Whether an existing column of type `found` (as the database spells
    /// it) is what the DDL type `expected` creates.
    fn type_matches(expected: &str, found: &str) -> bool;
    /// The columns of `table` as the database describes them (empty if it does not exist).
    fn table_columns<'a>(
        pool: &'a Pool<Self::Database>,
        table: &'a str,
    ) -> impl Future<Output = Result<Vec<FoundColumn>, sqlx::Error>> + Send + 'a;

    /// Binds a field value.
    fn bind(args: &mut Arguments<Self>, value: Value<'_>) -> Result<(), sqlx::error::BoxDynError>;
    /// Binds a session id.
    fn bind_id(args: &mut Arguments<Self>, id: &SessionId) -> Result<(), sqlx::error::BoxDynError>;
    /// Binds a library timestamp.
    fn bind_time(
        args: &mut Arguments<Self>,
        time: DateTime<Utc>,
    ) -> Result<(), sqlx::error::BoxDynError>;
    /// Binds an integer (version, batch size).
    fn bind_i64(args: &mut Arguments<Self>, value: i64) -> Result<(), sqlx::error::BoxDynError>;

    /// Decodes a field column.
    fn decode(row: &Row<Self>, index: usize, ty: SqlType) -> Result<Value<'static>, sqlx::Error>;
    /// Decodes a library timestamp column.
    fn decode_time(row: &Row<Self>, index: usize) -> Result<DateTime<Utc>, sqlx::Error>;
    /// Decodes an integer column.
    fn decode_i64(row: &Row<Self>, index: usize) -> Result<i64, sqlx::Error>;

    /// Runs a statement, returns the number of rows it affected.
    fn execute<'a>(
        pool: &'a Pool<Self::Database>,
        sql: Arc<str>,
        args: Arguments<Self>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;
    /// Runs statements in one transaction (one commit; a single statement
    /// runs on its own), returning what each did; any failure rolls all of
    /// them back.
    fn execute_batch<'a>(
        connection: &'a mut Connection<Self>,
        items: Vec<BatchItem<Self>>,
    ) -> impl Future<Output = Result<Vec<BatchResult>, sqlx::Error>> + Send + 'a;

    /// A statement that copies the write-ahead log into the database
    /// without blocking readers or writers, returning one row of three
    /// integers: busy, frames in the log, frames copied (SQLite's
    /// `PRAGMA wal_checkpoint(PASSIVE)`); `None` where the server does this.
    const CHECKPOINT: Option<&'static str> = None;
    /// The same, but one that also makes the next write start the log
    /// over, waiting for readers and holding writers back while it runs
    /// (SQLite's `RESTART` mode). A log is only started over by a write that
    /// begins after a complete checkpoint; under steady load some write is
    /// always in flight while a background checkpoint syncs, so without this
    /// the log would grow for ever.
    const CHECKPOINT_RESTART: Option<&'static str> = None;

    /// Whether grouped loads and writes take turns on one connection
    /// instead of running side by side on two. For SQLite: its connections
    /// run in-process, one writer at a time, and a commit on one connection
    /// empties the page cache of every other; one connection keeps its cache
    /// and halves the hand-offs between threads.
    const ONE_LANE: bool = false;

    /// Whether the dialect has `UPDATE … FROM … RETURNING`, so that a group
    /// of UPDATEs of one shape can be one statement.
    const MERGED_UPDATES: bool;
    /// Appends a cast of a parameter to a column type, where the dialect
    /// needs it to type a `VALUES` list.
    fn push_cast(sql: &mut String, ddl_type: &str) {
        let _ = (sql, ddl_type);
    }
    /// Appends `RETURNING <the id column of table>`.
    fn push_returning_id(sql: &mut String, table: &str);
    /// Runs a query, returns all its rows.
    fn fetch_all<'a>(
        connection: &'a mut Connection<Self>,
        sql: Arc<str>,
        args: Arguments<Self>,
    ) -> impl Future<Output = Result<Vec<Row<Self>>, sqlx::Error>> + Send + 'a;
}

/// A session store on a SQL database; use the aliases
/// [`SqliteStore`](crate::SqliteStore), [`PgStore`](crate::PgStore) and
/// [`MySqlStore`](crate::MySqlStore).
pub struct SqlStore<B: Backend, T> {
    inner: Arc<Inner<B>>,
    /// Loads waiting to share one `SELECT … WHERE id IN (…)`.
    loads: Arc<Mutex<LoadQueue<T>>>,
}

impl<B: Backend, T> Clone for SqlStore<B, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            loads: self.loads.clone(),
        }
    }
}

/// Where a load's result goes.
type Loaded<T> = oneshot::Sender<Result<Option<Record<T>>, StoreError>>;

struct LoadQueue<T> {
    waiting: Vec<(SessionId, Loaded<T>)>,
    loading: bool,
}

struct Inner<B: Backend> {
    pool: Pool<B::Database>,
    /// Writes waiting for the next group commit, and whether a committer runs.
    writes: Mutex<WriteQueue>,
    group_commit: bool,
    /// Writes and commits so far, for [`SqlStore::write_stats`].
    written: AtomicU64,
    commits: AtomicU64,
    load: Arc<str>,
    /// `SELECT <the load columns>, id FROM <table>`: the start of a grouped load.
    load_many: String,
    /// Grouped loads by number of ids.
    loads_sql: RwLock<HashMap<usize, Arc<str>>>,
    /// INSERTs by number of rows.
    inserts: RwLock<HashMap<usize, Arc<str>>>,
    delete: Arc<str>,
    purge: Arc<str>,
    /// UPDATE statements by (dirty fields, compare-and-swap, renew): a
    /// handful per app, each built once and then prepared once per connection.
    updates: RwLock<HashMap<UpdateShape, Arc<str>>>,
    /// Merged UPDATEs by (shape, rows).
    merged: RwLock<HashMap<(MergedShape, usize), Arc<str>>>,
    schema: Schema,
    /// Background checkpoints, where the store runs them ([`Backend::CHECKPOINT`]).
    checkpoints: Option<Checkpoints>,
}

/// When the next background checkpoint is due: `interval` commits after the
/// last, an interval that adapts so that each checkpoint finds about
/// [`CHECKPOINT_FRAMES`] new frames in the log.
struct Checkpoints {
    /// The commit count ([`Inner::commits`]) at which the next one is due.
    due_at: AtomicU64,
    interval: AtomicU64,
    /// Frames in the log at the last checkpoint.
    frames: AtomicU64,
    running: std::sync::atomic::AtomicBool,
}

/// New log frames (pages) a background checkpoint aims to find: half of
/// SQLite's own `wal_autocheckpoint` default. Finding the newest frame of a
/// hot page walks all of its frames in the log, so a log started over more
/// often is cheaper to read (SQLite counter 3.20-3.23x raw with 1000,
/// 3.44-3.52x with 500, alternating runs).
const CHECKPOINT_FRAMES: u64 = 500;

/// Log frames past which a checkpoint also starts the log over
/// ([`Backend::CHECKPOINT_RESTART`]); the passive ones before it have copied
/// all but the newest frames, so holding writers back is brief.
const RESTART_FRAMES: u64 = 2 * CHECKPOINT_FRAMES;

/// One step of a group commit.
pub enum BatchItem<B: Backend> {
    /// A statement; its result is the rows it affected.
    Statement {
        /// The statement.
        sql: Arc<str>,
        /// Its parameters.
        args: Arguments<B>,
    },
    /// A merged `UPDATE … RETURNING id`; its result is the ids updated.
    Returning {
        /// The statement.
        sql: Arc<str>,
        /// Its parameters.
        args: Arguments<B>,
    },
    /// For dialects without `UPDATE … RETURNING`: lock the rows, check each
    /// row's expiry and version, and update those that pass in one statement.
    Locked(LockedUpdate<B>),
}

/// A merged UPDATE done as `SELECT … FOR UPDATE`, then one UPDATE of the
/// rows that pass their checks (always inside the group's transaction).
pub struct LockedUpdate<B: Backend> {
    /// `SELECT id, version, expires_at … FOR UPDATE` of the rows.
    pub select: Arc<str>,
    /// Its parameters (the ids).
    pub select_args: Arguments<B>,
    /// Each row's id, current time and expected version.
    pub checks: Vec<(SessionId, DateTime<Utc>, Option<i64>)>,
    /// Builds the UPDATE of the rows that passed, by their position in `checks`.
    #[allow(clippy::type_complexity)]
    pub update: Box<
        dyn FnOnce(&[usize]) -> Result<(Arc<str>, Arguments<B>), sqlx::error::BoxDynError> + Send,
    >,
}

/// What one statement of a group commit did.
#[derive(Debug)]
pub enum BatchResult {
    /// Rows affected.
    Affected(u64),
    /// Ids updated (`RETURNING id`).
    Ids(Vec<SessionId>),
}

/// A write waiting for a group commit.
struct Write {
    work: Work,
    done: Done,
}

/// What a write does, kept as data (not yet bound), so that it can be
/// bound again: alone, after a group it was in failed.
enum Work {
    /// Any statement, run as it is.
    Statement { sql: Arc<str>, params: Vec<Param> },
    /// A new row (its [`insert_params`]): the group's new rows share one
    /// multi-row INSERT.
    Insert(Vec<Param>),
    /// An UPDATE that shares one statement with the group's others of its shape.
    Merged(MergedRow),
}

/// A statement parameter, bound by the backend's own encoding.
enum Param {
    Id(SessionId),
    Time(DateTime<Utc>),
    I64(i64),
    Value(Value<'static>),
}

fn bind_params<B: Backend>(
    args: &mut Arguments<B>,
    params: &[Param],
) -> Result<(), sqlx::error::BoxDynError> {
    for param in params {
        match param {
            Param::Id(id) => B::bind_id(args, id)?,
            Param::Time(time) => B::bind_time(args, *time)?,
            Param::I64(value) => B::bind_i64(args, *value)?,
            Param::Value(value) => B::bind(args, value.reborrow())?,
        }
    }
    Ok(())
}

/// A record's parameters in the column order of [`build_insert`].
fn insert_params<T: SessionData>(record: &Record<T>) -> Result<Vec<Param>, StoreError> {
    let mut params = Vec::with_capacity(LIBRARY_COLUMNS.len() + T::SCHEMA.columns.len());
    params.extend([
        Param::Id(record.id),
        Param::Time(record.expires_at),
        Param::I64(record.version),
        Param::Time(record.created_at),
        Param::Value(Value::Bool(record.remember)),
    ]);
    for index in 0..T::SCHEMA.columns.len() {
        params.push(Param::Value(record.data.encode_column(index)?.into_owned()));
    }
    Ok(params)
}

/// One row of a merged UPDATE: a plain UPDATE (no renew, no remember change).
#[derive(Clone)]
struct MergedRow {
    dirty: DirtyFields,
    id: SessionId,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    expected_version: Option<i64>,
    values: Vec<Value<'static>>,
}

struct WriteQueue {
    waiting: Vec<Write>,
    committing: bool,
}

/// Most writes one commit takes; more wait for the next. A power of two,
/// like every row count of a multi-row statement (see [`bucket`]).
const MAX_GROUP: usize = 256;

/// The row count a multi-row statement of `rows` rows is padded to: the
/// next power of two. A connection then prepares at most nine of each kind
/// of statement instead of one per group size. sqlx keeps 100 prepared
/// statements per connection, and an evicted one costs a round trip to
/// close it; on MySQL and MariaDB that close is followed by a 40 ms delayed
/// ACK, because sqlx 0.9 leaves Nagle's algorithm on (sqlx issue 4335).
fn bucket(rows: usize) -> usize {
    rows.next_power_of_two().min(MAX_GROUP)
}

/// `items`, then `filler` repeated until their count reaches its [`bucket`].
fn padded<'a, T: 'a>(
    items: impl ExactSizeIterator<Item = &'a T>,
    filler: &'a T,
) -> impl Iterator<Item = &'a T> {
    let padding = bucket(items.len()) - items.len();
    items.chain(std::iter::repeat_n(filler, padding))
}

/// The id of the rows that pad a merged UPDATE to its bucket: all zeros,
/// the SHA-256 of no token anyone can find, so it matches no row.
const PADDING_ID: SessionId = SessionId::from_bytes([0; 32]);

/// What an UPDATE statement depends on: the dirty fields, and whether it
/// moves the expiry, checks the version, moves the id, and sets `remember`.
type UpdateShape = (u64, bool, bool, bool, bool);

/// What a merged UPDATE depends on: the dirty fields and whether it moves
/// the expiry.
type MergedShape = (DirtyFields, bool);

impl MergedRow {
    fn shape(&self) -> MergedShape {
        (self.dirty, self.expires_at.is_some())
    }
}

/// Adds the parameter placeholders and binds as statements are built.
struct Params<B> {
    next: usize,
    _backend: PhantomData<B>,
}

impl<B: Backend> Params<B> {
    fn new() -> Self {
        Self {
            next: 1,
            _backend: PhantomData,
        }
    }

    fn push(&mut self, sql: &mut String, ty: Option<SqlType>) {
        B::push_placeholder(sql, self.next, ty);
        self.next += 1;
    }
}

fn quote<B: Backend>(name: &str) -> String {
    format!("{q}{name}{q}", q = B::QUOTE)
}

impl<B: Backend, T: SessionData> SqlStore<B, T> {
    /// A store on an existing pool. Call [`migrate`](Self::migrate) (or run
    /// [`create_table_sql`](Self::create_table_sql) yourself) before serving.
    pub fn new(pool: Pool<B::Database>) -> Self {
        let schema = T::SCHEMA;
        let table = quote::<B>(schema.table);

        let mut load = format!(
            "SELECT {}, {}, {}, {}",
            quote::<B>("version"),
            quote::<B>("created_at"),
            quote::<B>("expires_at"),
            quote::<B>("remember")
        );
        for column in schema.columns {
            load.push_str(", ");
            B::push_select(&mut load, &quote::<B>(column.name), column.sql_type);
        }
        let load_many = format!("{load}, {} FROM {table}", quote::<B>("id"));
        let mut params = Params::<B>::new();
        let _ = write!(load, " FROM {table} WHERE {} = ", quote::<B>("id"));
        params.push(&mut load, None);
        let _ = write!(load, " AND {} > ", quote::<B>("expires_at"));
        params.push(&mut load, None);

        let mut delete = format!("DELETE FROM {table} WHERE {} = ", quote::<B>("id"));
        Params::<B>::new().push(&mut delete, None);

        Self {
            inner: Arc::new(Inner {
                pool,
                writes: Mutex::new(WriteQueue {
                    waiting: Vec::new(),
                    committing: false,
                }),
                group_commit: true,
                written: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                load: load.into(),
                load_many,
                loads_sql: RwLock::new(HashMap::new()),
                inserts: RwLock::default(),
                delete: delete.into(),
                purge: B::purge_statement(&table).into(),
                updates: RwLock::new(HashMap::new()),
                merged: RwLock::new(HashMap::new()),
                schema,
                checkpoints: None,
            }),
            loads: Arc::new(Mutex::new(LoadQueue {
                waiting: Vec::new(),
                loading: false,
            })),
        }
    }

    /// Whether concurrent loads share one `SELECT … WHERE id IN (…)` and
    /// concurrent writes (INSERTs and UPDATEs of any sessions) are grouped
    /// into one transaction — one commit, one log flush — instead of one each
    /// (default `true`). On PostgreSQL and SQLite the group's
    /// UPDATEs of one shape are also one statement (`UPDATE … FROM (VALUES
    /// …) … RETURNING id`). Each write keeps its own expiry check and
    /// compare-and-swap result, and a request is answered only after the
    /// commit that holds its write. Call it before cloning the store.
    pub fn with_group_commit(mut self, enabled: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.group_commit = enabled;
        }
        self
    }

    /// Whether the store checkpoints the write-ahead log itself, in the
    /// background on a connection of its own, instead of leaving it to
    /// SQLite's automatic checkpoint (default `false`; [`SqliteStore::connect`]
    /// turns it on and sets `wal_autocheckpoint = 0` on its pool). The
    /// automatic checkpoint runs inside the commit that crosses the log's
    /// size limit, so every request waiting on that connection waits for the
    /// copy and its `fsync` too; the background one does not block readers
    /// or writers (`PRAGMA wal_checkpoint(PASSIVE)`). Once the log passes
    /// 1000 frames, one checkpoint also starts it over (`RESTART`: writers
    /// wait while it copies the few frames left and syncs), so the log file
    /// stays near 6 MB with 4 KiB pages. On your own pool, set
    /// `wal_autocheckpoint = 0` on its connections when you turn this on.
    /// Has no effect on PostgreSQL or MySQL. Call it before cloning the store.
    ///
    /// [`SqliteStore::connect`]: crate::SqliteStore
    pub fn with_background_checkpoints(mut self, enabled: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.checkpoints = (enabled && B::CHECKPOINT.is_some()).then(|| Checkpoints {
                due_at: AtomicU64::new(64),
                interval: AtomicU64::new(64),
                frames: AtomicU64::new(0),
                running: std::sync::atomic::AtomicBool::new(false),
            });
        }
        self
    }

    /// How many writes (INSERTs and UPDATEs) this store made, and in how
    /// many commits: with group commit under concurrent load, fewer commits.
    pub fn write_stats(&self) -> (u64, u64) {
        (
            self.inner.written.load(Ordering::Relaxed),
            self.inner.commits.load(Ordering::Relaxed),
        )
    }

    /// Runs a write, grouped with the writes of concurrent requests.
    async fn write(&self, work: Work) -> Result<u64, StoreError> {
        if !self.inner.group_commit {
            self.inner.written.fetch_add(1, Ordering::Relaxed);
            self.inner.commits.fetch_add(1, Ordering::Relaxed);
            // A group of one on a pooled connection, given back after it.
            let rows = run_group(&self.inner, &mut None, std::slice::from_ref(&work)).await?;
            return Ok(rows.first().copied().unwrap_or(0));
        }
        self.submit(work).await
    }

    /// Queues a write for the next group commit and waits for that commit.
    async fn submit(&self, work: Work) -> Result<u64, StoreError> {
        self.inner.written.fetch_add(1, Ordering::Relaxed);
        let (done, result) = oneshot::channel();
        let start_committer = {
            let mut queue = lock(&self.inner.writes);
            queue.waiting.push(Write { work, done });
            !std::mem::replace(&mut queue.committing, true)
        };
        if start_committer {
            // Its own task: a request that is cancelled (client gone) must
            // not take the commit of everybody else's writes with it.
            tokio::spawn(self.clone().serve(Lane::of_writes::<B>()));
        }
        result
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// One session by id: one SELECT.
    async fn load_one(
        &self,
        connection: &mut Connection<B>,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        let mut args = Arguments::<B>::default();
        bound(B::bind_id(&mut args, id))?;
        bound(B::bind_time(&mut args, now))?;
        // At most one row: `id` is the key.
        let rows = B::fetch_all(connection, self.inner.load.clone(), args).await?;
        rows.first()
            .map(|row| Self::decode_record(row, *id))
            .transpose()
    }

    /// A loaded row (columns as in the load statements) as a record.
    fn decode_record(row: &Row<B>, id: SessionId) -> Result<Record<T>, StoreError> {
        let columns = T::SCHEMA.columns;
        let mut values = Vec::with_capacity(columns.len());
        for (offset, column) in columns.iter().enumerate() {
            values.push(B::decode(row, 4 + offset, column.sql_type)?);
        }
        let data = T::decode_columns(&mut values.into_iter())?;
        Ok(Record {
            id,
            data,
            version: B::decode_i64(row, 0)?,
            created_at: B::decode_time(row, 1)?,
            expires_at: B::decode_time(row, 2)?,
            remember: B::decode(row, 3, SqlType::Bool)? == Value::Bool(true),
        })
    }

    /// Serves the waiting work of `lane` a group at a time until none is
    /// left: each turn commits the writes waiting, then reads the loads
    /// waiting (one `SELECT … WHERE id IN (…)`). While a group runs, the next
    /// one gathers: under load, groups grow by themselves; alone, a request
    /// is served at once.
    async fn serve(self, lane: Lane) {
        let mut held = None;
        loop {
            let (writes, loads) = {
                // Lock order, here and in `load`: loads, then writes.
                let mut loads = lock(&self.loads);
                let mut writes = lock(&self.inner.writes);
                let write_group = match lane {
                    Lane::Loads => Vec::new(),
                    Lane::Writes | Lane::Both => take_group(&mut writes.waiting),
                };
                let load_group = match lane {
                    Lane::Writes => Vec::new(),
                    Lane::Loads | Lane::Both => take_group(&mut loads.waiting),
                };
                if write_group.is_empty() && load_group.is_empty() {
                    match lane {
                        Lane::Loads => loads.loading = false,
                        Lane::Writes | Lane::Both => writes.committing = false,
                    }
                    return;
                }
                (write_group, load_group)
            };
            if !writes.is_empty() {
                commit_group(&self.inner, &mut held, writes).await;
            }
            if !loads.is_empty() {
                self.load_group(&mut held, loads).await;
            }
            release_if_contended::<B>(&self.inner.pool, &mut held);
        }
    }

    /// Answers one group of loads: a lone one with the one-row SELECT,
    /// several with one `SELECT … WHERE id IN (…)`.
    async fn load_group(&self, held: &mut Held<B>, group: Vec<(SessionId, Loaded<T>)>) {
        let now = Utc::now();
        let connection = match connection::<B>(&self.inner.pool, held).await {
            Ok(connection) => connection,
            Err(error) => {
                let message = error.to_string();
                for (_, done) in group {
                    let _ = done.send(Err(shared_failure(&message)));
                }
                return;
            }
        };
        if group.len() == 1 {
            let (id, done) = group.into_iter().next().expect("one load");
            let result = self.load_one(connection, &id, now).await;
            if matches!(result, Err(StoreError::Database(_))) {
                *held = None;
            }
            let _ = done.send(result);
            return;
        }
        let mut ids: Vec<SessionId> = group.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = self.load_many(connection, &ids, now).await;
        if found.is_err() {
            *held = None;
        }
        for (id, done) in group {
            let result = match &found {
                Ok(records) => match records.get(&id) {
                    Some(Ok(record)) => Ok(Some(record.duplicate())),
                    Some(Err(message)) => Err(shared_failure(message)),
                    None => Ok(None),
                },
                Err(message) => Err(shared_failure(message)),
            };
            let _ = done.send(result);
        }
    }

    /// Several sessions in one SELECT; a row that does not decode is an
    /// error for its own requests only.
    #[allow(clippy::type_complexity)]
    async fn load_many(
        &self,
        connection: &mut Connection<B>,
        ids: &[SessionId],
        now: DateTime<Utc>,
    ) -> Result<HashMap<SessionId, Result<Record<T>, String>>, String> {
        let sql = self.load_many_statement(bucket(ids.len()));
        let mut args = Arguments::<B>::default();
        // Padded to the bucket by repeating the last id: `IN` ignores repeats.
        let last = ids.last().ok_or("no ids to load")?;
        for id in padded(ids.iter(), last) {
            bound(B::bind_id(&mut args, id)).map_err(|e| e.to_string())?;
        }
        bound(B::bind_time(&mut args, now)).map_err(|e| e.to_string())?;
        let rows = B::fetch_all(connection, sql, args)
            .await
            .map_err(|e| e.to_string())?;
        let id_column = 4 + T::SCHEMA.columns.len();
        let mut records = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id = match B::decode(row, id_column, SqlType::Bytes) {
                Ok(Value::Bytes(bytes)) => match <[u8; 32]>::try_from(bytes.as_ref()) {
                    Ok(bytes) => SessionId::from_bytes(bytes),
                    Err(_) => return Err("a session id is 32 bytes".into()),
                },
                Ok(_) => return Err("a session id is 32 bytes".into()),
                Err(error) => return Err(error.to_string()),
            };
            records.insert(id, Self::decode_record(row, id).map_err(|e| e.to_string()));
        }
        Ok(records)
    }

    fn load_many_statement(&self, count: usize) -> Arc<str> {
        cached_statement(&self.inner.loads_sql, count, || {
            let mut sql = format!("{} WHERE {} IN (", self.inner.load_many, quote::<B>("id"));
            let mut params = Params::<B>::new();
            for position in 0..count {
                if position > 0 {
                    sql.push_str(", ");
                }
                params.push(&mut sql, None);
            }
            let _ = write!(sql, ") AND {} > ", quote::<B>("expires_at"));
            params.push(&mut sql, None);
            sql
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool<B::Database> {
        &self.inner.pool
    }

    /// The DDL that creates this struct's table and its `expires_at` index,
    /// for people who run their own migrations.
    pub fn create_table_sql() -> Vec<String> {
        let schema = T::SCHEMA;
        let mut columns = String::new();
        let _ = write!(
            columns,
            "{} {} NOT NULL PRIMARY KEY, {} {} NOT NULL, {} BIGINT NOT NULL, {} {} NOT NULL, {} {} NOT NULL DEFAULT FALSE",
            quote::<B>("id"),
            B::ID_TYPE,
            quote::<B>("expires_at"),
            B::TIME_TYPE,
            quote::<B>("version"),
            quote::<B>("created_at"),
            B::TIME_TYPE,
            quote::<B>("remember"),
            B::column_type(SqlType::Bool),
        );
        for column in schema.columns {
            let _ = write!(
                columns,
                ", {} {}{}",
                quote::<B>(column.name),
                B::column_type(column.sql_type),
                if column.nullable { "" } else { " NOT NULL" }
            );
        }
        B::create_table(&schema, &columns)
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
    pub async fn migrate(&self) -> Result<(), StoreError> {
        for statement in Self::create_table_sql() {
            B::execute(&self.inner.pool, statement.into(), Default::default()).await?;
        }
        let found = B::table_columns(&self.inner.pool, T::SCHEMA.table).await?;
        let additions = self.reconcile(&found)?;
        for statement in additions {
            B::execute(&self.inner.pool, statement.into(), Default::default()).await?;
        }
        Ok(())
    }

    /// Compares the table as found with the struct: the ALTER statements
    /// that fix what can be fixed, or every problem that cannot.
    fn reconcile(&self, found: &[FoundColumn]) -> Result<Vec<String>, StoreError> {
        let schema = T::SCHEMA;
        let find = |name: &str| {
            found
                .iter()
                .find(|column| column.name.eq_ignore_ascii_case(name))
        };
        let mut problems = Vec::new();
        let mut additions = Vec::new();

        let library = [
            ("id", B::ID_TYPE),
            ("expires_at", B::TIME_TYPE),
            ("version", "BIGINT"),
            ("created_at", B::TIME_TYPE),
            ("remember", B::column_type(SqlType::Bool)),
        ];
        for (name, expected) in library {
            match find(name) {
                // Added by a later version of this library, with a default.
                None if name == "remember" => additions.push(format!(
                    "ALTER TABLE {} ADD COLUMN {} {expected} NOT NULL DEFAULT FALSE",
                    quote::<B>(schema.table),
                    quote::<B>(name)
                )),
                None => problems.push(format!(
                    "library column `{name}` is missing (expected {expected})"
                )),
                Some(column) if !B::type_matches(expected, &column.declared_type) => {
                    problems.push(format!(
                        "column `{name}`: expected {expected}, found {}",
                        column.declared_type
                    ))
                }
                Some(_) => {}
            }
        }

        let defaults = T::default();
        for (index, column) in schema.columns.iter().enumerate() {
            let expected = B::column_type(column.sql_type);
            let Some(existing) = find(column.name) else {
                let quoted = quote::<B>(column.name);
                let table = quote::<B>(schema.table);
                if column.nullable {
                    additions.push(format!(
                        "ALTER TABLE {table} ADD COLUMN {quoted} {expected}"
                    ));
                    continue;
                }
                let literal = defaults
                    .encode_column(index)
                    .ok()
                    .and_then(|value| default_literal(&value));
                match literal {
                    Some(literal) => additions.push(format!(
                        "ALTER TABLE {table} ADD COLUMN {quoted} {expected} NOT NULL DEFAULT {literal}"
                    )),
                    None => problems.push(format!(
                        "column `{}` (field `{}`) is missing; it is NOT NULL {expected} and its default value cannot be written as a SQL default: add it by hand, or make the field an `Option`",
                        column.name, column.field
                    )),
                }
                continue;
            };
            if !B::type_matches(expected, &existing.declared_type) {
                problems.push(format!(
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
                problems.push(format!(
                    "column `{}` (field `{}`): expected {expected}, found {found}",
                    column.name, column.field
                ));
            }
        }

        for column in found {
            let known = library
                .iter()
                .any(|(name, _)| column.name.eq_ignore_ascii_case(name))
                || schema
                    .columns
                    .iter()
                    .any(|c| column.name.eq_ignore_ascii_case(c.name));
            if !known && !column.nullable && !column.has_default {
                problems.push(format!(
                    "column `{}` ({}) is not in the struct and is NOT NULL without a default, so no session could be inserted: drop it, give it a default, or add a field for it",
                    column.name, column.declared_type
                ));
            }
        }

        if problems.is_empty() {
            Ok(additions)
        } else {
            Err(StoreError::Schema {
                table: schema.table.to_owned(),
                problem: problems.join("; "),
            })
        }
    }

    /// The UPDATE for `update`'s shape, built once per shape and cached.
    #[doc(hidden)]
    pub fn update_statement(&self, update: &Update) -> Arc<str> {
        let key = (
            update.dirty.bits(),
            update.expires_at.is_some(),
            update.expected_version.is_some(),
            update.new_id.is_some(),
            update.remember.is_some(),
        );
        cached_statement(&self.inner.updates, key, || {
            Self::build_update_statement(update)
        })
    }

    /// Builds the UPDATE for `update`'s shape (uncached).
    #[doc(hidden)]
    pub fn build_update_statement(update: &Update) -> String {
        // Placeholders in the order `update()` binds: dirty fields,
        // expires_at, remember, new id, id, now, version. An empty update
        // never gets here (`update()` answers it without a statement).
        let schema = T::SCHEMA;
        let mut sql = format!("UPDATE {} SET ", quote::<B>(schema.table));
        let mut params = Params::<B>::new();
        let mut first = true;
        let mut assign = |sql: &mut String, column: &str| {
            if !std::mem::take(&mut first) {
                sql.push_str(", ");
            }
            let _ = write!(sql, "{} = ", quote::<B>(column));
        };
        for index in update.dirty.iter() {
            let column = schema.column(index);
            assign(&mut sql, column.name);
            params.push(&mut sql, Some(column.sql_type));
        }
        if !update.is_touch() {
            assign(&mut sql, "version");
            let _ = write!(sql, "{} + 1", quote::<B>("version"));
        }
        if update.expires_at.is_some() {
            assign(&mut sql, "expires_at");
            params.push(&mut sql, None);
        }
        if update.remember.is_some() {
            assign(&mut sql, "remember");
            params.push(&mut sql, None);
        }
        if update.new_id.is_some() {
            assign(&mut sql, "id");
            params.push(&mut sql, None);
        }
        let _ = write!(sql, " WHERE {} = ", quote::<B>("id"));
        params.push(&mut sql, None);
        let _ = write!(sql, " AND {} > ", quote::<B>("expires_at"));
        params.push(&mut sql, None);
        if update.expected_version.is_some() {
            let _ = write!(sql, " AND {} = ", quote::<B>("version"));
            params.push(&mut sql, None);
        }
        sql
    }
}

/// A pooled connection held while a group task has work, so that
/// consecutive groups skip the pool; dropped after a failure.
type Held<B> = Option<PoolConnection<<B as Backend>::Database>>;

/// The held connection, acquired first if none is held.
async fn connection<'a, B: Backend>(
    pool: &Pool<B::Database>,
    held: &'a mut Held<B>,
) -> Result<&'a mut Connection<B>, sqlx::Error> {
    if held.is_none() {
        *held = Some(pool.acquire().await?);
    }
    Ok(&mut **held.as_mut().expect("just acquired"))
}

/// Gives the held connection back between groups when the pool has none
/// left, so that a pool of one (or a busy pool) still serves the other
/// statements (deletes, purges, the app's own queries) under constant load.
fn release_if_contended<B: Backend>(pool: &Pool<B::Database>, held: &mut Held<B>) {
    if held.is_some() && pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections()
    {
        *held = None;
    }
}

/// Which queues a group task serves: loads and writes each have their own
/// task, except on [`Backend::ONE_LANE`] backends, where one task serves both.
#[derive(Clone, Copy)]
enum Lane {
    Loads,
    Writes,
    Both,
}

impl Lane {
    fn of_loads<B: Backend>() -> Self {
        if B::ONE_LANE { Lane::Both } else { Lane::Loads }
    }

    fn of_writes<B: Backend>() -> Self {
        if B::ONE_LANE {
            Lane::Both
        } else {
            Lane::Writes
        }
    }
}

/// Takes the next group from a queue: everything waiting, up to [`MAX_GROUP`].
fn take_group<W>(waiting: &mut Vec<W>) -> Vec<W> {
    let take = waiting.len().min(MAX_GROUP);
    waiting.drain(..take).collect()
}

/// Commits one group of writes and tells each its result.
async fn commit_group<B: Backend>(inner: &Arc<Inner<B>>, held: &mut Held<B>, group: Vec<Write>) {
    inner.commits.fetch_add(1, Ordering::Relaxed);
    let (works, waiting): (Vec<Work>, Vec<Done>) = group
        .into_iter()
        .map(|write| (write.work, write.done))
        .unzip();
    match run_group(inner, held, &works).await {
        Ok(results) => {
            for (done, rows) in waiting.into_iter().zip(results) {
                let _ = done.send(Ok(rows));
            }
        }
        // The database refused a statement and the group was rolled back
        // as a whole: one request's bad value (a NUL byte PostgreSQL
        // rejects, say) must not fail the others. Each write runs again
        // alone, and only the culprit hears of the error. Any other
        // failure (a lost connection) may have left the commit unknown:
        // nothing is run twice.
        Err(GroupError::Refused(_)) if works.len() > 1 => {
            for (work, done) in works.iter().zip(waiting) {
                let result = run_group(inner, held, std::slice::from_ref(work))
                    .await
                    .map(|rows| rows.first().copied().unwrap_or(0))
                    .map_err(StoreError::from);
                let _ = done.send(result);
            }
        }
        Err(error) => {
            let message = error.to_string();
            for done in waiting {
                let _ = done.send(Err(shared_failure(&format!(
                    "group commit failed: {message}"
                ))));
            }
        }
    }
}

/// Why a group's statements did not commit.
#[derive(Debug, thiserror::Error)]
enum GroupError {
    /// The database refused a statement; nothing was committed.
    #[error("{0}")]
    Refused(sqlx::Error),
    /// Binding failed, or the connection did (the commit may be unknown).
    #[error("{0}")]
    Failed(sqlx::Error),
}

impl From<GroupError> for StoreError {
    fn from(error: GroupError) -> Self {
        match error {
            GroupError::Refused(error) | GroupError::Failed(error) => StoreError::Database(error),
        }
    }
}

/// Runs `works` as one group on the held connection: the rows each affected.
async fn run_group<B: Backend>(
    inner: &Arc<Inner<B>>,
    held: &mut Held<B>,
    works: &[Work],
) -> Result<Vec<u64>, GroupError> {
    let (items, readings) =
        plan_group(inner, works).map_err(|error| GroupError::Failed(sqlx::Error::Encode(error)))?;
    let results = match connection::<B>(&inner.pool, held).await {
        Ok(connection) => B::execute_batch(connection, items).await,
        Err(error) => Err(error),
    };
    match results {
        Ok(results) => {
            checkpoint_if_due(inner);
            Ok(readings
                .iter()
                .map(|reading| reading.rows(&results))
                .collect())
        }
        Err(error) => {
            // Rolled back as a whole; a connection in an unknown state is
            // not kept.
            *held = None;
            Err(match error {
                sqlx::Error::Database(_) => GroupError::Refused(error),
                error => GroupError::Failed(error),
            })
        }
    }
}

/// Runs a checkpoint statement: the frames in the log, and those copied.
async fn checkpoint<B: Backend>(
    connection: &mut Connection<B>,
    statement: &'static str,
) -> Result<(u64, i64), sqlx::Error> {
    let rows = B::fetch_all(connection, statement.into(), Default::default()).await?;
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let frames = u64::try_from(B::decode_i64(row, 1)?).unwrap_or(0);
    Ok((frames, B::decode_i64(row, 2)?))
}

/// After a commit: when a checkpoint is due and none runs, starts one in
/// its own task on a connection of its own.
fn checkpoint_if_due<B: Backend>(inner: &Arc<Inner<B>>) {
    let (Some(checkpoints), Some(statement)) = (&inner.checkpoints, B::CHECKPOINT) else {
        return;
    };
    let commits = inner.commits.load(Ordering::Relaxed);
    if commits < checkpoints.due_at.load(Ordering::Relaxed)
        || checkpoints.running.swap(true, Ordering::AcqRel)
    {
        return;
    }
    // Until this one reports, the next waits the current interval.
    let interval = checkpoints.interval.load(Ordering::Relaxed);
    checkpoints
        .due_at
        .store(commits + interval, Ordering::Relaxed);
    let inner = inner.clone();
    tokio::spawn(async move {
        let checkpoints = inner.checkpoints.as_ref().expect("checked above");
        let result = async {
            let mut connection = inner.pool.acquire().await?;
            let (frames, copied) = checkpoint::<B>(&mut connection, statement).await?;
            let restarted = match B::CHECKPOINT_RESTART {
                Some(restart) if frames >= RESTART_FRAMES => {
                    checkpoint::<B>(&mut connection, restart).await?;
                    true
                }
                _ => false,
            };
            Ok::<_, sqlx::Error>((frames, copied, restarted))
        }
        .await;
        match result {
            Ok((frames, copied, restarted)) => {
                // Aim the next one at CHECKPOINT_FRAMES new frames (a log
                // that shrank was started over).
                let before = checkpoints
                    .frames
                    .swap(if restarted { 0 } else { frames }, Ordering::Relaxed);
                let new = if frames >= before {
                    frames - before
                } else {
                    frames
                };
                let next = (interval * CHECKPOINT_FRAMES / new.max(1)).clamp(8, 8192);
                checkpoints.interval.store(next, Ordering::Relaxed);
                checkpoints.due_at.store(commits + next, Ordering::Relaxed);
                tracing::trace!(frames, copied, restarted, next, "background checkpoint");
            }
            Err(error) => tracing::warn!(%error, "background checkpoint failed; retrying later"),
        }
        checkpoints.running.store(false, Ordering::Release);
    });
}

/// How a write learns its result from its group's statements.
struct Reading {
    /// Its statement.
    item: usize,
    read_as: ReadAs,
}

enum ReadAs {
    /// The statement's affected rows.
    Affected,
    /// A merged UPDATE: whether it returned this id.
    Returned(SessionId),
    /// A row of a multi-row INSERT, which inserts all its rows or fails.
    Inserted,
}

impl Reading {
    fn rows(&self, results: &[BatchResult]) -> u64 {
        match (&results[self.item], &self.read_as) {
            (BatchResult::Affected(rows), ReadAs::Affected) => *rows,
            (BatchResult::Affected(_), ReadAs::Inserted) => 1,
            (BatchResult::Ids(ids), ReadAs::Returned(id)) => u64::from(ids.contains(id)),
            _ => 0,
        }
    }
}

/// Where a write's result goes.
type Done = oneshot::Sender<Result<u64, StoreError>>;

/// Merged rows of one shape (with their position in the group), split into statements.
type Chunks<'a> = Vec<Vec<(usize, &'a MergedRow)>>;

/// The statements of a group and how each write reads its result.
type Plan<B> = (Vec<BatchItem<B>>, Vec<Reading>);

/// Turns a group of writes into statements: plain ones as they are, new
/// rows in one multi-row INSERT, merged UPDATEs one statement per shape —
/// split so that no id appears twice in one statement, which keeps each
/// row's compare-and-swap exact.
fn plan_group<B: Backend>(
    inner: &Inner<B>,
    works: &[Work],
) -> Result<Plan<B>, sqlx::error::BoxDynError> {
    let mut items = Vec::new();
    let mut readings: Vec<Reading> = Vec::with_capacity(works.len());
    let mut merged: Vec<(MergedShape, Chunks<'_>)> = Vec::new();
    let mut inserts: Vec<Vec<(usize, &[Param])>> = Vec::new();
    let insert_rows = max_rows(LIBRARY_COLUMNS.len() + inner.schema.columns.len());
    for (position, work) in works.iter().enumerate() {
        match work {
            Work::Statement { sql, params } => {
                readings.push(Reading {
                    item: items.len(),
                    read_as: ReadAs::Affected,
                });
                let mut args = Arguments::<B>::default();
                bind_params::<B>(&mut args, params)?;
                items.push(BatchItem::Statement {
                    sql: sql.clone(),
                    args,
                });
            }
            Work::Insert(params) => {
                readings.push(Reading {
                    item: usize::MAX,
                    read_as: ReadAs::Inserted,
                });
                match inserts.last_mut().filter(|chunk| chunk.len() < insert_rows) {
                    Some(chunk) => chunk.push((position, params)),
                    None => inserts.push(vec![(position, params)]),
                }
            }
            Work::Merged(row) => {
                readings.push(Reading {
                    item: usize::MAX,
                    read_as: ReadAs::Returned(row.id),
                });
                let shape = row.shape();
                let per_statement = max_rows(4 + row.values.len());
                let chunks = match merged.iter_mut().find(|(other, _)| *other == shape) {
                    Some((_, chunks)) => chunks,
                    None => {
                        merged.push((shape, Vec::new()));
                        &mut merged.last_mut().expect("just pushed").1
                    }
                };
                let fits = |chunk: &&mut Vec<(usize, &MergedRow)>| {
                    chunk.len() < per_statement && chunk.iter().all(|(_, other)| other.id != row.id)
                };
                match chunks.iter_mut().find(fits) {
                    Some(chunk) => chunk.push((position, row)),
                    None => chunks.push(vec![(position, row)]),
                }
            }
        }
    }
    for chunk in inserts {
        // New rows cannot be padded: split into pieces of bucket sizes,
        // largest first (at most one statement per bit of the count).
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(1 << rest.len().ilog2());
            let sql = cached_statement(&inner.inserts, piece.len(), || {
                build_insert::<B>(inner.schema, piece.len())
            });
            let mut args = Arguments::<B>::default();
            for (position, params) in piece {
                readings[*position].item = items.len();
                bind_params::<B>(&mut args, params)?;
            }
            items.push(BatchItem::Statement { sql, args });
            rest = tail;
        }
    }
    for (shape, chunks) in merged {
        for chunk in chunks {
            for (position, _) in &chunk {
                readings[*position].item = items.len();
            }
            let item = if B::MERGED_UPDATES {
                let rows = bucket(chunk.len());
                let sql = merged_update(inner, shape, rows);
                let mut args = Arguments::<B>::default();
                let padding = padding_row(chunk[0].1);
                for row in padded(chunk.iter().map(|(_, row)| *row), &padding) {
                    bind_merged_row::<B>(&mut args, row)?;
                }
                BatchItem::Returning { sql, args }
            } else {
                let rows = chunk.into_iter().map(|(_, row)| row.clone()).collect();
                BatchItem::Locked(locked_update(inner.schema, rows)?)
            };
            items.push(item);
        }
    }
    Ok((items, readings))
}

/// The lock-check-update form of a merged UPDATE (MySQL, MariaDB).
fn locked_update<B: Backend>(
    schema: Schema,
    rows: Vec<MergedRow>,
) -> Result<LockedUpdate<B>, sqlx::error::BoxDynError> {
    let table = quote::<B>(schema.table);
    let mut select = format!(
        "SELECT {id}, {version}, {expires_at} FROM {table} WHERE {id} IN (",
        id = quote::<B>("id"),
        version = quote::<B>("version"),
        expires_at = quote::<B>("expires_at"),
    );
    let mut params = Params::<B>::new();
    let mut select_args = Arguments::<B>::default();
    // Padded to the bucket by repeating the last id: `IN` ignores repeats.
    let last = rows.last().ok_or("no rows to update")?;
    for (position, row) in padded(rows.iter(), last).enumerate() {
        if position > 0 {
            select.push_str(", ");
        }
        params.push(&mut select, None);
        B::bind_id(&mut select_args, &row.id)?;
    }
    select.push_str(") FOR UPDATE");
    let checks = rows
        .iter()
        .map(|row| (row.id, row.now, row.expected_version))
        .collect();
    let update = move |passed: &[usize]| {
        let (dirty, moves_expiry) = rows[0].shape();
        let mut columns = vec![quote::<B>("__id")];
        if moves_expiry {
            columns.push(quote::<B>("__expires_at"));
        }
        columns.extend(dirty.iter().map(|index| quote::<B>(&format!("c{index}"))));
        let mut sql = format!("UPDATE {table} JOIN (");
        let mut params = Params::<B>::new();
        let mut args = Arguments::<B>::default();
        // Padded to the bucket with rows that match nothing.
        let padding = padding_row(&rows[passed[0]]);
        let passing = passed.iter().map(|&position| &rows[position]);
        for (number, row) in padded(passing, &padding).enumerate() {
            sql.push_str(if number == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            for (column, name) in columns.iter().enumerate() {
                if column > 0 {
                    sql.push_str(", ");
                }
                params.push(&mut sql, None);
                if number == 0 {
                    let _ = write!(sql, " AS {name}");
                }
            }
            B::bind_id(&mut args, &row.id)?;
            if let Some(expires_at) = row.expires_at {
                B::bind_time(&mut args, expires_at)?;
            }
            for value in &row.values {
                B::bind(&mut args, value.reborrow())?;
            }
        }
        let _ = write!(
            sql,
            ") AS v ON {table}.{} = v.{} SET ",
            quote::<B>("id"),
            quote::<B>("__id")
        );
        sql.push_str(&merged_assignments::<B>(
            schema,
            (dirty, moves_expiry),
            &format!("{table}."),
        ));
        Ok((Arc::<str>::from(sql), args))
    };
    Ok(LockedUpdate {
        select: select.into(),
        select_args,
        checks,
        update: Box::new(update),
    })
}

/// Rows per multi-row statement of `params_per_row` parameters each, under
/// every backend's parameter limit (SQLite: 32766, PostgreSQL: 65535).
/// A power of two, like every bucket.
fn max_rows(params_per_row: usize) -> usize {
    let rows = (30_000 / params_per_row.max(1)).clamp(1, MAX_GROUP);
    1 << rows.ilog2()
}

/// A row that pads a merged UPDATE: `row`'s shape and values, an id no
/// row has ([`PADDING_ID`]).
fn padding_row(row: &MergedRow) -> MergedRow {
    MergedRow {
        id: PADDING_ID,
        expected_version: None,
        ..row.clone()
    }
}

fn bind_merged_row<B: Backend>(
    args: &mut Arguments<B>,
    row: &MergedRow,
) -> Result<(), sqlx::error::BoxDynError> {
    B::bind_id(args, &row.id)?;
    if let Some(expires_at) = row.expires_at {
        B::bind_time(args, expires_at)?;
    }
    B::bind_time(args, row.now)?;
    match row.expected_version {
        Some(version) => B::bind_i64(args, version)?,
        None => B::bind(args, Value::Null(SqlType::I64))?,
    }
    for value in &row.values {
        B::bind(args, value.reborrow())?;
    }
    Ok(())
}

/// The SET list of a merged UPDATE of `shape` from the rows of `v`: the
/// dirty fields (`c<index>`), the version, and the expiry if it moves;
/// `target` qualifies the updated columns (`"t."`, or `""`).
fn merged_assignments<B: Backend>(schema: Schema, shape: MergedShape, target: &str) -> String {
    let (dirty, moves_expiry) = shape;
    let mut assignments: Vec<String> = dirty
        .iter()
        .map(|index| {
            format!(
                "{target}{} = v.{}",
                quote::<B>(schema.column(index).name),
                quote::<B>(&format!("c{index}"))
            )
        })
        .collect();
    if !dirty.is_empty() {
        assignments.push(format!(
            "{target}{v} = {target}{v} + 1",
            v = quote::<B>("version")
        ));
    }
    if moves_expiry {
        assignments.push(format!(
            "{target}{} = v.{}",
            quote::<B>("expires_at"),
            quote::<B>("__expires_at")
        ));
    }
    assignments.join(", ")
}

/// `INSERT INTO t (every column) VALUES (...), ...` of `rows` rows, the
/// library columns first, in the order [`insert_params`] gives them.
fn build_insert<B: Backend>(schema: Schema, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {} (", quote::<B>(schema.table));
    for (position, name) in LIBRARY_COLUMNS.iter().enumerate() {
        if position > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&quote::<B>(name));
    }
    for column in schema.columns {
        let _ = write!(sql, ", {}", quote::<B>(column.name));
    }
    sql.push_str(") VALUES ");
    let mut params = Params::<B>::new();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for position in 0..LIBRARY_COLUMNS.len() + schema.columns.len() {
            if position > 0 {
                sql.push_str(", ");
            }
            let ty = position
                .checked_sub(LIBRARY_COLUMNS.len())
                .map(|field| schema.columns[field].sql_type);
            params.push(&mut sql, ty);
        }
        sql.push(')');
    }
    sql
}

/// `WITH v(...) AS (VALUES (...), ...) UPDATE t SET ... FROM v WHERE ...
/// RETURNING id`: many sessions' UPDATEs of one shape in one statement, each
/// row with its own expiry check and compare-and-swap.
fn merged_update<B: Backend>(inner: &Inner<B>, shape: MergedShape, rows: usize) -> Arc<str> {
    cached_statement(&inner.merged, (shape, rows), || {
        let (dirty, moves_expiry) = shape;
        build_merged_update::<B>(inner.schema, dirty, moves_expiry, rows)
    })
}

fn build_merged_update<B: Backend>(
    schema: Schema,
    dirty: DirtyFields,
    moves_expiry: bool,
    rows: usize,
) -> String {
    let table = quote::<B>(schema.table);
    // The VALUES columns get names no field can have (fields are `c<index>`),
    // in the order `bind_merged_row` binds.
    let mut names = vec![quote::<B>("__id")];
    let mut types = vec![B::ID_TYPE];
    if moves_expiry {
        names.push(quote::<B>("__expires_at"));
        types.push(B::TIME_TYPE);
    }
    names.extend([quote::<B>("__now"), quote::<B>("__expected")]);
    types.extend([B::TIME_TYPE, "BIGINT"]);
    for index in dirty.iter() {
        names.push(quote::<B>(&format!("c{index}")));
        types.push(B::column_type(schema.column(index).sql_type));
    }
    let mut sql = format!("WITH v({}) AS (VALUES ", names.join(", "));
    let mut params = Params::<B>::new();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for (position, ty) in types.iter().enumerate() {
            if position > 0 {
                sql.push_str(", ");
            }
            params.push(&mut sql, None);
            B::push_cast(&mut sql, ty);
        }
        sql.push(')');
    }
    let assignments = merged_assignments::<B>(schema, (dirty, moves_expiry), "");
    let _ = write!(
        sql,
        ") UPDATE {table} SET {} FROM v WHERE {table}.{id} = v.{nid} AND {table}.{e} > v.{now} \
         AND (v.{expected} IS NULL OR {table}.{version} = v.{expected}) ",
        assignments,
        e = quote::<B>("expires_at"),
        id = quote::<B>("id"),
        nid = quote::<B>("__id"),
        now = quote::<B>("__now"),
        expected = quote::<B>("__expected"),
        version = quote::<B>("version"),
    );
    B::push_returning_id(&mut sql, &table);
    sql
}

/// A column of an existing table, as the database describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundColumn {
    /// Its name.
    pub name: String,
    /// Its type as the database spells it.
    pub declared_type: String,
    /// Whether it accepts NULL.
    pub nullable: bool,
    /// Whether it has a default value.
    pub has_default: bool,
}

/// A field's `Default` value as a SQL literal, where one is safe to write on
/// every backend.
fn default_literal(value: &Value<'_>) -> Option<String> {
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

/// Reads column `index` as `Option<V>`: NULL becomes `Value::Null(ty)`,
/// anything else `wrap(value)`. For the backends whose drivers decode
/// nullable columns through `Option`.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
fn decode_nullable<R, V>(
    row: &R,
    index: usize,
    ty: SqlType,
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

/// The error each waiter of a shared statement gets when it fails (sqlx
/// errors cannot be cloned, so every waiter gets its message).
fn shared_failure(message: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(message.to_owned()))
}

/// A statement from `cache`, built by `build` the first time its key is seen.
fn cached_statement<K: std::hash::Hash + Eq>(
    cache: &RwLock<HashMap<K, Arc<str>>>,
    key: K,
    build: impl FnOnce() -> String,
) -> Arc<str> {
    if let Some(sql) = read(cache).get(&key) {
        return sql.clone();
    }
    let sql: Arc<str> = build().into();
    write(cache).insert(key, sql.clone());
    sql
}

/// Turns a bind failure into the error a store reports.
fn bound(result: Result<(), sqlx::error::BoxDynError>) -> Result<(), StoreError> {
    result.map_err(|error| StoreError::Database(sqlx::Error::Encode(error)))
}

impl<B: Backend, T: SessionData> SessionStore<T> for SqlStore<B, T> {
    async fn load(
        &self,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        if !self.inner.group_commit {
            let mut connection = self.inner.pool.acquire().await?;
            return self.load_one(&mut connection, id, now).await;
        }
        let (done, result) = oneshot::channel();
        let lane = Lane::of_loads::<B>();
        let start = {
            let mut queue = lock(&self.loads);
            queue.waiting.push((*id, done));
            match lane {
                Lane::Loads => !std::mem::replace(&mut queue.loading, true),
                Lane::Writes | Lane::Both => {
                    !std::mem::replace(&mut lock(&self.inner.writes).committing, true)
                }
            }
        };
        if start {
            tokio::spawn(self.clone().serve(lane));
        }
        let record = result
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))??;
        // A group reads with its own clock: re-check against the caller's.
        Ok(record.filter(|record| record.expires_at > now))
    }

    async fn insert(&self, record: &Record<T>) -> Result<(), StoreError> {
        self.write(Work::Insert(insert_params(record)?)).await?;
        Ok(())
    }

    async fn update(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError> {
        if update.is_empty() {
            return Ok(true);
        }
        if self.inner.group_commit && update.new_id.is_none() && update.remember.is_none() {
            let mut values = Vec::with_capacity(T::SCHEMA.columns.len());
            for index in update.dirty.iter() {
                values.push(data.encode_column(index)?.into_owned());
            }
            let row = MergedRow {
                dirty: update.dirty,
                id: *id,
                expires_at: update.expires_at,
                now: update.now,
                expected_version: update.expected_version,
                values,
            };
            return Ok(self.submit(Work::Merged(row)).await? > 0);
        }
        let sql = self.update_statement(&update);
        let mut params = Vec::new();
        for index in update.dirty.iter() {
            params.push(Param::Value(data.encode_column(index)?.into_owned()));
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
        Ok(self.write(Work::Statement { sql, params }).await? > 0)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut args = Arguments::<B>::default();
        bound(B::bind_id(&mut args, id))?;
        B::execute(&self.inner.pool, self.inner.delete.clone(), args).await?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let mut args = Arguments::<B>::default();
            bound(B::bind_time(&mut args, now))?;
            bound(B::bind_i64(&mut args, PURGE_BATCH))?;
            let deleted = B::execute(&self.inner.pool, self.inner.purge.clone(), args).await?;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}
