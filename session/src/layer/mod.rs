//! The tower layer: puts the request's session in place, writes it back after
//! the handler (`save.rs`), with the lifetime policy of `expiry.rs`.

mod expiry;
mod save;

use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::Request;
use tokio::sync::oneshot;
use tower_layer::Layer;
use tower_service::Service;

use self::save::Step;
pub use self::save::{MAX_CONFLICT_BACKOFF, MAX_WRITE_ATTEMPTS};
use crate::{
    config::{SessionConfig, SessionMode},
    cookie::{Presented, SessionCookie, SessionHeaders},
    data::SessionData,
    error::{SessionError, StoreError},
    purge::purge_loop,
    request::{Backing, LoadFuture, Location, PendingSession, RequestState, SaveFuture},
    store::{MemoryStore, Record, SessionStore, Update},
    sync::{CatchPanic, catch_panic, lock},
    token::{SessionId, SessionToken},
};

/// Adds typed sessions of `T`, kept in store `S`, to an axum router.
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_typed_session::{MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// async fn greet(visit: Session<Visit>) -> Result<String, SessionError> {
///     // Written before it answers: the count that was stored.
///     let count = visit.update_count(|count| { *count += 1; *count }).await?;
///     Ok(count.to_string())
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(greet))
///     .layer(SessionLayer::new(MemoryStore::<Visit>::new(), SessionConfig::default()));
/// ```
///
/// Several layers, each with its own struct and cookie name, work side by side.
///
/// Created inside a tokio runtime, the layer deletes expired sessions every
/// [purge interval](SessionConfig::with_purge_interval) in a background task
/// that logs and outlives database errors; the task ends when the last clone
/// of the layer (and of the services it made) is dropped, or on
/// [`stop_purge`](Self::stop_purge) — call that from a graceful-shutdown handler.
pub struct SessionLayer<T: SessionData, S> {
    shared: Arc<LayerShared<T, S>>,
}

impl<T: SessionData, S: std::fmt::Debug> std::fmt::Debug for SessionLayer<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("struct", &T::SCHEMA.struct_name)
            .field("store", &self.shared.store)
            .field("config", self.shared.cookie.config())
            .finish_non_exhaustive()
    }
}

impl<T: SessionData, S> Clone for SessionLayer<T, S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

pub(crate) struct LayerShared<T, S> {
    store: S,
    /// Sessions not yet storable, in [`SessionMode::Storable`].
    memory: MemoryStore<T>,
    cookie: SessionCookie,
    /// Dropping (or sending on) it ends the purge task.
    stop_purge: Mutex<Option<oneshot::Sender<()>>>,
    _data: PhantomData<fn() -> T>,
}

impl<T: SessionData, S: SessionStore<T>> SessionLayer<T, S> {
    /// A layer over `store`, configured by `config`.
    ///
    /// # Panics
    ///
    /// If `config` contradicts itself ([`SessionConfig::validate`]), with
    /// the [`ConfigError`](crate::ConfigError) naming the setting and the
    /// fix: at start-up, like a conflicting route. Use
    /// [`try_new`](Self::try_new) to handle it instead.
    pub fn new(store: S, config: SessionConfig) -> Self {
        match Self::try_new(store, config) {
            Ok(layer) => layer,
            Err(error) => panic!("invalid SessionConfig: {error}"),
        }
    }

    /// A layer over `store`, or why `config` cannot work. The configuration
    /// is checked here once; requests never check it again.
    ///
    /// ```
    /// use axum_typed_session::{ConfigError, MemoryStore, Session, SessionConfig, SessionLayer};
    ///
    /// #[derive(Session, Default)]
    /// struct Visit {
    ///     count: i64,
    /// }
    ///
    /// let config = SessionConfig::default().with_touch_fraction(0.0);
    /// let refused = SessionLayer::try_new(MemoryStore::<Visit>::new(), config);
    /// assert!(matches!(refused, Err(ConfigError::TouchFraction(_))));
    /// ```
    pub fn try_new(store: S, config: SessionConfig) -> Result<Self, crate::ConfigError> {
        config.validate()?;
        Ok(Self::validated(store, config))
    }

    fn validated(store: S, config: SessionConfig) -> Self {
        let purge_interval = config.purge_interval;
        let (stop_sender, stop_receiver) = oneshot::channel();
        let shared = Arc::new(LayerShared {
            store,
            memory: MemoryStore::new(),
            cookie: SessionCookie::new(config),
            stop_purge: Mutex::new(Some(stop_sender)),
            _data: PhantomData,
        });
        if let Some(interval) = purge_interval
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(purge_loop(Arc::downgrade(&shared), interval, stop_receiver));
        }
        Self { shared }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Deletes expired sessions now (the background task does this every
    /// purge interval); returns how many.
    ///
    /// ```
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// # use axum_typed_session::{MemoryStore, Session, SessionConfig, SessionLayer};
    /// # #[derive(Session, Default)]
    /// # struct Visit {
    /// #     count: i64,
    /// # }
    /// let layer = SessionLayer::new(MemoryStore::<Visit>::new(), SessionConfig::default());
    /// let purged = layer.purge_expired().await?;
    /// // At shutdown:
    /// layer.stop_purge();
    /// # Ok(()) }
    /// ```
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.shared.purge_expired().await
    }

