//! The `Session<T>` extractor and the per-request state behind it.

use std::{
    future::Future,
    ops::Deref,
    pin::Pin,
    sync::{Arc, Mutex},
};

use axum::extract::FromRequestParts;
use chrono::{DateTime, Utc};
use http::request::Parts;

use crate::{
    cookie::Presented,
    data::{DirtyFields, SessionData},
    error::{SessionError, StoreError},
    store::Record,
    sync::lock,
    token::SessionId,
};

/// One recorded change, replayed on fresh data after a write conflict.
type Change<T> = Box<dyn FnMut(&mut T) + Send>;

/// What loading a session yields, boxed for the one dynamic call.
pub(crate) type LoadFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<Option<(Record<T>, Location)>, StoreError>> + Send + 'a>>;

/// Where a session is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// The layer's store.
    Store,
    /// The process's memory, until marked storable ([`SessionMode::Storable`](crate::SessionMode::Storable)).
    Memory,
}

/// Loads a session for the extractor without naming the store's type.
///
/// This is the one dynamic call per request that touches the session: the
/// extractor only knows `T`, the layer knows the store.
pub(crate) trait Loader<T: SessionData>: Send + Sync {
    /// The token the request presents, if any is valid.
    fn read_token(&self, headers: &http::HeaderMap) -> Option<Presented>;

    fn load<'a>(&'a self, id: &'a SessionId) -> LoadFuture<'a, T>;
}

/// What a request did to its session, as seen by the layer afterwards.
pub(crate) struct State<T> {
    /// `None` until the first extractor loaded the session.
    pub(crate) data: Option<T>,
    /// The token the client presented, read when the session is first
    /// extracted (a request that never extracts it parses no cookie).
    pub(crate) presented: Option<Presented>,
    /// The stored row's metadata; `None` for a session not in the store.
    pub(crate) stored: Option<StoredMeta>,
    pub(crate) changes: Changes<T>,
    pub(crate) destroy: bool,
    pub(crate) renew: bool,
    /// A remember-me change asked for by the handler.
    pub(crate) remember: Option<bool>,
    /// A storable (consent) change asked for by the handler.
    pub(crate) storable: Option<bool>,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        Self {
            data: None,
            presented: None,
            stored: None,
            changes: Changes::default(),
            destroy: false,
            renew: false,
            remember: None,
            storable: None,
        }
    }
}

/// The changes a request made, to write them and to replay them.
pub(crate) struct Changes<T> {
    pub(crate) dirty: DirtyFields,
    /// Every change in order, for replay after a conflict.
    pub(crate) log: Vec<Change<T>>,
    /// Whether a read-modify-write closure ran: the write must then be a
    /// compare-and-swap on `version`.
    pub(crate) compare_and_swap: bool,
}

impl<T> Default for Changes<T> {
    fn default() -> Self {
        Self {
            dirty: DirtyFields::NONE,
            log: Vec::new(),
            compare_and_swap: false,
        }
    }
}

/// The parts of a stored row besides the data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredMeta {
    pub(crate) id: SessionId,
    pub(crate) version: i64,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) remember: bool,
    pub(crate) location: Location,
}

pub(crate) struct Shared<T: SessionData> {
    /// Whether a new session goes to the store without `set_store(true)`.
    default_storable: bool,
    loader: Arc<dyn Loader<T>>,
    load_lock: tokio::sync::Mutex<()>,
    pub(crate) state: Mutex<State<T>>,
}

/// The request's session as the layer put it in the request extensions.
pub(crate) struct PendingSession<T: SessionData>(pub(crate) Arc<Shared<T>>);

impl<T: SessionData> Clone for PendingSession<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: SessionData> PendingSession<T> {
    pub(crate) fn new(default_storable: bool, loader: Arc<dyn Loader<T>>) -> Self {
        Self(Arc::new(Shared {
            default_storable,
            loader,
            load_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
        }))
    }

    /// Loads the session once per request, however many extractors ask.
    async fn load(&self, headers: &http::HeaderMap) -> Result<Handle<T>, StoreError> {
        let shared = &self.0;
        let _loading = shared.load_lock.lock().await;
        if lock(&shared.state).data.is_some() {
            return Ok(Handle(self.0.clone()));
        }
        let presented = shared.loader.read_token(headers);
        let record = match &presented {
            Some(presented) => shared.loader.load(&presented.token.id()).await?,
            None => None,
        };
        let mut state = lock(&shared.state);
        state.presented = presented;
        match record {
            Some((record, location)) => {
                state.stored = Some(StoredMeta {
                    id: record.id,
                    version: record.version,
                    expires_at: record.expires_at,
                    created_at: record.created_at,
                    remember: record.remember,
                    location,
                });
                state.data = Some(record.data);
            }
            None => state.data = Some(T::default()),
        }
        drop(state);
        Ok(Handle(self.0.clone()))
    }
}

