//! The tower layer: puts the request's session in place, writes it back after
//! the handler, and purges expired sessions in the background.

use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::Duration,
};

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::Request;
use tokio::sync::oneshot;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    config::{SessionConfig, SessionMode},
    cookie::{Presented, SessionCookie, SessionHeaders},
    data::SessionData,
    error::{SessionError, StoreError},
    extract::{LoadFuture, Loader, Location, PendingSession, State, StoredMeta, changed_fields},
    store::{Record, SessionStore, Update, memory::MemoryStore},
    sync::lock,
    token::{SessionId, SessionToken},
};

/// How many times a compare-and-swap write is tried (replaying the request's
/// changes on fresh data each time) before the request fails with
/// [`StoreError::Conflict`]. Between tries a request waits a random time of up
/// to [`MAX_CONFLICT_BACKOFF`] that doubles per try, so a burst of writers to one
/// session spreads out instead of colliding again in lockstep.
pub const MAX_WRITE_ATTEMPTS: u32 = 32;

/// The longest wait between two compare-and-swap tries.
pub const MAX_CONFLICT_BACKOFF: Duration = Duration::from_millis(50);

/// Adds typed sessions of `T`, kept in store `S`, to an axum router.
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_typed_session::{MemoryStore, Session, SessionConfig, SessionLayer};
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
    pub fn new(store: S, config: SessionConfig) -> Self {
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

async fn purge_loop<T: SessionData, S: SessionStore<T>>(
    shared: Weak<LayerShared<T, S>>,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // Sent by `stop_purge`, or the sender dropped with the layer.
            _ = &mut stop => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.purge_expired().await {
            Ok(purged) => tracing::debug!(
                session = T::SCHEMA.struct_name,
                purged,
                "purged expired sessions"
            ),
            // The next round tries again: a database that is down now may be
            // back by then.
            Err(error) => tracing::warn!(
                session = T::SCHEMA.struct_name,
                table = T::SCHEMA.table,
                %error,
                "purging expired sessions failed; retrying next interval"
            ),
        }
    }
}

impl<T: SessionData, S: SessionStore<T>> Loader<T> for LayerShared<T, S> {
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
                self.absolute_end(record.created_at)
                    .is_none_or(|end| end > now)
            }))
        })
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
    I: Service<Request<B>, Error = Infallible> + Clone + Send + 'static,
    I::Response: IntoResponse,
    I::Future: Send + 'static,
    B: Send + 'static,
    T: SessionData,
    S: SessionStore<T>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        let pending = PendingSession::new(shared.default_storable(), shared.clone());
        request.extensions_mut().insert(pending.clone());

        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Ok(response) = inner.call(request).await;
            let mut response = response.into_response();
            let state = std::mem::take(&mut *lock(&pending.0.state));
            match shared.save(state).await {
                Ok(headers) => {
                    for (name, value) in headers {
                        response.headers_mut().append(name, value);
                    }
                }
                Err(error) => {
                    // The handler's answer described a change that was not
                    // stored: never send it as if it had been.
                    tracing::error!(
                        session = T::SCHEMA.struct_name,
                        table = T::SCHEMA.table,
                        %error,
                        "saving the session failed"
                    );
                    response = SessionError::Store(error).into_response();
                }
            }
            Ok(response)
        })
    }
}

/// Full jitter: uniform in `[0, min(MAX_CONFLICT_BACKOFF, 1 ms × 2^attempt))`.
fn conflict_backoff(attempt: u32) -> Duration {
    let cap = MAX_CONFLICT_BACKOFF.min(Duration::from_millis(1u64 << attempt.min(16)));
    cap.mul_f64(rand::random::<f64>())
}

