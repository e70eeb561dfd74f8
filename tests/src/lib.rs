//! Harness of the conformance suite: one isolated store per test on each
//! real database, a client that keeps its cookie, and a store wrapper that
//! counts round trips.
//!
//! Databases are found at `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` (defaults:
//! the local servers). Under `CI=true` an unreachable database fails the
//! test; otherwise the test writes a loud `SKIPPED` line and passes.

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body};
use axum_typed_session::{
    MemoryStore, MySqlStore, PgStore, Record, SessionData, SessionId, SessionStore, SqliteStore,
    StoreError, Update,
};
use chrono::{DateTime, Utc};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use sqlx::{
    Executor as _, mysql::MySqlPoolOptions, postgres::PgPoolOptions, sqlite::SqlitePoolOptions,
};
use tower::ServiceExt as _;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The local Cluster `.ci/redis-cluster` starts: three masters, three replicas.
pub const DEFAULT_REDIS_CLUSTER: &str =
    "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// Reports a database that cannot be reached: a failure in CI, a loud skip elsewhere.
fn unreachable(database: &str, url: &str, error: &dyn std::fmt::Display) {
    if in_ci() {
        panic!("{database} at {url} is unreachable and CI=true requires it: {error}");
    }
    // Written to the real stderr, past the test harness's capture, so a
    // skipped check is never silent.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: {database} at {url} is unreachable ({error}); start it or set CI=true to make this fail",
        std::thread::current().name().unwrap_or("test"),
    );
}

pub mod counter;
pub mod proxy;
mod redis;

pub use redis::{
    CLIENT_CACHE, OwnCluster, OwnReplicated, OwnUnix, Redis, RedisCached, RedisCluster, RedisRaw,
    ask, redis_cluster_nodes, redis_url,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call: each test gets its own schema.
fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// One database to run the conformance cases on.
pub trait Backend: Send + Sync + Sized + 'static {
    type Store<T: SessionData>: SessionStore<T>;
    const NAME: &'static str;
    /// Whether the database expires sessions by itself (Redis), leaving
    /// nothing for the purge.
    const EXPIRES_BY_ITSELF: bool = false;

    /// A new, empty database (schema, file) with a store for `T` on it, not
    /// migrated; `None` if the database is unreachable outside CI (already reported).
    fn open_unmigrated<T: SessionData>()
    -> impl std::future::Future<Output = Option<Fixture<Self, T>>> + Send;

    /// A store for another struct on the same database.
    fn store_on<U: SessionData>(raw: &Raw) -> Self::Store<U>;

    /// The fixture's store again (on the same pool), tuned.
    fn tuned<U: SessionData>(
        store: &Self::Store<U>,
        raw: &Raw,
        tuning: Tuning<U>,
    ) -> Self::Store<U>;

    /// Like [`open_unmigrated`](Self::open_unmigrated), then `migrate()`d.
    fn open<T: SessionData>() -> impl std::future::Future<Output = Option<Fixture<Self, T>>> + Send
    {
        async {
            let fixture = Self::open_unmigrated::<T>().await?;
            fixture.migrate().await.expect("migrate");
            Some(fixture)
        }
    }
}

/// A store plus what a test needs to look behind it.
pub struct Fixture<B: Backend, T: SessionData> {
    pub store: B::Store<T>,
    raw: Raw,
}

/// Direct access to the database under a store, for checks and sabotage.
pub enum Raw {
    Memory(Arc<dyn Fn() -> usize + Send + Sync>),
    Redis(RedisRaw),
    Sqlite(sqlx::SqlitePool, std::path::PathBuf),
    Postgres(sqlx::PgPool, String),
    MySql(sqlx::MySqlPool, String),
}

impl<B: Backend, T: SessionData> Fixture<B, T> {
    /// The database under the store.
    pub fn raw(&self) -> &Raw {
        &self.raw
    }

