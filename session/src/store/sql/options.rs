//! Options a store is built with: set before it exists, so that no switch
//! can silently do nothing on a store that is already shared.

use std::marker::PhantomData;

use sqlx::Pool;

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
    _store: PhantomData<fn() -> (B, T)>,
}

impl<B: Backend, T> std::fmt::Debug for SqlStoreBuilder<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStoreBuilder")
            .field("options", &self.options)
            .finish()
    }
}

impl<B: Backend, T: SessionData> SqlStoreBuilder<B, T> {
    pub(crate) fn new() -> Self {
        Self {
            options: StoreOptions {
                group_commit: true,
                background_checkpoints: None,
            },
            _store: PhantomData,
        }
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

    /// The store, on an existing pool.
    pub fn build(self, pool: Pool<B::Database>) -> SqlStore<B, T> {
        SqlStore::from_parts(pool, self.options)
    }
}
