//! An opt-in in-process cache in front of any store, for single-instance
//! deployments.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use chrono::{DateTime, Utc};

use super::{Record, SessionStore, Update};
use crate::{
    data::SessionData,
    error::StoreError,
    sync::{read, write},
    token::SessionId,
    value::Value,
};

/// Keeps the typed sessions this process loaded or wrote, so a read of a
/// cached session costs no round trip.
///
/// **Single instance only.** The cache sees this process's writes, not
/// another instance's: with two app instances on one database, an instance
/// would serve a session as it last saw it. Leave it off (the default) in
/// that case. Within one instance it stays exact: every write goes to the
/// store first and reaches the cache only once the store confirmed it, and a
/// compare-and-swap that finds a newer version evicts the entry, so the retry
/// reloads from the store.
///
/// ```
/// use axum_typed_session::{CachedStore, MemoryStore, Session, SessionConfig, SessionLayer};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// # let store = MemoryStore::<Visit>::new();
/// // e.g. a SqliteStore::<Visit>::connect(..).await? on a single server
/// let cached = CachedStore::new(store, 100_000);
/// let layer = SessionLayer::new(cached, SessionConfig::default());
/// ```
pub struct CachedStore<S, T> {
    inner: S,
    cache: Arc<RwLock<HashMap<SessionId, Record<T>>>>,
    capacity: usize,
}

impl<S: std::fmt::Debug, T> std::fmt::Debug for CachedStore<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("cached", &read(&self.cache).len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<S: Clone, T> Clone for CachedStore<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            capacity: self.capacity,
        }
    }
}

impl<S: SessionStore<T>, T: SessionData> CachedStore<S, T> {
    /// A cache of at most `capacity` sessions in front of `inner`. When it is
    /// full, expired entries go first, then an arbitrary half.
    pub fn new(inner: S, capacity: usize) -> Self {
        Self {
            inner,
            cache: Arc::new(RwLock::new(HashMap::new())),
            capacity: capacity.max(1),
        }
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many sessions are cached.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<SessionId, Record<T>>> {
        read(&self.cache)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SessionId, Record<T>>> {
        write(&self.cache)
    }

    fn keep(&self, record: Record<T>) {
        let mut cache = self.write();
        if cache.len() >= self.capacity && !cache.contains_key(&record.id) {
            let now = Utc::now();
            cache.retain(|_, cached| cached.expires_at > now);
            if cache.len() >= self.capacity {
                let keep = self.capacity / 2;
                let mut kept = 0;
                cache.retain(|_, _| {
                    kept += 1;
                    kept <= keep
                });
            }
        }
        cache.insert(record.id, record);
    }

    /// After a write that set a capped field: the other cached sessions
    /// with its value may have been destroyed by the cap, so they are
    /// reloaded from the store next time.
    fn evict_capped(&self, data: &T, written: SessionId, dirty: Option<crate::DirtyFields>) {
        let capped = super::capped_values(self.inner.caps(), data, dirty).unwrap_or_default();
        for (field, _, key) in capped {
            self.write().retain(|id, cached| {
                *id == written || !super::memory::holds(&cached.data, field, &key).unwrap_or(true)
            });
        }
    }

    fn forget(&self, id: &SessionId) {
        self.write().remove(id);
    }
}

impl<S: SessionStore<T>, T: SessionData> SessionStore<T> for CachedStore<S, T> {
    async fn load(
        &self,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        if let Some(cached) = self.read().get(id).filter(|cached| cached.expires_at > now) {
            return Ok(Some(cached.duplicate()));
        }
        let loaded = self.inner.load(id, now).await?;
        match &loaded {
            Some(record) => self.keep(record.duplicate()),
            None => self.forget(id),
        }
        Ok(loaded)
    }

    async fn insert(&self, record: &Record<T>) -> Result<(), StoreError> {
        self.inner.insert(record).await?;
        self.evict_capped(&record.data, record.id, None);
        self.keep(record.duplicate());
        Ok(())
    }

    async fn update(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError> {
        let written = match self.inner.update(id, data, update).await {
            Ok(written) => written,
            Err(error) => {
                // The write may or may not have landed: trust only the store.
                self.forget(id);
                return Err(error);
            }
        };
        if !written {
            self.forget(id);
            return Ok(false);
        }
        self.evict_capped(data, update.new_id.unwrap_or(*id), Some(update.dirty));
        // Apply the write to the cached copy only when the cache knows the
        // row's version after it: a compare-and-swap from the cached version,
        // or a touch. Otherwise (a last-writer-wins set, or another request
        // of this process got in between) the entry is dropped and the next
        // read reloads it: never a cached value the store does not have.
        let mut cache = self.write();
        let Some(mut record) = cache.remove(id) else {
            return Ok(true);
        };
        let exact = update.is_touch() || update.expected_version == Some(record.version);
        if exact {
            record.apply(data, &update);
            record.id = update.new_id.unwrap_or(*id);
            cache.insert(record.id, record);
        }
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.forget(id);
        self.inner.delete(id).await
    }

    fn events(&self) -> Option<&crate::events::SessionEvents> {
        self.inner.events()
    }

    fn caps(&self) -> &[(usize, u32)] {
        self.inner.caps()
    }

    async fn find_by(
        &self,
        field: usize,
        key: Value<'static>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Record<T>>, StoreError> {
        // The store is the authority: other instances' sessions count too.
        self.inner.find_by(field, key, now).await
    }

    async fn delete_by(
        &self,
        field: usize,
        key: Value<'static>,
        except: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        // Out of the cache at once, before the store confirms: a revoked
        // session must not be served from here even if the delete fails.
        self.write().retain(|id, cached| {
            Some(*id) == except || !super::memory::holds(&cached.data, field, &key).unwrap_or(true)
        });
        self.inner.delete_by(field, key, except).await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.write().retain(|_, cached| cached.expires_at > now);
        self.inner.purge_expired(now).await
    }
}