    /// The fixture's store, sending lifecycle events to `events`.
    pub fn store_with_events(&self, events: axum_typed_session::SessionEvents) -> B::Store<T> {
        B::tuned(
            &self.store,
            &self.raw,
            Tuning {
                events: Some(events),
                cap: None,
            },
        )
    }

    /// The fixture's store (on the same pool), tuned.
    pub fn tuned_store(&self, tuning: Tuning<T>) -> B::Store<T> {
        B::tuned(&self.store, &self.raw, tuning)
    }

    /// A fixture for another struct on the same database (cleaned up by this one).
    pub fn other<U: SessionData>(&self) -> Fixture<B, U> {
        let raw = match &self.raw {
            Raw::Memory(len) => Raw::Memory(len.clone()),
            Raw::Redis(raw) => Raw::Redis(raw.clone()),
            Raw::Sqlite(pool, path) => Raw::Sqlite(pool.clone(), path.clone()),
            Raw::Postgres(pool, schema) => Raw::Postgres(pool.clone(), schema.clone()),
            Raw::MySql(pool, database) => Raw::MySql(pool.clone(), database.clone()),
        };
        Fixture {
            store: B::store_on::<U>(&self.raw),
            raw,
        }
    }

    /// Like [`independent_store`](Self::independent_store), tuned.
    pub async fn independent_tuned_store(&self, tuning: Tuning<T>) -> B::Store<T> {
        let raw = self.independent_raw().await;
        let store = raw
            .as_ref()
            .map_or_else(|| self.store.clone(), |raw| B::store_on::<T>(raw));
        B::tuned(&store, raw.as_ref().unwrap_or(&self.raw), tuning)
    }

    /// A store for `T` on the same database through a pool of its own, as a
    /// second app instance has (memory: the same store, there is no other).
    pub async fn independent_store(&self) -> B::Store<T> {
        match self.independent_raw().await {
            Some(raw) => B::store_on::<T>(&raw),
            None => self.store.clone(),
        }
    }

    /// A second pool on the same database (`None` for memory).
    async fn independent_raw(&self) -> Option<Raw> {
        Some(match &self.raw {
            Raw::Memory(_) => return None,
            Raw::Redis(raw) => Raw::Redis(raw.independent().await),
            Raw::Sqlite(pool, path) => Raw::Sqlite(
                SqlitePoolOptions::new()
                    .connect_with((*pool.connect_options()).clone())
                    .await
                    .expect("second SQLite pool"),
                path.clone(),
            ),
            Raw::Postgres(pool, schema) => Raw::Postgres(
                PgPoolOptions::new()
                    .connect_with((*pool.connect_options()).clone())
                    .await
                    .expect("second PostgreSQL pool"),
                schema.clone(),
            ),
            Raw::MySql(pool, database) => Raw::MySql(
                MySqlPoolOptions::new()
                    .connect_with((*pool.connect_options()).clone())
                    .await
                    .expect("second MariaDB pool"),
                database.clone(),
            ),
        })
    }

