//! The opt-in client-side cache of a standalone [`RedisStore`](super::RedisStore)
//! ([`RedisStoreBuilder::client_cache`](super::RedisStoreBuilder::client_cache)):
//! sessions this process loaded or wrote, kept exact by Redis itself.
//!
//! How it stays exact, with any number of app instances on one Redis:
//!
//! - **Tracking.** The store's connection speaks RESP3 with
//!   `CLIENT TRACKING ON NOLOOP`: Redis remembers the keys this connection
//!   read and, when anyone else changes one, pushes an invalidation on the
//!   same connection. The connection hands pushes to
//!   [`ClientCache::on_push`] in the order they arrive, before any reply
//!   that follows them, on the task that reads the socket
//!   ([`super::own`]).
//!   Our own writes do not invalidate (`NOLOOP`), so every write script
//!   reads the key again at its end to keep it tracked.
//! - **A sync point per read.** A cached session is served only after a
//!   group pipeline sent after the request started has come back
//!   ([`super::group`]): every invalidation of a write Redis applied
//!   before it has arrived by then. One group serves every request
//!   waiting at that moment, so a read costs a share of a round trip
//!   instead of an `HMGET` of its own, and it still sees every write that
//!   finished before it began, from any instance.
//! - **Tickets.** Before a load or a write is sent, its key gets a ticket
//!   ([`ClientCache::begin`]); an invalidation removes the entry and with it
//!   the ticket. The reply becomes the cached value only if the ticket is
//!   still there, no other call of this process on that key overlapped it,
//!   and it ran where tracking was on (the group's `CLIENT ID` says). A
//!   reconnect empties the cache and tracking is switched on again; each
//!   time tracking goes off or on a generation is bumped, so that a reply
//!   that came before is not kept, even if the new connection got the old
//!   client id (ids start again at 1 after a Redis restart).

use std::{
    any::Any,
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use redis::{PushInfo, PushKind};

use crate::{data::SessionData, store::Record, sync::lock};

/// A cached session, type-erased so that the stores of several structs
/// can share one connection ([`RedisStore::for_struct`](super::RedisStore::for_struct)).
struct Cached {
    record: Box<dyn Any + Send + Sync>,
    expires_at: DateTime<Utc>,
}

enum State {
    /// Exact as of the last sync point.
    Ready(Cached),
    /// Calls of this process on the key are in flight. `clean`: only one
    /// ever joined (`base`: the cached value it started from, if any).
    Busy {
        ops: u32,
        clean: bool,
        base: Option<Cached>,
    },
}

struct Entry {
    epoch: u64,
    state: State,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Vec<u8>, Entry>,
    next_epoch: u64,
}

/// The entry a call began on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
}