/// A loaded session: what generated accessors read and change.
///
/// Only the extractor creates one, after loading, so the data is always there.
#[doc(hidden)]
pub struct Handle<T: SessionData>(Arc<Shared<T>>);

impl<T: SessionData> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: SessionData> AsRef<Handle<T>> for Handle<T> {
    fn as_ref(&self) -> &Handle<T> {
        self
    }
}

impl<T: SessionData> Handle<T> {
    fn with_changes<R>(&self, f: impl FnOnce(&mut Changes<T>, &mut T) -> R) -> R {
        let mut guard = lock(&self.0.state);
        let State { data, changes, .. } = &mut *guard;
        f(
            changes,
            data.as_mut()
                .expect("a Handle exists only for a loaded session"),
        )
    }

    /// Reads through a closure (generated getters clone the field).
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let guard = lock(&self.0.state);
        f(guard
            .data
            .as_ref()
            .expect("a Handle exists only for a loaded session"))
    }

    /// Sets field `index` (generated setters). Last writer wins for that column.
    pub fn set<F: Send + 'static>(
        &self,
        index: usize,
        value: F,
        field: fn(&mut T) -> &mut F,
        clone: fn(&F) -> F,
    ) {
        self.with_changes(|changes, data| {
            *field(data) = clone(&value);
            changes.dirty.insert(index);
            changes
                .log
                .push(Box::new(move |data| *field(data) = clone(&value)));
        });
    }

    /// Read-modify-write of field `index` (generated `update_<field>`): the
    /// closure is replayed on fresh data if another request wrote first.
    pub fn update_field<F: 'static, C>(
        &self,
        index: usize,
        mut change: C,
        field: fn(&mut T) -> &mut F,
    ) where
        C: FnMut(&mut F) + Send + 'static,
    {
        self.with_changes(|changes, data| {
            change(field(data));
            changes.dirty.insert(index);
            changes.compare_and_swap = true;
            changes.log.push(Box::new(move |data| change(field(data))));
        });
    }

    /// Read-modify-write of several fields at once; only fields whose value
    /// changed are written.
    pub fn update_all<C>(&self, mut change: C) -> Result<(), crate::data::EncodeError>
    where
        C: FnMut(&mut T) + Send + 'static,
    {
        self.with_changes(|changes, data| {
            let before = data.duplicate();
            change(data);
            changes.dirty = changes.dirty.union(changed_fields(&before, data)?);
            changes.compare_and_swap = true;
            changes.log.push(Box::new(change));
            Ok(())
        })
    }

    fn meta(&self) -> Option<StoredMeta> {
        lock(&self.0.state).stored
    }
}

/// The fields whose column values differ between two versions of a struct.
pub(crate) fn changed_fields<T: SessionData>(
    before: &T,
    after: &T,
) -> Result<DirtyFields, crate::data::EncodeError> {
    let mut changed = DirtyFields::NONE;
    for index in 0..T::SCHEMA.columns.len() {
        if before.encode_column(index)? != after.encode_column(index)? {
            changed.insert(index);
        }
    }
    Ok(changed)
}

/// The typed session of a request: an axum extractor.
///
/// `Session<T>` derefs to the accessors `#[derive(Session)]` generated for
/// `T`: a getter `field()`, a setter `set_field(value)` and a read-modify-write
/// `update_field(|value| ...)` per field.
///
/// ```
/// use axum_typed_session::Session;
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// async fn greet(visit: Session<Visit>) -> String {
///     visit.update_count(|count| *count += 1);
///     visit.count().to_string()
/// }
/// ```
///
/// Loading happens here, on first extraction: a request whose handler never
/// names `Session<T>` costs no store call. A store error rejects the request
/// with a 500 (see [`SessionError`]); it never yields an empty session.
///
/// Writes happen after the handler, in the [`SessionLayer`](crate::SessionLayer):
/// a new session is one INSERT (only once something was set), a changed one
/// is one UPDATE of the changed columns, an unchanged one is not written.
/// `set_field` is last-writer-wins for its column; `update_field` and
/// [`update`](Self::update) are compare-and-swap: replayed on the fresh row
/// when a concurrent request wrote first, so the closures must be `FnMut`
/// and may run more than once.
pub struct Session<T: SessionData> {
    accessors: T::Accessors,
}