    /// `migrate()` on the SQL stores; nothing to do in memory.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.raw {
            Raw::Memory(_) | Raw::Redis(_) => Ok(()),
            Raw::Sqlite(pool, _) => SqliteStore::<T>::new(pool.clone()).migrate().await,
            Raw::Postgres(pool, _) => PgStore::<T>::new(pool.clone()).migrate().await,
            Raw::MySql(pool, _) => MySqlStore::<T>::new(pool.clone()).migrate().await,
        }
    }

    /// Rows of a query, every column read as text (NULL as `None`).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        fn text<R: sqlx::Row>(row: &R) -> Vec<Option<String>>
        where
            for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            (0..row.columns().len())
                .map(|i| {
                    row.try_get_unchecked::<Option<String>, _>(i)
                        .expect("text column")
                })
                .collect()
        }
        match &self.raw {
            Raw::Memory(_) | Raw::Redis(_) => Vec::new(),
            Raw::Sqlite(pool, _) => sqlx::query(sql)
                .fetch_all(pool)
                .await
                .expect("query")
                .iter()
                .map(text)
                .collect(),
            Raw::Postgres(pool, _) => sqlx::query(sql)
                .fetch_all(pool)
                .await
                .expect("query")
                .iter()
                .map(text)
                .collect(),
            Raw::MySql(pool, _) => sqlx::query(sql)
                .fetch_all(pool)
                .await
                .expect("query")
                .iter()
                .map(text)
                .collect(),
        }
    }

    /// Rows in the session table.
    pub async fn count_rows(&self) -> i64 {
        let table = T::SCHEMA.table;
        match &self.raw {
            Raw::Memory(len) => len() as i64,
            Raw::Redis(raw) => raw
                .keys(&format!("{}:{{*", raw.prefix_of(table)))
                .await
                .len() as i64,
            Raw::Sqlite(pool, _) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM \"{table}\""
            )))
            .fetch_one(pool)
            .await
            .expect("count rows"),
            Raw::Postgres(pool, _) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM \"{table}\""
            )))
            .fetch_one(pool)
            .await
            .expect("count rows"),
            Raw::MySql(pool, _) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM `{table}`"
            )))
            .fetch_one(pool)
            .await
            .expect("count rows"),
        }
    }

    /// Runs a statement directly (SQL stores only); `None` for memory.
    pub async fn execute(&self, sql: &str) -> Option<()> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.raw {
            Raw::Memory(_) | Raw::Redis(_) => return None,
            Raw::Sqlite(pool, _) => pool.execute(sql).await.map(drop),
            Raw::Postgres(pool, _) => pool.execute(sql).await.map(drop),
            Raw::MySql(pool, _) => pool.execute(sql).await.map(drop),
        }
        .expect("raw statement");
        Some(())
    }

    /// Moves the session table away (the database "goes away" for it);
    /// `None` for the memory store, which cannot fail.
    pub async fn break_table(&self) -> Option<()> {
        let table = T::SCHEMA.table;
        match &self.raw {
            Raw::MySql(..) => {
                self.execute(&format!("RENAME TABLE `{table}` TO `{table}_away`"))
                    .await
            }
            _ => {
                self.execute(&format!(
                    "ALTER TABLE \"{table}\" RENAME TO \"{table}_away\""
                ))
                .await
            }
        }
    }

    /// Undoes [`break_table`](Self::break_table).
    pub async fn restore_table(&self) -> Option<()> {
        let table = T::SCHEMA.table;
        match &self.raw {
            Raw::MySql(..) => {
                self.execute(&format!("RENAME TABLE `{table}_away` TO `{table}`"))
                    .await
            }
            _ => {
                self.execute(&format!(
                    "ALTER TABLE \"{table}_away\" RENAME TO \"{table}\""
                ))
                .await
            }
        }
    }

    /// Drops the test's schema or database.
    pub async fn cleanup(self) {
        match &self.raw {
            Raw::Postgres(pool, schema) => {
                let _ = pool
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA \"{schema}\" CASCADE"
                    )))
                    .await;
            }
            Raw::MySql(pool, database) => {
                let _ = pool
                    .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE `{database}`")))
                    .await;
            }
            Raw::Sqlite(pool, path) => {
                pool.close().await;
                remove_sqlite_files(path);
            }
            Raw::Memory(_) => {}
            Raw::Redis(raw) => raw.cleanup().await,
        }
    }
}

/// A fresh SQLite database file in the temporary directory.
pub fn sqlite_path(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.db", unique_name(prefix)))
}

/// Removes an SQLite database file with its log and shared-memory files.
pub fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

pub enum Memory {}
pub enum Sqlite {}
pub enum Postgres {}
pub enum MySql {}

impl Backend for Memory {
    type Store<T: SessionData> = MemoryStore<T>;
    const NAME: &'static str = "memory";