pub(crate) struct ClientCache {
    entries: Mutex<Entries>,
    capacity: usize,
    /// The `CLIENT ID` of the connection whose tracking is on; 0: none.
    tracking: AtomicI64,
    /// Bumped whenever tracking goes off or on again: a reply counts as
    /// tracked only if its generation is still the current one.
    generation: AtomicU64,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache")
            .field("cached", &lock(&self.entries).map.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ClientCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity: capacity.max(1),
            tracking: AtomicI64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Called by the client for every push, in the order they arrive.
    pub(crate) fn on_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(redis::Value::Array(keys)) => {
                    let mut entries = lock(&self.entries);
                    for key in keys {
                        if let redis::Value::BulkString(key) = key {
                            entries.map.remove(key.as_slice());
                        }
                    }
                }
                // FLUSHDB / FLUSHALL, or a form we do not know: all of it.
                _ => self.clear(),
            },
            // The connection is gone, and its tracking with it.
            PushKind::Disconnection => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.tracking.store(0, Ordering::SeqCst);
                self.clear();
            }
            _ => {}
        }
    }

    pub(crate) fn clear(&self) {
        lock(&self.entries).map.clear();
    }

    /// The `CLIENT ID` of the connection whose tracking is on; 0: none.
    pub(crate) fn tracking(&self) -> i64 {
        self.tracking.load(Ordering::SeqCst)
    }

    /// Whether `connection` (a `CLIENT ID`) is the one whose tracking is on.
    pub(crate) fn is_tracking(&self, connection: i64) -> bool {
        connection != 0 && self.tracking.load(Ordering::SeqCst) == connection
    }

    /// Tracking is now on for `connection`; what was cached before is not
    /// tracked there, so it goes.
    pub(crate) fn tracking_on(&self, connection: i64) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.clear();
        self.tracking.store(connection, Ordering::SeqCst);
    }

    /// The current tracking generation (see [`finish`](Self::finish)).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).map.len()
    }

    /// The cached session at `key`, if any and not expired.
    pub(crate) fn get<T: SessionData>(&self, key: &[u8], now: DateTime<Utc>) -> Option<Record<T>> {
        let entries = lock(&self.entries);
        match &entries.map.get(key)?.state {
            State::Ready(cached) if cached.expires_at > now => cached
                .record
                .downcast_ref::<Record<T>>()
                .map(Record::duplicate),
            _ => None,
        }
    }

    /// Whether `key` holds a session that [`get`](Self::get) would serve.
    pub(crate) fn has(&self, key: &[u8], now: DateTime<Utc>) -> bool {
        matches!(
            lock(&self.entries).map.get(key).map(|entry| &entry.state),
            Some(State::Ready(cached)) if cached.expires_at > now
        )
    }

    /// A call on `key` is about to be sent.
    pub(crate) fn begin(&self, key: &[u8]) -> Ticket {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.map.get_mut(key) {
            let placeholder = State::Busy {
                ops: 0,
                clean: false,
                base: None,
            };
            entry.state = match std::mem::replace(&mut entry.state, placeholder) {
                State::Ready(cached) => State::Busy {
                    ops: 1,
                    clean: true,
                    base: Some(cached),
                },
                // Another call of ours is in flight: neither will know the
                // final state.
                State::Busy { ops, .. } => State::Busy {
                    ops: ops + 1,
                    clean: false,
                    base: None,
                },
            };
            return Ticket { epoch: entry.epoch };
        }
        let epoch = entries.next_epoch;
        entries.next_epoch += 1;
        entries.map.insert(
            key.to_vec(),
            Entry {
                epoch,
                state: State::Busy {
                    ops: 1,
                    clean: true,
                    base: None,
                },
            },
        );
        Ticket { epoch }
    }

    /// The call that began with `ticket` is over. `tracked`: the tracking
    /// generation it ran under, if it ran where tracking was on
    /// ([`Answer::tracked`](super::group::Answer::tracked)); a reply from
    /// before a reconnect is not kept.
    /// `outcome` gets the value the entry started from (if it was cached)
    /// and gives what the store holds now, if it knows.
    pub(crate) fn finish<T: SessionData>(
        &self,
        key: &[u8],
        ticket: Ticket,
        tracked: Option<u64>,
        outcome: impl FnOnce(Option<Record<T>>) -> Option<Record<T>>,
    ) {
        let tracked = tracked == Some(self.generation());
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.map.get_mut(key) else {
            return;
        };
        if entry.epoch != ticket.epoch {
            return;
        }
        let State::Busy { ops, clean, base } = &mut entry.state else {
            return;
        };
        *ops = ops.saturating_sub(1);
        if *ops > 0 {
            return;
        }
        let kept = if *clean && tracked {
            let base = base
                .take()
                .and_then(|cached| cached.record.downcast::<Record<T>>().ok())
                .map(|record| *record);
            outcome(base)
        } else {
            None
        };
        match kept {
            Some(record) => {
                entry.state = State::Ready(Cached {
                    expires_at: record.expires_at,
                    record: Box::new(record),
                });
                let full = entries.map.len() > self.capacity;
                if full {
                    Self::shrink(&mut entries, self.capacity);
                }
            }
            None => {
                entries.map.remove(key);
            }
        }
    }

    /// Drops `key` now: an entry in flight keeps nothing when it finishes.
    pub(crate) fn remove(&self, key: &[u8]) {
        lock(&self.entries).map.remove(key);
    }

    /// Over capacity: expired sessions go first, then ready ones until half
    /// is left (entries in flight stay; their calls finish them).
    fn shrink(entries: &mut Entries, capacity: usize) {
        let now = Utc::now();
        entries.map.retain(|_, entry| match &entry.state {
            State::Ready(cached) => cached.expires_at > now,
            State::Busy { .. } => true,
        });
        if entries.map.len() > capacity {
            let mut keep = capacity / 2;
            entries.map.retain(|_, entry| match entry.state {
                State::Busy { .. } => true,
                State::Ready(_) => {
                    if keep > 0 {
                        keep -= 1;
                        true
                    } else {
                        false
                    }
                }
            });
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::token::SessionToken;

    #[derive(crate::Session, Default)]
    struct Data {
        count: i64,
    }

    fn record(count: i64) -> Record<Data> {
        let now = Utc::now();
        Record {
            id: SessionToken::generate().id(),
            data: Data { count },
            version: 1,
            expires_at: now + chrono::Duration::minutes(5),
            created_at: now,
            remember: false,
        }
    }

    fn cache() -> ClientCache {
        let cache = ClientCache::new(100);
        cache.tracking_on(7);
        cache
    }

    /// A load of `count` at `k` that ran where tracking was on.
    fn fill(cache: &ClientCache, count: i64) {
        fill_at(cache, b"k", count);
    }

    /// A load of `count` at `key` that ran where tracking was on.
    pub(crate) fn fill_at(cache: &ClientCache, key: &[u8], count: i64) {
        let ticket = cache.begin(key);
        cache.finish(key, ticket, Some(cache.generation()), |_| {
            Some(record(count))
        });
    }

    fn disconnect(cache: &ClientCache) {
        cache.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
    }

    #[test]
    fn a_fill_is_kept_only_where_tracking_was_on() {
        let cache = cache();
        let ticket = cache.begin(b"k");
        cache.finish(b"k", ticket, None, |_| Some(record(1)));
        assert!(!cache.has(b"k", Utc::now()));
        fill(&cache, 1);
        assert_eq!(
            cache.get::<Data>(b"k", Utc::now()).map(|r| r.data.count),
            Some(1)
        );
    }

    #[test]
    fn an_invalidation_during_a_call_keeps_its_reply_out() {
        let cache = cache();
        let ticket = cache.begin(b"k");
        cache.on_push(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![redis::Value::Array(vec![redis::Value::BulkString(
                b"k".to_vec(),
            )])],
        });
        cache.finish(b"k", ticket, Some(cache.generation()), |_| Some(record(1)));
        assert!(!cache.has(b"k", Utc::now()));
    }

    #[test]
    fn overlapping_calls_of_ours_keep_nothing() {
        let cache = cache();
        let first = cache.begin(b"k");
        let second = cache.begin(b"k");
        cache.finish(b"k", second, Some(cache.generation()), |_| Some(record(2)));
        cache.finish(b"k", first, Some(cache.generation()), |_| Some(record(1)));
        assert!(!cache.has(b"k", Utc::now()));
    }

    #[test]
    fn a_write_applies_to_the_value_it_started_from() {
        let cache = cache();
        fill(&cache, 1);
        let ticket = cache.begin(b"k");
        assert!(!cache.has(b"k", Utc::now()), "in flight: not served");
        cache.finish::<Data>(b"k", ticket, Some(cache.generation()), |base| {
            base.map(|mut record| {
                record.data.count += 1;
                record
            })
        });
        assert_eq!(
            cache.get::<Data>(b"k", Utc::now()).map(|r| r.data.count),
            Some(2)
        );
    }

    #[test]
    fn a_reply_from_before_a_reconnect_is_not_kept() {
        let cache = cache();
        let ticket = cache.begin(b"k");
        // The reply was tracked on connection 7 ...
        let tracked = Some(cache.generation());
        // ... which dropped, and tracking came on again, on the same id
        // (ids start again at 1 after a Redis restart), before the caller
        // finished.
        disconnect(&cache);
        cache.tracking_on(7);
        cache.finish(b"k", ticket, tracked, |_| Some(record(1)));
        assert!(!cache.has(b"k", Utc::now()));
    }

    #[test]
    fn a_reconnect_empties_the_cache() {
        let cache = cache();
        fill(&cache, 1);
        disconnect(&cache);
        assert!(!cache.has(b"k", Utc::now()));
        assert!(!cache.is_tracking(7));
    }
}
