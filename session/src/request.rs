//! One request's session: what the handler read and changed, shared by
//! every extractor of the request and handed to the layer afterwards.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use crate::{
    cookie::Presented,
    data::{DirtyFields, EncodeError, SessionData},
    error::StoreError,
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
    pub(crate) default_storable: bool,
    loader: Arc<dyn Loader<T>>,
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
    pub(crate) fn new(default_storable: bool, loader: Arc<dyn Loader<T>>) -> Self {
        Self(Arc::new(Shared {
            default_storable,
            loader,
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
