//! One request's session: what the handler read and changed, shared by
//! every extractor of the request and handed to the layer afterwards.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use crate::{
    cookie::{Presented, SessionHeaders},
    data::{DirtyFields, EncodeError, SessionData},
    error::{SessionError, StoreError},
    store::Record,
    sync::lock,
    token::{SessionId, SessionToken},
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

/// What writing a request's session now yields, boxed for the dynamic call.
pub(crate) type SaveFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<Saved<T>, StoreError>> + Send + 'a>>;

/// What a save did, for the response and for the rest of the request.
pub(crate) struct Saved<T> {
    /// The headers that tell the client (a cookie, or nothing).
    pub(crate) headers: SessionHeaders,
    pub(crate) after: After<T>,
}

/// The session after a save.
pub(crate) enum After<T> {
    /// Nothing was written.
    Unchanged,
    /// Written: the session as stored now, and the token the client holds.
    Stored {
        data: T,
        meta: StoredMeta,
        token: SessionToken,
    },
    /// Gone: destroyed, or renewed, destroyed or expired by another request
    /// before this one's write, which was dropped.
    Gone,
}

/// What the layer does for a request's session, without the extractor
/// naming the store's type: the dynamic calls per request that touches it.
pub(crate) trait Backing<T: SessionData>: Send + Sync {
    /// The token the request presents, if any is valid.
    fn read_token(&self, headers: &http::HeaderMap) -> Option<Presented>;

    fn load<'a>(&'a self, id: &'a SessionId) -> LoadFuture<'a, T>;

    /// Writes what the request did so far, as the layer does after the
    /// handler (the awaited `update_<field>`).
    fn save<'a>(&'a self, state: RequestState<T>) -> SaveFuture<'a, T>;
}

/// What a request did to its session, as seen by the layer afterwards.
pub(crate) struct RequestState<T> {
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
    /// The headers of a write made during the request (the awaited
    /// `update_<field>`), sent with the response unless a later write
    /// replaces them.
    pub(crate) headers: SessionHeaders,
    /// The session went away under a write during the request: nothing
    /// more is written for it, and no cookie is sent.
    pub(crate) gone: bool,
}

impl<T> Default for RequestState<T> {
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
            headers: Vec::new(),
            gone: false,
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

impl StoredMeta {
    /// The metadata of `record`, kept at `location`.
    pub(crate) fn of<T>(record: &Record<T>, location: Location) -> Self {
        Self {
            id: record.id,
            version: record.version,
            expires_at: record.expires_at,
            created_at: record.created_at,
            remember: record.remember,
            location,
        }
    }
}

pub(crate) struct Shared<T: SessionData> {
    /// Whether a new session goes to the store without `set_store(true)`.
    pub(crate) default_storable: bool,
    backing: Arc<dyn Backing<T>>,
    load_lock: tokio::sync::Mutex<()>,
    pub(crate) state: Mutex<RequestState<T>>,
}

/// The request's session as the layer put it in the request extensions.
pub(crate) struct PendingSession<T: SessionData>(pub(crate) Arc<Shared<T>>);

impl<T: SessionData> Clone for PendingSession<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: SessionData> PendingSession<T> {
    pub(crate) fn new(default_storable: bool, loader: Arc<dyn Backing<T>>) -> Self {
        Self(Arc::new(Shared {
            default_storable,
            backing: loader,
            load_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(RequestState::default()),
        }))
    }

    /// Loads the session once per request, however many extractors ask.
    pub(crate) async fn load(&self, headers: &http::HeaderMap) -> Result<Handle<T>, StoreError> {
        let shared = &self.0;
        let _loading = shared.load_lock.lock().await;
        if lock(&shared.state).data.is_some() {
            return Ok(Handle(self.0.clone()));
        }
        let presented = shared.backing.read_token(headers);
        let record = match &presented {
            Some(presented) => {
                let id = presented.token.id();
                shared.backing.load(&id).await.inspect_err(|error| {
                    // The id (a hash) is safe to log; the token never is. An
                    // outage is logged once by the store, not per request.
                    if error.is_unavailable() {
                        tracing::debug!(session = T::SCHEMA.struct_name, %id, %error, "loading the session failed");
                    } else {
                        tracing::error!(
                            session = T::SCHEMA.struct_name,
                            table = T::SCHEMA.table,
                            %id,
                            %error,
                            "loading the session failed"
                        );
                    }
                })?
            }
            None => None,
        };
        let mut state = lock(&shared.state);
        state.presented = presented;
        match record {
            Some((record, location)) => {
                state.stored = Some(StoredMeta::of(&record, location));
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
pub struct Handle<T: SessionData>(pub(crate) Arc<Shared<T>>);

impl<T: SessionData> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("struct", &T::SCHEMA.struct_name)
            .field("id", &self.meta().map(|meta| meta.id))
            .finish_non_exhaustive()
    }
}

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
        let RequestState { data, changes, .. } = &mut *guard;
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
    /// Awaiting the answer writes now and yields what the closure returned
    /// on the attempt that was stored.
    pub fn update_field<F: 'static, R, C>(
        &self,
        index: usize,
        mut change: C,
        field: fn(&mut T) -> &mut F,
    ) -> Updated<T, R>
    where
        C: FnMut(&mut F) -> R + Send + 'static,
        R: Send + 'static,
    {
        let answer = Arc::new(Mutex::new(None));
        self.with_changes(|changes, data| {
            *lock(&answer) = Some(change(field(data)));
            changes.dirty.insert(index);
            changes.compare_and_swap = true;
            let slot = answer.clone();
            changes.log.push(Box::new(move |data| {
                *lock(&slot) = Some(change(field(data)));
            }));
        });
        Updated {
            handle: self.clone(),
            answer,
        }
    }