impl<T: SessionData> Deref for Session<T> {
    type Target = T::Accessors;

    fn deref(&self) -> &Self::Target {
        &self.accessors
    }
}

/// The handle behind a session; a free function so that no method name of
/// `Session<T>` can hide a generated accessor.
fn handle<T: SessionData>(session: &Session<T>) -> &Handle<T> {
    session.accessors.as_ref()
}

impl<T: SessionData> Session<T> {
    /// A copy of the whole struct.
    pub fn get(&self) -> T {
        handle(self).read(T::duplicate)
    }

    /// Changes several fields at once; only fields whose value changed are
    /// written, as one compare-and-swap (the closure is replayed on conflict).
    ///
    /// Fails only if a `#[session(json)]` field cannot be serialized.
    pub fn update(&self, change: impl FnMut(&mut T) + Send + 'static) -> Result<(), SessionError> {
        handle(self)
            .update_all(change)
            .map_err(|error| SessionError::Store(StoreError::Encode(error)))
    }

    /// The session's id (SHA-256 of its token): safe to log or show, `None`
    /// for a session not yet stored.
    pub fn id(&self) -> Option<SessionId> {
        handle(self).meta().map(|meta| meta.id)
    }

    /// When the stored session expires (before this request extends it).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        handle(self).meta().map(|meta| meta.expires_at)
    }

    /// When the session was first stored.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        handle(self).meta().map(|meta| meta.created_at)
    }

    /// Whether the client presented a session that exists (in the store, or
    /// in memory for a session not yet storable).
    pub fn is_stored(&self) -> bool {
        handle(self).meta().is_some()
    }

    /// Gives the session the remember-me lifetime
    /// ([`SessionConfig::with_remember_lifetime`](crate::SessionConfig::with_remember_lifetime),
    /// default 30 days) instead of the idle timeout, and a persistent cookie;
    /// `false` goes back. Kept with the session.
    pub fn set_remember(&self, remember: bool) {
        lock(&handle(self).0.state).remember = Some(remember);
    }

    /// Whether the session has (or, after this request, will have) the
    /// remember-me lifetime.
    pub fn is_remembered(&self) -> bool {
        let state = lock(&handle(self).0.state);
        state
            .remember
            .or(state.stored.map(|meta| meta.remember))
            .unwrap_or(false)
    }

    /// Marks the session storable (e.g. the visitor consented): with
    /// [`SessionMode::Storable`](crate::SessionMode::Storable) or
    /// [`with_consent_required`](crate::SessionConfig::with_consent_required)
    /// it is written to the store from now on. `false` takes it out of the
    /// store again (back to memory, or gone when consent is required).
    /// In the default mode every session is storable already.
    pub fn set_store(&self, storable: bool) {
        lock(&handle(self).0.state).storable = Some(storable);
    }

    /// Whether the session is (or, after this request, will be) kept in the store.
    pub fn is_storable(&self) -> bool {
        let state = lock(&handle(self).0.state);
        state
            .storable
            .or(state.stored.map(|meta| meta.location == Location::Store))
            .unwrap_or(handle(self).0.default_storable)
    }

    /// Deletes the session when the response is sent and clears the cookie.
    /// Changes made in this request are dropped.
    pub fn destroy(&self) {
        lock(&handle(self).0.state).destroy = true;
    }

    /// Issues a new token for the same data when the response is sent (call
    /// it at login, against session fixation); the old token stops working
    /// in the same UPDATE.
    pub fn renew(&self) {
        lock(&handle(self).0.state).renew = true;
    }
}

impl<T: SessionData, S: Send + Sync> FromRequestParts<S> for Session<T> {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pending = parts.extensions.get::<PendingSession<T>>().cloned().ok_or(
            SessionError::MissingLayer {
                struct_name: T::SCHEMA.struct_name,
            },
        )?;
        let handle = pending.load(&parts.headers).await.map_err(|error| {
            tracing::error!(
                session = T::SCHEMA.struct_name,
                table = T::SCHEMA.table,
                %error,
                "loading the session failed"
            );
            SessionError::Store(error)
        })?;
        Ok(Session {
            accessors: T::Accessors::from(handle),
        })
    }
}