    fn store_on<U: SessionData>(_: &Raw) -> MemoryStore<U> {
        MemoryStore::new()
    }

    fn tuned<U: SessionData>(store: &MemoryStore<U>, _: &Raw, tuning: Tuning<U>) -> MemoryStore<U> {
        let mut store = store.clone();
        if let Some(events) = tuning.events {
            store = store.with_events(events);
        }
        if let Some((index, max)) = tuning.cap {
            store = store.with_max_sessions(index, max);
        }
        store
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        let store = MemoryStore::<T>::new();
        let counted = store.clone();
        Some(Fixture {
            store,
            raw: Raw::Memory(Arc::new(move || counted.len())),
        })
    }
}

impl Backend for Sqlite {
    type Store<T: SessionData> = SqliteStore<T>;
    const NAME: &'static str = "SQLite";

    fn store_on<U: SessionData>(raw: &Raw) -> SqliteStore<U> {
        match raw {
            Raw::Sqlite(pool, _) => SqliteStore::new(pool.clone()),
            _ => unreachable!("an SQLite fixture holds an SQLite pool"),
        }
    }

    fn tuned<U: SessionData>(_: &SqliteStore<U>, raw: &Raw, tuning: Tuning<U>) -> SqliteStore<U> {
        match raw {
            Raw::Sqlite(pool, _) => SqliteStore::builder().tune(tuning).build(pool.clone()),
            _ => unreachable!("an SQLite fixture holds an SQLite pool"),
        }
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        Some(sqlite_fixture("axum_typed_session", true).await)
    }
}

async fn connect_or_skip<F, P>(database: &str, url: &str, connect: F) -> Option<P>
where
    F: std::future::Future<Output = Result<P, sqlx::Error>>,
{
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(pool)) => Some(pool),
        Ok(Err(error)) => {
            unreachable(database, url, &error);
            None
        }
        Err(elapsed) => {
            unreachable(database, url, &elapsed);
            None
        }
    }
}

pub fn postgres_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

pub fn mysql_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.into())
}

/// A pool on a new schema of the test PostgreSQL database, and the schema's name.
pub async fn postgres_pool() -> Option<(sqlx::PgPool, String)> {
    let url = postgres_url();
    let admin = connect_or_skip(
        "PostgreSQL",
        &url,
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&url),
    )
    .await?;
    let schema = unique_name("ats");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .expect("create schema");
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("PostgreSQL URL");
    let options = options.options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .connect_with(options)
        .await
        .expect("pool on schema");
    Some((pool, schema))
}

/// A pool on a new database of the test MariaDB server, and the database's name.
pub async fn mysql_pool() -> Option<(sqlx::MySqlPool, String)> {
    let url = mysql_url();
    let admin = connect_or_skip(
        "MariaDB",
        &url,
        MySqlPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&url),
    )
    .await?;
    let database = unique_name("ats");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
        .await
        .expect("create database");
    let options: sqlx::mysql::MySqlConnectOptions = url.parse().expect("MySQL URL");
    let pool = MySqlPoolOptions::new()
        .connect_with(options.database(&database))
        .await
        .expect("pool on database");
    Some((pool, database))
}

impl Backend for Postgres {
    type Store<T: SessionData> = PgStore<T>;
    const NAME: &'static str = "PostgreSQL";

    fn store_on<U: SessionData>(raw: &Raw) -> PgStore<U> {
        match raw {
            Raw::Postgres(pool, _) => PgStore::new(pool.clone()),
            _ => unreachable!("a PostgreSQL fixture holds a PostgreSQL pool"),
        }
    }

    fn tuned<U: SessionData>(_: &PgStore<U>, raw: &Raw, tuning: Tuning<U>) -> PgStore<U> {
        match raw {
            Raw::Postgres(pool, _) => PgStore::builder().tune(tuning).build(pool.clone()),
            _ => unreachable!("a PostgreSQL fixture holds a PostgreSQL pool"),
        }
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        let (pool, schema) = postgres_pool().await?;
        let store = PgStore::<T>::new(pool.clone());
        Some(Fixture {
            store,
            raw: Raw::Postgres(pool, schema),
        })
    }
}

