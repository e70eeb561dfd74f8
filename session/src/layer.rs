//! The tower layer: puts the request's session in place, writes it back after
//! the handler.

use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{Request, header::SET_COOKIE};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    config::SessionConfig,
    cookie::SessionCookie,
    data::SessionData,
    error::{SessionError, StoreError},
    extract::{LoadFuture, Loader, PendingSession, State, changed_fields},
    store::{Record, SessionStore, Update},
    token::{SessionId, SessionToken},
};

/// How many times a compare-and-swap write is tried (replaying the request's
/// changes on fresh data each time) before the request fails with
/// [`StoreError::Conflict`]. Between tries a request waits a random time of up
/// to [`MAX_CONFLICT_BACKOFF`] that doubles per try, so a burst of writers to one
/// session spreads out instead of colliding again in lockstep.
pub const MAX_WRITE_ATTEMPTS: u32 = 32;

/// The longest wait between two compare-and-swap tries.
pub const MAX_CONFLICT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

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
    cookie: SessionCookie,
    _data: PhantomData<fn() -> T>,
}

impl<T: SessionData, S: SessionStore<T>> SessionLayer<T, S> {
    /// A layer over `store`, configured by `config`.
    pub fn new(store: S, config: SessionConfig) -> Self {
        Self {
            shared: Arc::new(LayerShared {
                store,
                cookie: SessionCookie::new(config),
                _data: PhantomData,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.shared.store
    }
}

impl<T: SessionData, S: SessionStore<T>> Loader<T> for LayerShared<T, S> {
    fn load<'a>(&'a self, id: &'a SessionId) -> LoadFuture<'a, T> {
        Box::pin(self.store.load(id, Utc::now()))
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
        let presented = shared.cookie.read(request.headers());
        let pending = PendingSession::new(presented, shared.clone());
        request.extensions_mut().insert(pending.clone());

        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Ok(response) = inner.call(request).await;
            let mut response = response.into_response();
            let state =
                std::mem::take(&mut *pending.0.state.lock().unwrap_or_else(|p| p.into_inner()));
            match shared.save(pending.0.presented.as_ref(), state).await {
                Ok(CookieChange::None) => {}
                Ok(CookieChange::Set(value)) => {
                    response.headers_mut().append(SET_COOKIE, value);
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
fn conflict_backoff(attempt: u32) -> std::time::Duration {
    let cap = MAX_CONFLICT_BACKOFF.min(std::time::Duration::from_millis(1u64 << attempt.min(16)));
    cap.mul_f64(rand::random::<f64>())
}

/// What the response must tell the client about its cookie.
enum CookieChange {
    None,
    Set(http::HeaderValue),
}

impl<T: SessionData, S: SessionStore<T>> LayerShared<T, S> {
    fn expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let timeout = chrono::Duration::from_std(self.cookie.config().idle_timeout)
            .unwrap_or(chrono::Duration::MAX);
        now.checked_add_signed(timeout)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn set_cookie(&self, token: &SessionToken) -> CookieChange {
        self.cookie
            .set(token)
            .map_or(CookieChange::None, CookieChange::Set)
    }

    fn removal(&self) -> CookieChange {
        self.cookie
            .remove()
            .map_or(CookieChange::None, CookieChange::Set)
    }

    /// Writes what the request did to its session: nothing, one INSERT, one
    /// UPDATE (retried with replay on conflict), or one DELETE.
    async fn save(
        &self,
        presented: Option<&SessionToken>,
        state: State<T>,
    ) -> Result<CookieChange, StoreError> {
        let State {
            data,
            stored,
            mut changes,
            destroy,
            renew,
        } = state;
        // The handler never extracted the session: nothing to do.
        let Some(mut data) = data else {
            return Ok(CookieChange::None);
        };
        let now = Utc::now();

        if destroy {
            if let Some(stored) = stored {
                self.store.delete(&stored.id).await?;
            }
            return Ok(if presented.is_some() {
                self.removal()
            } else {
                CookieChange::None
            });
        }

        let Some(stored) = stored else {
            if changes.dirty.is_empty() {
                return Ok(CookieChange::None);
            }
            // Never adopt a token the client chose: a new session gets a new one.
            let token = SessionToken::generate();
            self.store
                .insert(&Record {
                    id: token.id(),
                    data,
                    version: 1,
                    expires_at: self.expires_at(now),
                    created_at: now,
                })
                .await?;
            return Ok(self.set_cookie(&token));
        };

        if changes.dirty.is_empty() && !renew {
            return Ok(CookieChange::None);
        }
        let new_token = renew.then(SessionToken::generate);
        let mut version = stored.version;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let update = Update {
                dirty: changes.dirty,
                expected_version: changes.compare_and_swap.then_some(version),
                expires_at: self.expires_at(now),
                new_id: new_token.as_ref().map(SessionToken::id),
                now,
            };
            if self.store.update(&stored.id, &data, update).await? {
                return Ok(match new_token.as_ref().or(presented) {
                    Some(token) => self.set_cookie(token),
                    None => CookieChange::None,
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
            let Some(fresh) = self.store.load(&stored.id, now).await? else {
                break;
            };
            let mut replayed = fresh.data.duplicate();
            for change in &mut changes.log {
                change(&mut replayed);
            }
            changes.dirty = changes.dirty.union(changed_fields(&fresh.data, &replayed)?);
            data = replayed;
            version = fresh.version;
        }
        // The row was destroyed, renewed or expired by another request:
        // dropping this write is what keeps it from coming back.
        tracing::debug!(
            session = T::SCHEMA.struct_name,
            id = %stored.id,
            "session vanished before its write; the write is dropped"
        );
        Ok(self.removal())
    }
}
