//! Caps ([`RedisStoreBuilder::max_sessions`](super::RedisStoreBuilder::max_sessions)):
//! at most `max` live sessions share a value of an indexed field.
//!
//! A write that sets a capped field to a value first takes the value's
//! *turn*: a key `<prefix>:cap:<column>:<value>` set with `NX` and an
//! expiry, which one writer holds at a time, on any number of app
//! instances. Holding it, the write runs as usual; then the value's live
//! sessions are listed from its index set, and the oldest beyond `max`
//! (by `created_at`) are destroyed, the written one always kept; then the
//! turn is given back. So concurrent sign-ins of one user take turns and
//! end with at most `max`, as on the SQL stores (where the turn is a lock
//! in the database).
//!
//! The same steps run on a standalone server and on Cluster: the sessions
//! of one user live in other slots than their set, so no one script could
//! reach them all there. A writer that stops while it holds a turn (its
//! process died) leaves it to expire after [`TURN_TIMEOUTS`] × the store's
//! timeout; meanwhile the value's other writes wait for it up to the
//! store's timeout and then fail with [`StoreError::Unavailable`].

use std::{
    future::Future,
    time::{Duration, Instant},
};

use chrono::Utc;

use super::{RedisStore, codec::encode, futures_join, scripts, unavailable};
use crate::{
    data::{DirtyFields, SessionData},
    error::StoreError,
    events::{EventKind, SessionEvent},
    store::capped_values,
    token::SessionId,
    value::Value,
};

/// A turn expires after this many store timeouts: longer than a write and
/// its cap step take, short enough that a dead writer's turn comes free.
pub(crate) const TURN_TIMEOUTS: u32 = 4;

/// Another writer held the value's turn for all of the store's timeout.
#[derive(Debug, thiserror::Error)]
#[error("the cap on {column} was busy with another write for {waited:?}")]
struct TurnBusy {
    column: &'static str,
    waited: Duration,
}

/// One capped value of a write: its field, cap, value and turn key.
pub(super) struct Capped {
    field: usize,
    max: u32,
    value: Value<'static>,
    turn: Vec<u8>,
}

/// The turns a write holds. Dropped before they were given back (the
/// request went away mid-write), it gives them back from a task of its
/// own.
struct Turns<T: SessionData> {
    store: RedisStore<T>,
    held: Vec<(Vec<u8>, String)>,
}

impl<T: SessionData> Turns<T> {
    async fn give_back(mut self) {
        let held = std::mem::take(&mut self.held);
        self.store.give_back(held).await;
    }
}

impl<T: SessionData> Drop for Turns<T> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let (store, held) = (self.store.clone(), std::mem::take(&mut self.held));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { store.give_back(held).await });
        }
    }
}

impl<T: SessionData> RedisStore<T> {
    /// The capped values that a write setting `data`'s `dirty` fields
    /// (every field for an insert) sets: most writes set none, and then go
    /// without [`with_caps`](Self::with_caps).
    pub(super) fn capped(
        &self,
        data: &T,
        dirty: Option<DirtyFields>,
    ) -> Result<Vec<Capped>, StoreError> {
        Ok(capped_values(&self.inner.caps, data, dirty)?
            .into_iter()
            .filter_map(|(field, max, value)| {
                let turn = self.turn_key(field, &value)?;
                Some(Capped {
                    field,
                    max,
                    value,
                    turn,
                })
            })
            .collect())
    }

    /// Runs `write` (on the session `written`) holding the turns of the
    /// `capped` values it sets; if `wrote` says it wrote, destroys the
    /// oldest sessions beyond each cap before giving the turns back.
    pub(super) async fn with_caps<R>(
        &self,
        mut capped: Vec<Capped>,
        written: SessionId,
        write: impl Future<Output = Result<R, StoreError>>,
        wrote: impl FnOnce(&R) -> bool,
    ) -> Result<R, StoreError> {
        // Always taken in the same order: two writers never wait on each other.
        capped.sort_by(|a, b| a.turn.cmp(&b.turn));
        let mut turns = Turns {
            store: self.clone(),
            held: Vec::new(),
        };
        let result = async {
            for cap in &capped {
                let token = self.take_turn(&cap.turn, cap.field).await?;
                turns.held.push((cap.turn.clone(), token));
            }
            let result = write.await?;
            if wrote(&result) {
                for cap in &capped {
                    self.enforce_cap(cap, written).await?;
                }
            }
            Ok(result)
        }
        .await;
        turns.give_back().await;
        result
    }

    /// The key of the turn on `value` of `field`.
    fn turn_key(&self, field: usize, value: &Value<'_>) -> Option<Vec<u8>> {
        let mut key = format!(
            "{}:cap:{}:",
            self.inner.prefix,
            T::SCHEMA.column(field).name
        )
        .into_bytes();
        key.extend(encode(value)?);
        Some(key)
    }

    /// Waits for the turn at `key`, up to the store's timeout; answers the
    /// token that gives it back.
    async fn take_turn(&self, key: &[u8], field: usize) -> Result<String, StoreError> {
        let token = format!("{:016x}", rand::random::<u64>());
        let expiry = self.inner.timeout.saturating_mul(TURN_TIMEOUTS);
        let expiry_ms = u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX).max(1);
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(&token).arg("NX").arg("PX").arg(expiry_ms);
            // `OK` if it was free, nil if another writer holds it.
            let taken: Option<String> = self.command(set, Some(key)).await?;
            if taken.is_some() {
                return Ok(token);
            }
            if started.elapsed() + pause > self.inner.timeout {
                return Err(unavailable(TurnBusy {
                    column: T::SCHEMA.column(field).name,
                    waited: started.elapsed(),
                }));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Gives turns back; one that cannot be (Redis is away) expires.
    async fn give_back(&self, held: Vec<(Vec<u8>, String)>) {
        for (key, token) in held {
            let mut call = scripts::GIVE_BACK_TEXT.call(key);
            call.arg(token);
            let _ = self.call_value(call).await;
        }
    }

    /// Destroys the oldest live sessions beyond `cap.max` that hold its
    /// value, keeping `written`; reports them as one `Capped` event.
    async fn enforce_cap(&self, cap: &Capped, written: SessionId) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut holders: Vec<_> = self
            .members(cap.field, &cap.value, now)
            .await?
            .into_iter()
            .map(|record| {
                (
                    record.id != written,
                    std::cmp::Reverse(record.created_at),
                    record.id,
                )
            })
            .collect();
        holders.sort();
        let beyond: Vec<SessionId> = holders
            .iter()
            .skip(cap.max as usize)
            .map(|(_, _, id)| *id)
            .collect();
        let mut count = 0;
        for deleted in futures_join(beyond.iter().map(|id| self.delete_counted(id))).await {
            count += u64::from(deleted?);
        }
        if let (Some(events), 1..) = (&self.inner.events, count) {
            events.emit(SessionEvent {
                kind: EventKind::Capped {
                    count,
                    max: cap.max,
                },
                session: T::SCHEMA.struct_name,
                id: Some(written),
                indexed: vec![(T::SCHEMA.column(cap.field).name, cap.value.clone())],
                at: now,
            });
        }
        Ok(())
    }
}