impl Backend for MySql {
    type Store<T: SessionData> = MySqlStore<T>;
    const NAME: &'static str = "MariaDB";

    fn store_on<U: SessionData>(raw: &Raw) -> MySqlStore<U> {
        match raw {
            Raw::MySql(pool, _) => MySqlStore::new(pool.clone()),
            _ => unreachable!("a MariaDB fixture holds a MariaDB pool"),
        }
    }

    fn tuned<U: SessionData>(_: &MySqlStore<U>, raw: &Raw, tuning: Tuning<U>) -> MySqlStore<U> {
        match raw {
            Raw::MySql(pool, _) => MySqlStore::builder().tune(tuning).build(pool.clone()),
            _ => unreachable!("a MariaDB fixture holds a MariaDB pool"),
        }
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        let (pool, database) = mysql_pool().await?;
        let store = MySqlStore::<T>::new(pool.clone());
        Some(Fixture {
            store,
            raw: Raw::MySql(pool, database),
        })
    }
}

/// A fresh SQLite file with a store as `SqliteStore::connect` opens it
/// (group commit as given), and a plain second pool for the test's checks.
async fn sqlite_fixture<B, T: SessionData>(prefix: &str, group_commit: bool) -> Fixture<B, T>
where
    B: Backend<Store<T> = SqliteStore<T>>,
{
    let path = sqlite_path(prefix);
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = SqliteStore::<T>::builder()
        .group_commit(group_commit)
        .connect(&url)
        .await
        .expect("open SQLite file");
    store.migrate().await.expect("migrate SQLite");
    let raw = SqlitePoolOptions::new()
        .connect(&url)
        .await
        .expect("second SQLite pool");
    Fixture {
        store,
        raw: Raw::Sqlite(raw, path),
    }
}

/// Options a test builds a store with.
pub struct Tuning<U: 'static> {
    pub events: Option<axum_typed_session::SessionEvents>,
    pub cap: Option<(&'static axum_typed_session::Index<U, i64>, u32)>,
}

/// Applies a [`Tuning`] to a SQL store's builder.
trait Tune<U: 'static>: Sized {
    fn tune(self, tuning: Tuning<U>) -> Self;
}

impl<B: axum_typed_session::store::sql::Backend, U: SessionData> Tune<U>
    for axum_typed_session::store::sql::SqlStoreBuilder<B, U>
{
    fn tune(self, tuning: Tuning<U>) -> Self {
        let mut builder = self;
        if let Some(events) = tuning.events {
            builder = builder.events(events);
        }
        if let Some((index, max)) = tuning.cap {
            builder = builder.max_sessions(index, max);
        }
        builder
    }
}

/// The SQL stores again with group commit off: every load and write alone.
pub enum SqliteUngrouped {}
pub enum PostgresUngrouped {}
pub enum MySqlUngrouped {}

impl Backend for SqliteUngrouped {
    type Store<T: SessionData> = SqliteStore<T>;
    const NAME: &'static str = "SQLite, group commit off";

    fn store_on<U: SessionData>(raw: &Raw) -> SqliteStore<U> {
        match raw {
            Raw::Sqlite(pool, _) => SqliteStore::builder()
                .group_commit(false)
                .build(pool.clone()),
            _ => unreachable!("an SQLite fixture holds an SQLite pool"),
        }
    }

    fn tuned<U: SessionData>(_: &SqliteStore<U>, raw: &Raw, tuning: Tuning<U>) -> SqliteStore<U> {
        match raw {
            Raw::Sqlite(pool, _) => SqliteStore::builder()
                .group_commit(false)
                .tune(tuning)
                .build(pool.clone()),
            _ => unreachable!("an SQLite fixture holds an SQLite pool"),
        }
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        Some(sqlite_fixture("axum_typed_session_ungrouped", false).await)
    }
}

