//! Where sessions live: the [`SessionStore`] trait and its implementations.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::{data::SessionData, error::StoreError, token::SessionId, value::Value};

mod cached;
mod memory;
mod record;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "_sql")]
pub mod sql;

pub use self::{
    cached::CachedStore,
    memory::MemoryStore,
    record::{Record, Update},
};

/// Sets the cap on `field` to `max` (at least 1), replacing an earlier one.
pub(crate) fn set_cap(caps: &mut Vec<(usize, u32)>, field: usize, max: u32) {
    caps.retain(|(capped, _)| *capped != field);
    caps.push((field, max.max(1)));
}

/// The caps a write must enforce: each capped field it sets (`dirty`; every
/// field for an insert) to a value, with that value and the cap.
pub(crate) fn capped_values<T: SessionData>(
    caps: &[(usize, u32)],
    data: &T,
    dirty: Option<crate::DirtyFields>,
) -> Result<Vec<(usize, u32, Value<'static>)>, StoreError> {
    let mut capped = Vec::new();
    for &(field, max) in caps {
        if dirty.is_some_and(|dirty| !dirty.contains(field)) {
            continue;
        }
        let value = data.encode_column(field)?.into_owned();
        if !matches!(value, Value::Null(_)) {
            capped.push((field, max, value));
        }
    }
    Ok(capped)
}

/// Storage for one session struct `T`.
///
/// Every method is one statement (one round trip) on the SQL stores. None
/// of them ever creates a row except [`insert`](Self::insert), so a write
/// that races a `destroy` or `renew` cannot bring the old session back.
///
/// # Implementing a store
///
/// Five methods are required; the queries by an indexed field, the caps
/// and the events have defaults (unsupported, none, none). A store that
/// counts the writes of the one it wraps:
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
///
/// use axum_typed_session::{MemoryStore, Record, SessionData, SessionId, SessionStore, StoreError, Update};
/// use chrono::{DateTime, Utc};
///
/// struct Counted<T> {
///     inner: MemoryStore<T>,
///     writes: Arc<AtomicU64>,
/// }
///
/// impl<T> Clone for Counted<T> {
///     fn clone(&self) -> Self {
///         Self { inner: self.inner.clone(), writes: self.writes.clone() }
///     }
/// }
///
/// impl<T: SessionData> SessionStore<T> for Counted<T> {
///     async fn load(&self, id: &SessionId, now: DateTime<Utc>) -> Result<Option<Record<T>>, StoreError> {
///         self.inner.load(id, now).await
///     }
///
///     async fn insert(&self, record: &Record<T>) -> Result<(), StoreError> {
///         self.writes.fetch_add(1, Ordering::Relaxed);
///         self.inner.insert(record).await
///     }
///
///     /// Must never create a row: a destroyed or renewed session stays gone.
///     async fn update(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError> {
///         self.writes.fetch_add(1, Ordering::Relaxed);
///         self.inner.update(id, data, update).await
///     }
///
///     async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
///         self.inner.delete(id).await
///     }
///
///     async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
///         self.inner.purge_expired(now).await
///     }
/// }
/// ```
pub trait SessionStore<T: SessionData>: Clone + Send + Sync + 'static {
    /// The live (unexpired) session with this id.
    fn load(
        &self,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Record<T>>, StoreError>> + Send;

    /// Stores a new session.
    fn insert(&self, record: &Record<T>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes the dirty fields of `data` and, if given, the new expiry;
    /// bumps `version` unless the update only extends the expiry
    /// ([`Update::is_touch`]).
    /// `Ok(false)`: no live row matched (gone, expired, or a newer version).
    fn update(
        &self,
        id: &SessionId,
        data: &T,
        update: Update,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes a session; deleting a missing one is not an error.
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live sessions whose field `field` (an indexed one) holds `key`,
    /// in one statement on the SQL stores, on the column's index. Default:
    /// [`StoreError::Unsupported`].
    fn find_by(
        &self,
        field: usize,
        key: Value<'static>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Record<T>>, StoreError>> + Send {
        let _ = (field, key, now);
        async {
            Err(StoreError::Unsupported {
                what: "queries by an indexed field",
            })
        }
    }

    /// Deletes the sessions whose field `field` holds `key`, except the one
    /// with id `except`; returns how many. Default:
    /// [`StoreError::Unsupported`].
    fn delete_by(
        &self,
        field: usize,
        key: Value<'static>,
        except: Option<SessionId>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = (field, key, except);
        async {
            Err(StoreError::Unsupported {
                what: "revoking by an indexed field",
            })
        }
    }

    /// The caps this store keeps: (field, at most this many live sessions
    /// per value). Default: none. A cache in front of the store evicts what
    /// a cap may have destroyed.
    fn caps(&self) -> &[(usize, u32)] {
        &[]
    }

    /// Where this store sends lifecycle events, if anywhere (default:
    /// nowhere). The layer and the queries report through it.
    fn events(&self) -> Option<&crate::events::SessionEvents> {
        None
    }

    /// Deletes expired sessions, returns how many.
    fn purge_expired(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