    /// Ends the background purge task.
    pub fn stop_purge(&self) {
        let sender = lock(&self.shared.stop_purge).take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

impl<T: SessionData, S: SessionStore<T>> Backing<T> for LayerShared<T, S> {
    fn read_token(&self, headers: &http::HeaderMap) -> Option<Presented> {
        self.cookie.read(headers)
    }

    fn load<'a>(&'a self, id: &'a SessionId) -> LoadFuture<'a, T> {
        Box::pin(async move {
            let now = Utc::now();
            let mut found = None;
            if self.mode() == SessionMode::Storable {
                found = self
                    .memory
                    .load(id, now)
                    .await?
                    .map(|r| (r, Location::Memory));
            }
            if found.is_none() {
                found = self
                    .store
                    .load(id, now)
                    .await?
                    .map(|r| (r, Location::Store));
            }
            // A session past its absolute lifetime is over, even if the
            // configuration shortened that lifetime after it was stored.
            Ok(found.filter(|(record, _)| {
                self.config()
                    .absolute_end(record.created_at)
                    .is_none_or(|end| end > now)
            }))
        })
    }

    fn save<'a>(&'a self, state: RequestState<T>) -> SaveFuture<'a, T> {
        Box::pin(LayerShared::save(self, state))
    }
}

impl<I, T: SessionData, S: SessionStore<T>> Layer<I> for SessionLayer<T, S> {
    type Service = SessionService<I, T, S>;

    fn layer(&self, inner: I) -> Self::Service {
        SessionService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of a [`SessionLayer`].
pub struct SessionService<I, T: SessionData, S> {
    inner: I,
    shared: Arc<LayerShared<T, S>>,
}

impl<I: std::fmt::Debug, T: SessionData, S> std::fmt::Debug for SessionService<I, T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("struct", &T::SCHEMA.struct_name)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<I: Clone, T: SessionData, S> Clone for SessionService<I, T, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<I, B, T, S> Service<Request<B>> for SessionService<I, T, S>
where
    I: Service<Request<B>, Error = Infallible>,
    I::Response: IntoResponse,
    I::Future: Send + 'static,
    B: Send + 'static,
    T: SessionData,
    S: SessionStore<T>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = SessionResponseFuture<I::Future, T, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let pending = PendingSession::new(self.shared.default_storable(), self.shared.clone());
        request.extensions_mut().insert(pending.clone());
        // The request goes to the inner service now, which `poll_ready`
        // made ready: no clone of it to keep for later.
        SessionResponseFuture {
            inner: self.inner.call(request),
            after: After::Handler(self.shared.clone(), pending),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`SessionService`]: the inner service's, then,
    /// if the handler used the session, its write.
    ///
    /// A route that never extracts the session costs no allocation here.
    pub struct SessionResponseFuture<F, T: SessionData, S> {
        #[pin]
        inner: F,
        after: After<T, S>,
    }
}

/// What a [`SessionResponseFuture`] does once the inner service answered.
enum After<T: SessionData, S> {
    /// The handler runs; its session, if it used it, is in the pending
    /// state.
    Handler(Arc<LayerShared<T, S>>, PendingSession<T>),
    /// The session is being written (boxed: only requests that used their
    /// session pay for its future).
    Saving(Pin<Box<dyn Future<Output = Response> + Send>>),
    Done,
}

impl<F, T, S> std::fmt::Debug for SessionResponseFuture<F, T, S>
where
    T: SessionData,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.after {
            After::Handler(..) => "handler",
            After::Saving(_) => "saving",
            After::Done => "done",
        };
        f.debug_struct("SessionResponseFuture")
            .field("struct", &T::SCHEMA.struct_name)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, R, T, S> Future for SessionResponseFuture<F, T, S>
where
    F: Future<Output = Result<R, Infallible>>,
    R: IntoResponse,
    T: SessionData,
    S: SessionStore<T>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let After::Saving(saving) = this.after {
            let response = std::task::ready!(saving.as_mut().poll(cx));
            *this.after = After::Done;
            return Poll::Ready(Ok(response));
        }
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let response = response.into_response();
        let After::Handler(shared, pending) = std::mem::replace(this.after, After::Done) else {
            panic!("a session's response future was polled after it completed");
        };
        let mut state = std::mem::take(&mut *lock(&pending.0.state));
        // The handler never extracted the session: nothing to write, and
        // nothing to allocate for it.
        if state.data.is_none() {
            return Poll::Ready(Ok(response));
        }
        let id = state.stored.map(|stored| stored.id);
        // Headers of a write made during the handler, unless the final one
        // replaces them.
        let written = std::mem::take(&mut state.headers);
        // Deciding runs none of the app's code but its `Drop`: guarded all
        // the same, like the write.
        let step = match catch_panic(|| shared.plan(state)) {
            Ok(step) => step,
            Err(panic) => return Poll::Ready(Ok(panicked::<T>(id, &panic))),
        };
        // A request that only read its session: no write, no allocation.
        if matches!(step, Step::Nothing) {
            return Poll::Ready(Ok(with_headers(response, written)));
        }
        let mut saving = Box::pin(finish(shared, step, id, written, response));
        match saving.as_mut().poll(cx) {
            Poll::Ready(response) => Poll::Ready(Ok(response)),
            Poll::Pending => {
                *this.after = After::Saving(saving);
                Poll::Pending
            }
        }
    }
}