impl Backend for PostgresUngrouped {
    type Store<T: SessionData> = PgStore<T>;
    const NAME: &'static str = "PostgreSQL, group commit off";

    fn store_on<U: SessionData>(raw: &Raw) -> PgStore<U> {
        match raw {
            Raw::Postgres(pool, _) => PgStore::builder().group_commit(false).build(pool.clone()),
            _ => unreachable!("a PostgreSQL fixture holds a PostgreSQL pool"),
        }
    }

    fn tuned<U: SessionData>(_: &PgStore<U>, raw: &Raw, tuning: Tuning<U>) -> PgStore<U> {
        match raw {
            Raw::Postgres(pool, _) => PgStore::builder()
                .group_commit(false)
                .tune(tuning)
                .build(pool.clone()),
            _ => unreachable!("a PostgreSQL fixture holds a PostgreSQL pool"),
        }
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        let (pool, schema) = postgres_pool().await?;
        let raw = Raw::Postgres(pool, schema);
        Some(Fixture {
            store: Self::store_on::<T>(&raw),
            raw,
        })
    }
}

impl Backend for MySqlUngrouped {
    type Store<T: SessionData> = MySqlStore<T>;
    const NAME: &'static str = "MariaDB, group commit off";

    fn store_on<U: SessionData>(raw: &Raw) -> MySqlStore<U> {
        match raw {
            Raw::MySql(pool, _) => MySqlStore::builder()
                .group_commit(false)
                .build(pool.clone()),
            _ => unreachable!("a MariaDB fixture holds a MariaDB pool"),
        }
    }

    fn tuned<U: SessionData>(_: &MySqlStore<U>, raw: &Raw, tuning: Tuning<U>) -> MySqlStore<U> {
        match raw {
            Raw::MySql(pool, _) => MySqlStore::builder()
                .group_commit(false)
                .tune(tuning)
                .build(pool.clone()),
            _ => unreachable!("a MariaDB fixture holds a MariaDB pool"),
        }
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        let (pool, database) = mysql_pool().await?;
        let raw = Raw::MySql(pool, database);
        Some(Fixture {
            store: Self::store_on::<T>(&raw),
            raw,
        })
    }
}

/// Counts the calls (each one round trip on the SQL stores) made to a real store.
#[derive(Clone)]
pub struct Counting<S> {
    pub inner: S,
    pub calls: Arc<Calls>,
}

#[derive(Default, Debug)]
pub struct Calls {
    pub load: AtomicUsize,
    pub insert: AtomicUsize,
    pub update: AtomicUsize,
    pub delete: AtomicUsize,
}

impl Calls {
    /// (load, insert, update, delete) since the last call, and resets them.
    pub fn take(&self) -> (usize, usize, usize, usize) {
        (
            self.load.swap(0, Ordering::SeqCst),
            self.insert.swap(0, Ordering::SeqCst),
            self.update.swap(0, Ordering::SeqCst),
            self.delete.swap(0, Ordering::SeqCst),
        )
    }
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            calls: Arc::default(),
        }
    }
}

impl<T: SessionData, S: SessionStore<T>> SessionStore<T> for Counting<S> {
    async fn load(
        &self,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        self.calls.load.fetch_add(1, Ordering::SeqCst);
        self.inner.load(id, now).await
    }

    async fn insert(&self, record: &Record<T>) -> Result<(), StoreError> {
        self.calls.insert.fetch_add(1, Ordering::SeqCst);
        self.inner.insert(record).await
    }

    async fn update(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError> {
        self.calls.update.fetch_add(1, Ordering::SeqCst);
        self.inner.update(id, data, update).await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.calls.delete.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(id).await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_expired(now).await
    }
}

/// A response, as a test looks at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
    /// The `Set-Cookie` headers.
    pub cookies: Vec<String>,
    pub headers: http::HeaderMap,
}