    /// Writes what the request changed so far, now, the way the layer does
    /// after the handler; the rest of the request goes on from the stored
    /// session. One write at a time per request.
    pub(crate) async fn write_now(&self) -> Result<(), SessionError> {
        let shared = &self.0;
        let _one_at_a_time = shared.load_lock.lock().await;
        let snapshot = {
            let mut state = lock(&shared.state);
            if state.destroy || state.gone {
                return Err(SessionError::Gone);
            }
            RequestState {
                data: state.data.as_ref().map(T::duplicate),
                presented: state.presented.clone(),
                stored: state.stored,
                changes: std::mem::take(&mut state.changes),
                destroy: false,
                renew: std::mem::take(&mut state.renew),
                remember: state.remember.take(),
                storable: state.storable.take(),
                headers: Vec::new(),
                gone: false,
            }
        };
        let saved = shared.backing.save(snapshot).await?;
        let mut state = lock(&shared.state);
        if !saved.headers.is_empty() {
            state.headers = saved.headers;
        }
        match saved.after {
            After::Unchanged => Ok(()),
            After::Stored { data, meta, token } => {
                // Changes made while the write was out apply on top of it.
                let mut data = data;
                for change in &mut state.changes.log {
                    change(&mut data);
                }
                state.data = Some(data);
                state.stored = Some(meta);
                state.presented = Some(Presented {
                    token,
                    reseal: false,
                });
                Ok(())
            }
            After::Gone => {
                state.gone = true;
                Err(SessionError::Gone)
            }
        }
    }

    /// Deletes the session now (as [`destroy`](crate::Session::destroy) does
    /// after the handler) and goes on with a fresh, empty one: a change made
    /// after this starts a new session with a new token. The removal cookie
    /// is sent unless a later write replaces it.
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) async fn destroy_now(&self) -> Result<(), SessionError> {
        let shared = &self.0;
        let _one_at_a_time = shared.load_lock.lock().await;
        let snapshot = {
            let mut state = lock(&shared.state);
            if state.gone || state.stored.is_none() && state.presented.is_none() {
                // Nothing stored and no cookie to remove: only the data goes.
                *state = RequestState {
                    data: Some(T::default()),
                    ..RequestState::default()
                };
                return Ok(());
            }
            RequestState {
                data: state.data.as_ref().map(T::duplicate),
                presented: state.presented.clone(),
                stored: state.stored,
                destroy: true,
                ..RequestState::default()
            }
        };
        let saved = shared.backing.save(snapshot).await?;
        let mut state = lock(&shared.state);
        *state = RequestState {
            data: Some(T::default()),
            headers: saved.headers,
            ..RequestState::default()
        };
        Ok(())
    }

    /// Read-modify-write of several fields at once; only fields whose value
    /// changed are written.
    pub fn update_all<C>(&self, mut change: C) -> Result<(), EncodeError>
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

    pub(crate) fn meta(&self) -> Option<StoredMeta> {
        lock(&self.0.state).stored
    }
}

/// The answer of a read-modify-write (`update_<field>`).
///
/// ```
/// use axum_typed_session::{Session, SessionError};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// async fn greet(visit: Session<Visit>) -> Result<String, SessionError> {
///     // Awaited: written now; `count` is the value that was stored.
///     let count = visit.update_count(|count| { *count += 1; *count }).await?;
///     Ok(format!("visit number {count}"))
/// }
///
/// async fn touch(visit: Session<Visit>) {
///     // Dropped: written after the handler, with the request's other changes.
///     visit.update_count(|count| *count += 1);
/// }
/// ```
///
/// Dropped, it changes nothing more: the change is written after the
/// handler, with the request's others. Awaited, it writes the request's
/// changes now (sharing a round trip with concurrent requests, replayed on
/// conflict) and yields what the closure returned on the attempt that was
/// stored: the committed value, not this request's earlier copy.
pub struct Updated<T: SessionData, R> {
    handle: Handle<T>,
    answer: Arc<Mutex<Option<R>>>,
}

impl<T: SessionData, R> std::fmt::Debug for Updated<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updated")
            .field("session", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<T: SessionData, R: Send + 'static> std::future::IntoFuture for Updated<T, R> {
    type Output = Result<R, SessionError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.handle.write_now().await?;
            // Set when the closure first ran, and by each replay since.
            Ok(lock(&self.answer)
                .take()
                .expect("the closure ran when the change was made"))
        })
    }
}

/// The fields whose column values differ between two versions of a struct.
pub(crate) fn changed_fields<T: SessionData>(
    before: &T,
    after: &T,
) -> Result<DirtyFields, EncodeError> {
    let mut changed = DirtyFields::NONE;
    for index in 0..T::SCHEMA.columns.len() {
        if before.encode_column(index)? != after.encode_column(index)? {
            changed.insert(index);
        }
    }
    Ok(changed)
}
