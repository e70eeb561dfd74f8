//! Options a store is built with: set before it exists, so that no switch
//! can silently do nothing on a store that is already shared.

use std::marker::PhantomData;

use std::time::Duration;

use sqlx::{Pool, pool::PoolOptions};

use super::{Backend, SqlStore};
use crate::data::SessionData;

/// What a store was built with.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Concurrent loads share one SELECT and concurrent writes one commit.
    pub(crate) group_commit: bool,
    /// SQLite: checkpoint the write-ahead log in the background; `None`:
    /// as the constructor decides (on for `connect`, off on your own pool).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) background_checkpoints: Option<bool>,
    /// How long a request waits for a connection, or for its turn in a
    /// group, before the database counts as unavailable.
    pub(crate) acquire_timeout: std::time::Duration,
    /// Where lifecycle events go.
    pub(crate) events: Option<crate::events::SessionEvents>,
    /// At most this many live sessions per value of these fields.
    pub(crate) caps: Vec<(usize, u32)>,
}

/// Builds a [`SqlStore`] with options; from
/// [`SqlStore::builder`](SqlStore::builder).
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
/// let store = SqliteStore::<Visit>::builder()
///     .group_commit(false)
///     .connect("sqlite::memory:")
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build` or `connect`"]
pub struct SqlStoreBuilder<B: Backend, T> {
    pub(crate) options: StoreOptions,
    /// The pool `connect` opens.
    pub(crate) pool: PoolOptions<B::Database>,
    _store: PhantomData<fn() -> (B, T)>,
}

impl<B: Backend, T> SqlStoreBuilder<B, T> {
    /// The builder's pool on `options`, after one connection on its own
    /// (closed again) within the pool's acquire timeout: an unreachable
    /// server is then said as such ("Connection refused"), where the pool
    /// would retry until its timeout and say only that it timed out.
    pub(crate) async fn open_pool(
        &self,
        options: <<B::Database as sqlx::Database>::Connection as sqlx::Connection>::Options,
    ) -> Result<Pool<B::Database>, crate::error::StoreError> {
        use sqlx::{ConnectOptions as _, Connection as _};
        let timeout = self.pool.get_acquire_timeout();
        match tokio::time::timeout(timeout, options.connect()).await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
            Ok(Err(error)) if super::health::is_outage(&error) => {
                return Err(super::health::unavailable(Some(error)));
            }
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => {
                let silent = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the database did not answer within {timeout:?}"),
                );
                return Err(super::health::unavailable(Some(sqlx::Error::Io(silent))));
            }
        }
        Ok(self.pool.clone().connect_with(options).await?)
    }
}

impl<B: Backend, T> std::fmt::Debug for SqlStoreBuilder<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStoreBuilder")
            .field("options", &self.options)
            .field("pool", &self.pool)
            .finish()
    }
}

impl<B: Backend, T: SessionData> SqlStoreBuilder<B, T> {
    pub(crate) fn new() -> Self {
        Self {
            options: StoreOptions {
                group_commit: true,
                background_checkpoints: None,
                acquire_timeout: super::health::DEFAULT_ACQUIRE_TIMEOUT,
                events: None,
                caps: Vec::new(),
            },
            pool: PoolOptions::new().acquire_timeout(super::health::DEFAULT_ACQUIRE_TIMEOUT),
            _store: PhantomData,
        }
    }

    /// How long a request waits for a connection — or, with group commit,
    /// for its turn — before the store answers that the database is
    /// unavailable (a 503 with `Retry-After`), and marks it down so that
    /// the next requests fail at once until a background probe finds it
    /// back (default 2 s; sqlx's own default is 30 s). A write still
    /// waiting for its turn is taken back, so it is never applied after
    /// its request was told it failed; one already sent waits for its
    /// outcome. Applies to pools the store opens and to your own.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.options.acquire_timeout = timeout;
        self.pool = self.pool.acquire_timeout(timeout);
        self
    }

    /// The most connections the pool opens (sqlx's default: 10). With group
    /// commit, a handful serve a busy app: concurrent requests share them.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{PgStore, Session};
    ///
    /// #[derive(Session, Default)]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let store = PgStore::<Visit>::builder()
    ///     .max_connections(4)
    ///     .idle_timeout(Some(std::time::Duration::from_secs(60)))
    ///     .connect("postgres://postgres@127.0.0.1/test")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn max_connections(mut self, max: u32) -> Self {
        self.pool = self.pool.max_connections(max);
        self
    }

    /// The fewest connections the pool keeps open (default 0).
    pub fn min_connections(mut self, min: u32) -> Self {
        self.pool = self.pool.min_connections(min);
        self
    }

    /// How long an unused connection stays open (sqlx's default: 10 min;
    /// `None`: for ever).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool = self.pool.idle_timeout(timeout);
        self
    }

    /// The pool `connect` opens, whole: for any sqlx pool setting the
    /// methods above do not name. Its acquire timeout is the pool's; the
    /// store's own wait stays [`acquire_timeout`](Self::acquire_timeout).
    pub fn pool_options(mut self, pool: PoolOptions<B::Database>) -> Self {
        self.pool = pool;
        self
    }

    /// Whether concurrent loads share one `SELECT … WHERE id IN (…)` and
    /// concurrent writes (INSERTs and UPDATEs of any sessions) are grouped
    /// into one transaction — one commit, one log flush — instead of one each
    /// (default `true`). On PostgreSQL and SQLite the group's UPDATEs of one
    /// shape are also one statement (`UPDATE … FROM (VALUES …) … RETURNING
    /// id`), on MySQL and MariaDB a lock and one statement. Each write keeps
    /// its own expiry check and compare-and-swap result, and a request is
    /// answered only after the commit that holds its write.
    pub fn group_commit(mut self, enabled: bool) -> Self {
        self.options.group_commit = enabled;
        self
    }

    /// Sends the store's lifecycle events (created, renewed, destroyed,
    /// revoked, purged) to `events`; see
    /// [`SessionEvents`](crate::SessionEvents).
    pub fn events(mut self, events: crate::events::SessionEvents) -> Self {
        self.options.events = Some(events);
        self
    }

    /// At most `max` live sessions share a value of the indexed field
    /// `index` (Spring's `maximumSessions`): when a write sets the field,
    /// the oldest sessions beyond `max` with its value are destroyed in the
    /// same transaction; the written one is kept. Concurrent sign-ins of one
    /// user, on any number of app instances, end with at most `max` (they
    /// take turns on a lock of the value: an advisory lock on PostgreSQL,
    /// the index range on MySQL, SQLite's single writer).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{Session, SqliteStore};
    ///
    /// #[derive(Session, Default)]
    /// struct Auth {
    ///     #[session(index)]
    ///     user_id: Option<i64>,
    /// }
    ///
    /// let store = SqliteStore::<Auth>::builder()
    ///     .max_sessions(&Auth::USER_ID, 3)
    ///     .connect("sqlite://sessions.db?mode=rwc")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn max_sessions<K>(mut self, index: &crate::Index<T, K>, max: u32) -> Self {
        crate::store::set_cap(&mut self.options.caps, index.field(), max);
        self
    }

    /// The store, on an existing pool.
    pub fn build(self, pool: Pool<B::Database>) -> SqlStore<B, T> {
        SqlStore::from_parts(pool, self.options)
    }
}
