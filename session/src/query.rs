//! Sessions by user: finding, listing and revoking the sessions that share
//! the value of an indexed field (`#[session(index)]`).

use std::{future::Future, marker::PhantomData};

use chrono::{DateTime, Utc};

use crate::{
    config::SessionConfig,
    data::SessionData,
    error::StoreError,
    events::{DestroyedBy, EventKind, SessionEvent, about},
    store::{Record, SessionStore},
    token::SessionId,
    value::{Column, Value},
};

/// An indexed field of `T` whose sessions are looked up by a `K`: the
/// derive generates one per `#[session(index)]` field, as an associated
/// constant named after it (`Auth::USER_ID`). For an `Option<K>` field the
/// key is `K`: sessions without a value are not found by any.
pub struct Index<T, K> {
    field: usize,
    key: fn(&K) -> Value<'static>,
    _data: PhantomData<fn() -> T>,
}

impl<T, K> std::fmt::Debug for Index<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("field", &self.field).finish()
    }
}

impl<T, K> Index<T, K> {
    /// Called by generated code.
    #[doc(hidden)]
    pub const fn new(field: usize, key: fn(&K) -> Value<'static>) -> Self {
        Self {
            field,
            key,
            _data: PhantomData,
        }
    }

    pub(crate) fn key(&self, key: &K) -> Value<'static> {
        (self.key)(key)
    }

    /// The field's position in the struct.
    pub(crate) fn field(&self) -> usize {
        self.field
    }
}

/// A key's column value (called by generated code).
#[doc(hidden)]
pub fn index_key<K: Column>(key: &K) -> Value<'static> {
    key.to_value().into_owned()
}

/// One of a user's sessions, as a "your devices" page shows it.
///
/// `id` is the session's public id, the SHA-256 of its token: safe to show
/// and to send back in a revoke form. The token itself is never stored.
#[derive(Debug)]
#[non_exhaustive]
pub struct SessionInfo<T> {
    /// The public id (not the token).
    pub id: SessionId,
    /// When the session was first stored.
    pub created_at: DateTime<Utc>,
    /// When it expires unless used again.
    pub expires_at: DateTime<Utc>,
    /// Whether it has the remember-me lifetime.
    pub remember: bool,
    /// Its data.
    pub data: T,
}

impl<T> SessionInfo<T> {
    fn of(record: Record<T>) -> Self {
        Self {
            id: record.id,
            created_at: record.created_at,
            expires_at: record.expires_at,
            remember: record.remember,
            data: record.data,
        }
    }

    /// When the session was last used, as the layer with `config` records
    /// it: the expiry moves once per touch fraction of the lifetime, so this
    /// is at most that fraction early (2.4 hours with the defaults: 24 h and
    /// 0.1), never later than the truth.
    pub fn last_active(&self, config: &SessionConfig) -> DateTime<Utc> {
        let lifetime = chrono::Duration::from_std(config.lifetime(self.remember))
            .unwrap_or(chrono::Duration::MAX);
        self.expires_at
            .checked_sub_signed(lifetime)
            .map_or(self.created_at, |moved| moved.max(self.created_at))
    }
}

/// Listing and revoking sessions by an indexed field, on every store.
///
/// ```
/// # async fn run() -> Result<(), axum_typed_session::StoreError> {
/// use axum_typed_session::{MemoryStore, Session, SessionQueries};
///
/// #[derive(Session, Default)]
/// struct Auth {
///     #[session(index)]
///     user_id: Option<i64>,
/// }
///
/// let store = MemoryStore::<Auth>::new();
/// let mine = store.sessions_by(&Auth::USER_ID, &42).await?; // "your devices"
/// let signed_out = store.destroy_by(&Auth::USER_ID, &42).await?; // everywhere
/// # let current = axum_typed_session::SessionToken::generate().id();
/// store.destroy_by_except(&Auth::USER_ID, &42, &current).await?; // other devices
/// # Ok(()) }
/// ```
pub trait SessionQueries<T: SessionData>: SessionStore<T> {
    /// The live sessions whose indexed field holds `key`: one statement on
    /// the SQL stores, on the column's index.
    fn sessions_by<K>(
        &self,
        index: &Index<T, K>,
        key: &K,
    ) -> impl Future<Output = Result<Vec<SessionInfo<T>>, StoreError>> + Send {
        let (field, key) = (index.field, index.key(key));
        async move {
            let records = self.find_by(field, key, Utc::now()).await?;
            Ok(records.into_iter().map(SessionInfo::of).collect())
        }
    }

    /// Deletes every session whose indexed field holds `key` ("sign out
    /// everywhere"); returns how many. A request of one of them that is in
    /// flight cannot write it back, and its browser's next request gets a
    /// fresh session.
    fn destroy_by<K>(
        &self,
        index: &Index<T, K>,
        key: &K,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        revoke(self, index.field, index.key(key), None)
    }

    /// The same, sparing the session `keep` ("sign out other devices").
    fn destroy_by_except<K>(
        &self,
        index: &Index<T, K>,
        key: &K,
        keep: &SessionId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        revoke(self, index.field, index.key(key), Some(*keep))
    }

    /// Deletes one session by its public id (a "revoke" button).
    fn destroy_session(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let id = *id;
        async move {
            self.delete(&id).await?;
            if let Some(events) = self.events() {
                events.emit(about::<T>(
                    EventKind::Destroyed {
                        by: DestroyedBy::Revoke,
                    },
                    id,
                    None,
                ));
            }
            Ok(())
        }
    }
}

/// Deletes by an indexed value and reports it.
async fn revoke<T: SessionData, S: SessionStore<T>>(
    store: &S,
    field: usize,
    key: Value<'static>,
    spared: Option<SessionId>,
) -> Result<u64, StoreError> {
    // The key is kept for the event only when someone listens.
    let reported = store.events().is_some().then(|| key.clone());
    let count = store.delete_by(field, key, spared).await?;
    if let (Some(events), Some(key)) = (store.events(), reported) {
        events.emit(SessionEvent {
            kind: EventKind::Revoked { count, spared },
            session: T::SCHEMA.struct_name,
            id: None,
            indexed: vec![(T::SCHEMA.column(field).name, key)],
            at: Utc::now(),
        });
    }
    Ok(count)
}

impl<T: SessionData, S: SessionStore<T>> SessionQueries<T> for S {}