impl Reply {
    /// The value the response set for cookie `name`, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.iter().find_map(|cookie| {
            let (pair, _) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
    }
}

/// Sends one request to the app, with an optional raw `Cookie` header.
pub async fn send(app: &Router, method: &str, path: &str, cookie: Option<&str>) -> Reply {
    send_with(app, method, path, cookie, &[]).await
}

/// Sends one request to the app, with an optional raw `Cookie` header and
/// more headers (`Accept`, `Sec-Fetch-Site`, ...).
pub async fn send_with(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| value.to_str().expect("ASCII cookie").to_owned())
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        cookies,
        headers,
    }
}

/// A browser with one cookie jar for one cookie name.
#[derive(Clone)]
pub struct Client {
    pub app: Router,
    pub cookie_name: String,
    pub token: Option<String>,
}

impl Client {
    pub fn new(app: Router, cookie_name: &str) -> Self {
        Self {
            app,
            cookie_name: cookie_name.to_owned(),
            token: None,
        }
    }

    pub fn cookie_header(&self) -> Option<String> {
        self.token
            .as_ref()
            .map(|token| format!("{}={token}", self.cookie_name))
    }

    /// Sends a request with the jar's cookie and keeps what the response sets.
    pub async fn send(&mut self, method: &str, path: &str) -> Reply {
        self.send_with(method, path, &[]).await
    }

    /// The same, with more headers.
    pub async fn send_with(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let reply = send_with(
            &self.app,
            method,
            path,
            self.cookie_header().as_deref(),
            headers,
        )
        .await;
        if let Some(value) = reply.cookie(&self.cookie_name) {
            self.token = (!value.is_empty()).then_some(value);
        }
        reply
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path).await
    }

    pub async fn post(&mut self, path: &str) -> Reply {
        self.send("POST", path).await
    }
}

/// Runs each case against memory and the three SQL stores.
#[macro_export]
macro_rules! local_conformance {
    ($($case:ident),* $(,)?) => {
        $crate::conformance!(@backend memory, $crate::Memory, $($case),*);
        $crate::sql_conformance!($($case),*);
    };
}

/// Runs each case against Redis, standalone and Cluster.
#[macro_export]
macro_rules! redis_conformance {
    ($($case:ident),* $(,)?) => {
        $crate::conformance!(@backend redis, $crate::Redis, $($case),*);
        $crate::conformance!(@backend redis_cached, $crate::RedisCached, $($case),*);
        $crate::conformance!(@backend redis_cluster, $crate::RedisCluster, $($case),*);
    };
}

/// Runs each case against the three SQL stores.
#[macro_export]
macro_rules! sql_conformance {
    ($($case:ident),* $(,)?) => {
        $crate::conformance!(@backend sqlite, $crate::Sqlite, $($case),*);
        $crate::conformance!(@backend postgres, $crate::Postgres, $($case),*);
        $crate::conformance!(@backend mysql, $crate::MySql, $($case),*);
    };
}

/// Runs each case against the three SQL stores with group commit off.
#[macro_export]
macro_rules! ungrouped_conformance {
    ($($case:ident),* $(,)?) => {
        $crate::conformance!(@backend sqlite_ungrouped, $crate::SqliteUngrouped, $($case),*);
        $crate::conformance!(@backend postgres_ungrouped, $crate::PostgresUngrouped, $($case),*);
        $crate::conformance!(@backend mysql_ungrouped, $crate::MySqlUngrouped, $($case),*);
    };
}

/// Runs each case against every store: memory, SQLite, PostgreSQL,
/// MariaDB, Redis and Redis Cluster.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $crate::local_conformance!($($case),*);
        $crate::redis_conformance!($($case),*);
    };
    (@backend $module:ident, $backend:ty, $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case::<$backend>().await;
                }
            )*
        }
    };
}