/// `response` with `headers` appended.
fn with_headers(mut response: Response, headers: SessionHeaders) -> Response {
    for (name, value) in headers {
        response.headers_mut().append(name, value);
    }
    response
}

/// The answer when the session type's own code panicked while its session
/// was being written.
fn panicked<T: SessionData>(id: Option<SessionId>, panic: &str) -> Response {
    tracing::error!(
        session = T::SCHEMA.struct_name,
        table = T::SCHEMA.table,
        id = ?id,
        %panic,
        "saving the session panicked in the session type's own code"
    );
    (
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "session storage is unavailable",
    )
        .into_response()
}

/// Carries out the write a handler's session needs, and puts its headers
/// on the handler's `response` (or answers the error that kept it from
/// being stored). `written`: the headers of a write made during the
/// handler, sent unless this one replaces them.
async fn finish<T: SessionData, S: SessionStore<T>>(
    shared: Arc<LayerShared<T, S>>,
    step: Step<T>,
    id: Option<SessionId>,
    written: SessionHeaders,
    response: Response,
) -> Response {
    // The app's code runs in here (serde, `Clone`): a panic in it fails
    // this request with a 500, not the connection.
    let saved = CatchPanic(std::pin::pin!(shared.run(step))).await;
    match saved {
        Ok(Ok(saved)) => {
            let headers = if saved.headers.is_empty() {
                written
            } else {
                saved.headers
            };
            with_headers(response, headers)
        }
        Ok(Err(error)) if error.is_unavailable() => {
            // Logged once by the store when it went down.
            tracing::debug!(session = T::SCHEMA.struct_name, id = ?id, %error, "saving the session failed");
            SessionError::Store(error).into_response()
        }
        Ok(Err(error)) => {
            // The handler's answer described a change that was not stored:
            // never send it as if it had been.
            tracing::error!(
                session = T::SCHEMA.struct_name,
                table = T::SCHEMA.table,
                id = ?id,
                %error,
                "saving the session failed"
            );
            SessionError::Store(error).into_response()
        }
        Err(panic) => panicked::<T>(id, &panic),
    }
}

impl<T: SessionData, S: SessionStore<T>> LayerShared<T, S> {
    pub(crate) fn config(&self) -> &SessionConfig {
        self.cookie.config()
    }

    fn mode(&self) -> SessionMode {
        self.config().mode
    }

    fn default_storable(&self) -> bool {
        self.mode() == SessionMode::Persistent && !self.config().consent_required
    }

    pub(crate) async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = Utc::now();
        let in_memory = self.memory.purge_expired(now).await?;
        let stored = self.store.purge_expired(now).await?;
        if stored > 0
            && let Some(events) = self.store.events()
        {
            events.emit(crate::events::SessionEvent {
                kind: crate::events::EventKind::Purged { count: stored },
                session: T::SCHEMA.struct_name,
                id: None,
                indexed: Vec::new(),
                at: now,
            });
        }
        Ok(in_memory + stored)
    }

    fn cookie(
        &self,
        token: &SessionToken,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        remember: bool,
    ) -> SessionHeaders {
        self.cookie.set(
            token,
            self.config().cookie_max_age(now, expires_at, remember),
        )
    }

    async fn insert_at(&self, location: Location, record: &Record<T>) -> Result<(), StoreError> {
        match location {
            Location::Store => self.store.insert(record).await,
            Location::Memory => self.memory.insert(record).await,
        }
    }

    async fn update_at(
        &self,
        location: Location,
        id: &SessionId,
        data: &T,
        update: Update,
    ) -> Result<bool, StoreError> {
        match location {
            Location::Store => self.store.update(id, data, update).await,
            Location::Memory => self.memory.update(id, data, update).await,
        }
    }

    async fn delete_at(&self, location: Location, id: &SessionId) -> Result<(), StoreError> {
        match location {
            Location::Store => self.store.delete(id).await,
            Location::Memory => self.memory.delete(id).await,
        }
    }

    async fn load_at(
        &self,
        location: Location,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        match location {
            Location::Store => self.store.load(id, now).await,
            Location::Memory => self.memory.load(id, now).await,
        }
    }

    /// Where a session should be kept after this request; `None`: nowhere
    /// (consent required and not given, or withdrawn).
    fn target_location(
        &self,
        storable: Option<bool>,
        current: Option<Location>,
    ) -> Option<Location> {
        let not_storable = if self.config().consent_required {
            None
        } else {
            Some(Location::Memory)
        };
        match storable {
            Some(true) => Some(Location::Store),
            Some(false) => not_storable,
            None => match current {
                Some(location) => Some(location),
                None if self.default_storable() => Some(Location::Store),
                None => not_storable,
            },
        }
    }
}