fn add(time: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|duration| time.checked_add_signed(duration))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl<T: SessionData, S: SessionStore<T>> LayerShared<T, S> {
    fn config(&self) -> &SessionConfig {
        self.cookie.config()
    }

    fn mode(&self) -> SessionMode {
        self.config().mode
    }

    fn default_storable(&self) -> bool {
        self.mode() == SessionMode::Persistent && !self.config().consent_required
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = Utc::now();
        let in_memory = self.memory.purge_expired(now).await?;
        Ok(in_memory + self.store.purge_expired(now).await?)
    }

    fn absolute_end(&self, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.config()
            .absolute_lifetime
            .map(|lifetime| add(created_at, lifetime))
    }

    fn lifetime(&self, remember: bool) -> Duration {
        if remember {
            self.config().remember_lifetime
        } else {
            self.config().idle_timeout
        }
    }

    /// When a session used now expires: one lifetime from now, never past
    /// its absolute end.
    fn expires_at(
        &self,
        now: DateTime<Utc>,
        created_at: DateTime<Utc>,
        remember: bool,
    ) -> DateTime<Utc> {
        let sliding = add(now, self.lifetime(remember));
        self.absolute_end(created_at)
            .map_or(sliding, |end| sliding.min(end))
    }

    /// Whether this request moves the stored expiry: once per
    /// `touch_fraction` of the lifetime, and only forward.
    fn should_touch(
        &self,
        now: DateTime<Utc>,
        stored: &StoredMeta,
        new_expiry: DateTime<Utc>,
    ) -> bool {
        let lifetime = self.lifetime(stored.remember);
        let extended_at = stored.expires_at
            - chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
        let since = (now - extended_at).to_std().unwrap_or(Duration::ZERO);
        new_expiry > stored.expires_at && since >= lifetime.mul_f64(self.config().touch_fraction)
    }

    fn cookie(
        &self,
        token: &SessionToken,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        remember: bool,
    ) -> SessionHeaders {
        let max_age = (self.config().persistent_cookie || remember)
            .then(|| (expires_at - now).to_std().unwrap_or(Duration::ZERO));
        self.cookie.set(token, max_age)
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

    /// Writes what the request did to its session and returns the headers
    /// that tell the client: nothing, one INSERT, one UPDATE (retried with
    /// replay on conflict), one DELETE, or a move between memory and store.
    async fn save(&self, state: State<T>) -> Result<SessionHeaders, StoreError> {
        let State {
            data,
            presented,
            stored,
            mut changes,
            destroy,
            renew,
            remember,
            storable,
        } = state;
        // The handler never extracted the session: nothing to do.
        let Some(mut data) = data else {
            return Ok(Vec::new());
        };
        let reseal = presented.as_ref().is_some_and(|presented| presented.reseal);
        let presented = presented.as_ref().map(|presented| &presented.token);
        let now = Utc::now();

        if destroy {
            if let Some(stored) = stored {
                self.delete_at(stored.location, &stored.id).await?;
            }
            return Ok(if presented.is_some() {
                self.cookie.remove()
            } else {
                Vec::new()
            });
        }

        let Some(stored) = stored else {
            let worth_keeping =
                !changes.dirty.is_empty() || storable == Some(true) || remember == Some(true);
            let Some(location) = self
                .target_location(storable, None)
                .filter(|_| worth_keeping)
            else {
                return Ok(Vec::new());
            };
            // Never adopt a token the client chose: a new session gets a new one.
            let token = SessionToken::generate();
            let remember = remember.unwrap_or(false);
            let record = Record {
                id: token.id(),
                data,
                version: 1,
                expires_at: self.expires_at(now, now, remember),
                created_at: now,
                remember,
            };
            self.insert_at(location, &record).await?;
            // The id (a hash) is safe to log; the token never is.
            tracing::debug!(session = T::SCHEMA.struct_name, id = %record.id, ?location, "new session");
            return Ok(self.cookie(&token, now, record.expires_at, remember));
        };

        let new_token = renew.then(SessionToken::generate);
        let remember_change = remember.filter(|remember| *remember != stored.remember);
        let remember = remember.unwrap_or(stored.remember);
        let expires_at = self.expires_at(now, stored.created_at, remember);

        let target = self.target_location(storable, Some(stored.location));
        if target != Some(stored.location) {
            // Marked storable (or not) in this request: move the session,
            // writing the new copy before deleting the old one so that a
            // failed write loses nothing.
            let Some(location) = target else {
                self.delete_at(stored.location, &stored.id).await?;
                return Ok(self.cookie.remove());
            };
            let token = new_token
                .as_ref()
                .or(presented)
                .cloned()
                .unwrap_or_else(SessionToken::generate);
            let record = Record {
                id: token.id(),
                data,
                version: stored.version + 1,
                expires_at,
                created_at: stored.created_at,
                remember,
            };
            self.insert_at(location, &record).await?;
            self.delete_at(stored.location, &stored.id).await?;
            return Ok(self.cookie(&token, now, expires_at, remember));
        }

        // The expiry moves once per touch fraction of the lifetime (or when
        // the lifetime itself changes), whatever else the request did: in
        // between, writes leave it, its index entry and the cookie alone.
        let moves_expiry = remember_change.is_some() || self.should_touch(now, &stored, expires_at);
        let kept_expiry = if moves_expiry {
            expires_at
        } else {
            stored.expires_at
        };
        // The client needs the cookie again only if it changed: a new token,
        // a new Max-Age, or a token sealed under a retired key.
        let send_cookie = new_token.is_some() || moves_expiry || reseal;
        let mut update = Update {
            dirty: changes.dirty,
            expected_version: changes.compare_and_swap.then_some(stored.version),
            expires_at: moves_expiry.then_some(expires_at),
            new_id: new_token.as_ref().map(SessionToken::id),
            remember: remember_change,
            now,
        };
        if update.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            if self
                .update_at(stored.location, &stored.id, &data, update)
                .await?
            {
                return Ok(match new_token.as_ref().or(presented) {
                    Some(token) if send_cookie => self.cookie(token, now, kept_expiry, remember),
                    _ => Vec::new(),
                });
            }
            if !changes.compare_and_swap {
                break;
            }
            // Another request wrote first: replay this request's changes on
            // the fresh row, or stop if the session is gone.
            if attempts == MAX_WRITE_ATTEMPTS {
                return Err(StoreError::Conflict { attempts });
            }
            tokio::time::sleep(conflict_backoff(attempts)).await;
            let Some(fresh) = self.load_at(stored.location, &stored.id, now).await? else {
                break;
            };
            let mut replayed = fresh.data.duplicate();
            for change in &mut changes.log {
                change(&mut replayed);
            }
            changes.dirty = changes.dirty.union(changed_fields(&fresh.data, &replayed)?);
            data = replayed;
            update.dirty = changes.dirty;
            update.expected_version = Some(fresh.version);
        }
        // The row was destroyed, renewed or expired by another request:
        // dropping this write is what keeps it from coming back.
        tracing::debug!(
            session = T::SCHEMA.struct_name,
            id = %stored.id,
            "session vanished before its write; the write is dropped"
        );
        Ok(self.cookie.remove())
    }
}
