//! Sessions in the process's memory, kept as the typed structs themselves.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use chrono::{DateTime, Utc};

use super::{Record, SessionStore, Update};
use crate::events::SessionEvents;
use crate::{
    data::SessionData,
    error::StoreError,
    sync::{lock, read, write},
    token::SessionId,
    value::Value,
};

/// Whether field `field` of `data` holds `key` (as its column value).
pub(crate) fn holds<T: SessionData>(
    data: &T,
    field: usize,
    key: &Value<'_>,
) -> Result<bool, StoreError> {
    Ok(data.encode_column(field)? == *key)
}

/// Independent locks, so concurrent requests of different sessions rarely wait.
const SHARDS: usize = 16;

/// A store in the process's memory: non-persistent mode.
///
/// Sessions are the typed structs themselves, never serialized; they are lost
/// when the process exits and are not shared between instances. Clones share
/// the same sessions.
///
/// ```
/// use axum_typed_session::{MemoryStore, Session, SessionConfig, SessionLayer};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// let store = MemoryStore::<Visit>::new();
/// let app: axum::Router = axum::Router::new().layer(SessionLayer::new(store, SessionConfig::default()));
/// ```
pub struct MemoryStore<T> {
    shards: Arc<[Shard<T>; SHARDS]>,
    events: Option<SessionEvents>,
    /// At most this many live sessions per value of these fields.
    caps: Vec<(usize, u32)>,
    /// Held by a write and its cap, so concurrent writes take turns.
    cap_lock: Arc<std::sync::Mutex<()>>,
}

type Shard<T> = RwLock<HashMap<SessionId, Record<T>>>;

impl<T> std::fmt::Debug for MemoryStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .finish()
    }
}

impl<T> Clone for MemoryStore<T> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            events: self.events.clone(),
            caps: self.caps.clone(),
            cap_lock: self.cap_lock.clone(),
        }
    }
}

impl<T> Default for MemoryStore<T> {
    fn default() -> Self {
        Self {
            shards: Arc::new(std::array::from_fn(|_| RwLock::new(HashMap::new()))),
            events: None,
            caps: Vec::new(),
            cap_lock: Arc::default(),
        }
    }
}

impl<T> MemoryStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends this handle's lifecycle events to `events` (see
    /// [`SessionEvents`]).
    #[must_use]
    pub fn with_events(mut self, events: SessionEvents) -> Self {
        self.events = Some(events);
        self
    }

    /// At most `max` live sessions share a value of the indexed field
    /// `index`: a write that sets it destroys the oldest beyond `max`
    /// (see [`SqlStoreBuilder::max_sessions`](crate::store::sql::SqlStoreBuilder::max_sessions)).
    #[must_use]
    pub fn with_max_sessions<K>(mut self, index: &crate::Index<T, K>, max: u32) -> Self {
        super::set_cap(&mut self.caps, index.field(), max);
        self
    }

    /// Destroys the oldest sessions beyond each cap whose field `data` sets
    /// (`dirty`; every field for an insert), sparing `written`.
    fn enforce_caps(
        &self,
        data: &T,
        written: SessionId,
        dirty: Option<crate::DirtyFields>,
    ) -> Result<(), StoreError>
    where
        T: SessionData,
    {
        let now = Utc::now();
        for (field, max, key) in super::capped_values(&self.caps, data, dirty)? {
            let mut holders = Vec::new();
            for shard in self.shards.iter() {
                for (id, record) in read(shard).iter() {
                    if record.expires_at > now && holds(&record.data, field, &key)? {
                        holders.push((*id != written, std::cmp::Reverse(record.created_at), *id));
                    }
                }
            }
            holders.sort();
            let beyond: Vec<SessionId> = holders
                .iter()
                .skip(max as usize)
                .map(|(_, _, id)| *id)
                .collect();
            for id in &beyond {
                write(self.shard(id)).remove(id);
            }
            if let (Some(events), false) = (&self.events, beyond.is_empty()) {
                events.emit(crate::events::SessionEvent {
                    kind: crate::events::EventKind::Capped {
                        count: beyond.len() as u64,
                        max,
                    },
                    session: T::SCHEMA.struct_name,
                    id: Some(written),
                    indexed: vec![(T::SCHEMA.column(field).name, key)],
                    at: now,
                });
            }
        }
        Ok(())
    }

    /// Applies `update` to the session `id` if it is live and current.
    fn update_record(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError>
    where
        T: SessionData,
    {
        let mut shard = write(self.shard(id));
        let Some(record) = shard.get_mut(id) else {
            return Ok(false);
        };
        let live = record.expires_at > update.now;
        let current = update
            .expected_version
            .is_none_or(|version| version == record.version);
        if !live || !current {
            return Ok(false);
        }
        record.apply(data, &update);
        if let Some(new_id) = update.new_id
            && let Some(mut moved) = shard.remove(id)
        {
            drop(shard);
            moved.id = new_id;
            write(self.shard(&new_id)).insert(new_id, moved);
        }
        Ok(true)
    }

    /// How many sessions are held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).len()).sum()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: &SessionId) -> &Shard<T> {
        // The id is a SHA-256 digest: any byte is uniformly distributed.
        &self.shards[usize::from(id.as_bytes()[0]) % SHARDS]
    }
}

impl<T: SessionData> SessionStore<T> for MemoryStore<T> {
    async fn load(
        &self,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        let shard = read(self.shard(id));
        Ok(shard
            .get(id)
            .filter(|record| record.expires_at > now)
            .map(Record::duplicate))
    }

    async fn insert(&self, record: &Record<T>) -> Result<(), StoreError> {
        let _turn = (!self.caps.is_empty()).then(|| lock(&self.cap_lock));
        let copy = record.duplicate();
        write(self.shard(&record.id)).insert(record.id, copy);
        self.enforce_caps(&record.data, record.id, None)
    }

    async fn update(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError> {
        let _turn = (!self.caps.is_empty()).then(|| lock(&self.cap_lock));
        let written = self.update_record(id, data, update)?;
        if written {
            self.enforce_caps(data, update.new_id.unwrap_or(*id), Some(update.dirty))?;
        }
        Ok(written)
    }

    fn caps(&self) -> &[(usize, u32)] {
        &self.caps
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        write(self.shard(id)).remove(id);
        Ok(())
    }

    fn events(&self) -> Option<&SessionEvents> {
        self.events.as_ref()
    }

    async fn find_by(
        &self,
        field: usize,
        key: Value<'static>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Record<T>>, StoreError> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            for record in read(shard).values() {
                if record.expires_at > now && holds(&record.data, field, &key)? {
                    found.push(record.duplicate());
                }
            }
        }
        Ok(found)
    }

    async fn delete_by(
        &self,
        field: usize,
        key: Value<'static>,
        except: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            let before = shard.len();
            let mut failed = None;
            shard.retain(|id, record| {
                if Some(*id) == except {
                    return true;
                }
                match holds(&record.data, field, &key) {
                    Ok(matches) => !matches,
                    Err(error) => {
                        failed = Some(error);
                        true
                    }
                }
            });
            deleted += (before - shard.len()) as u64;
            if let Some(error) = failed {
                return Err(error);
            }
        }
        Ok(deleted)
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            let before = shard.len();
            shard.retain(|_, record| record.expires_at > now);
            purged += (before - shard.len()) as u64;
        }
        Ok(purged)
    }
}
