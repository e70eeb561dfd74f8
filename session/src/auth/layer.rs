//! The layer that puts the auth backend in reach of [`AuthSession`](super::AuthSession), and the
//! state it shares: the backend, the user cache, the revocation handle.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::{AuthData, AuthnBackend, Error, UserId, cache::UserCache, user_key};
use crate::{
    CrossSiteGuard, SessionError, SessionInfo, SessionLayer, SessionQueries, SessionService,
    SessionStore, error::StoreError, token::SessionId,
};

/// How many users the cache holds at most, unless configured.
pub const DEFAULT_USER_CACHE_CAPACITY: usize = 10_000;

type StoreFuture<'a, R> = Pin<Box<dyn Future<Output = Result<R, StoreError>> + Send + 'a>>;

/// The store's queries by user, without naming the store's type.
trait UserSessions: Send + Sync {
    fn list<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<SessionInfo<AuthData>>>;
    fn revoke<'a>(&'a self, key: &'a str, keep: Option<SessionId>) -> StoreFuture<'a, u64>;
}

impl<S: SessionStore<AuthData>> UserSessions for S {
    fn list<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<SessionInfo<AuthData>>> {
        Box::pin(async move { self.sessions_by(&AuthData::USER_ID, &key.to_owned()).await })
    }

    fn revoke<'a>(&'a self, key: &'a str, keep: Option<SessionId>) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let key = key.to_owned();
            match keep {
                Some(keep) => {
                    self.destroy_by_except(&AuthData::USER_ID, &key, &keep)
                        .await
                }
                None => self.destroy_by(&AuthData::USER_ID, &key).await,
            }
        })
    }
}

/// What every request of the layer shares.
pub(crate) struct AuthCore<B: AuthnBackend> {
    pub(crate) backend: B,
    sessions: Arc<dyn UserSessions>,
    cache: Option<UserCache<B::User>>,
    /// `None` when cross-site sign-in was allowed.
    pub(crate) guard: Option<CrossSiteGuard>,
}

impl<B: AuthnBackend> AuthCore<B> {
    /// The user behind a stored id: from the cache when it is on and fresh,
    /// else from the backend.
    pub(crate) async fn user(
        &self,
        key: &str,
        id: &UserId<B>,
        cached: bool,
    ) -> Result<Option<B::User>, B::Error> {
        if cached && let Some(user) = self.cache.as_ref().and_then(|cache| cache.get(key)) {
            return Ok(Some(user));
        }
        let user = self.backend.get_user(id).await?;
        if let Some(cache) = &self.cache {
            match &user {
                Some(user) => cache.put(key.to_owned(), user.clone()),
                None => cache.evict(key),
            }
        }
        Ok(user)
    }

    pub(crate) fn is_caching(&self) -> bool {
        self.cache.is_some()
    }

    pub(crate) fn remember(&self, key: &str, user: &B::User) {
        if let Some(cache) = &self.cache {
            cache.put(key.to_owned(), user.clone());
        }
    }

    pub(crate) fn forget(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.evict(key);
        }
    }

    pub(crate) async fn sessions_of(
        &self,
        key: &str,
    ) -> Result<Vec<SessionInfo<AuthData>>, StoreError> {
        self.sessions.list(key).await
    }

    /// Deletes the user's sessions (but `keep`) and forgets the cached user,
    /// so the next request of any of them is signed out.
    pub(crate) async fn sign_out(
        &self,
        key: &str,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        self.forget(key);
        self.sessions.revoke(key, keep).await
    }
}

/// Builds an [`AuthManagerLayer`] from a backend and the session layer of
/// [`AuthData`], as axum-login's builder of the same name does.
///
/// ```
/// # use axum_typed_session::auth::{AuthUser, AuthnBackend, UserId};
/// # #[derive(Clone, Debug)]
/// # struct User;
/// # impl AuthUser for User {
/// #     type Id = i64;
/// #     fn id(&self) -> i64 { 1 }
/// #     fn session_auth_hash(&self) -> &[u8] { &[] }
/// # }
/// # #[derive(Clone)]
/// # struct Backend;
/// # impl AuthnBackend for Backend {
/// #     type User = User;
/// #     type Credentials = ();
/// #     type Error = std::convert::Infallible;
/// #     async fn authenticate(&self, _: ()) -> Result<Option<User>, Self::Error> { Ok(None) }
/// #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
/// # }
/// use std::time::Duration;
/// use axum::Router;
/// use axum_typed_session::{MemoryStore, SessionConfig, SessionLayer};
/// use axum_typed_session::auth::{AuthData, AuthManagerLayerBuilder};
///
/// let sessions = SessionLayer::new(MemoryStore::<AuthData>::new(), SessionConfig::default());
/// let auth = AuthManagerLayerBuilder::new(Backend, sessions)
///     .with_user_cache(Duration::from_secs(30))
///     .build();
/// let app: Router = Router::new().layer(auth);
/// ```
#[must_use]
pub struct AuthManagerLayerBuilder<B: AuthnBackend, S> {
    backend: B,
    sessions: SessionLayer<AuthData, S>,
    cache: Option<(Duration, usize)>,
    guard: Option<CrossSiteGuard>,
}

impl<B: AuthnBackend, S> std::fmt::Debug for AuthManagerLayerBuilder<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthManagerLayerBuilder")
            .field("cache", &self.cache)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<B: AuthnBackend + 'static, S: SessionStore<AuthData>> AuthManagerLayerBuilder<B, S> {
    /// Sign-in with `backend`, its sessions kept by `sessions`.
    pub fn new(backend: B, sessions: SessionLayer<AuthData, S>) -> Self {
        Self {
            backend,
            sessions,
            cache: None,
            guard: Some(CrossSiteGuard::new()),
        }
    }

    /// Keeps each user [`get_user`](AuthnBackend::get_user) returned for
    /// `ttl`, in this process, so a signed-in request costs no backend call.
    ///
    /// The trade-off: a user changed behind this process's back (a password
    /// changed by another instance, or in the database directly) is seen
    /// up to `ttl` late, so a session signed in with the old password keeps
    /// working that long. [`AuthSession::password_changed`](super::AuthSession::password_changed) and
    /// [`AuthSessions::sign_out_everywhere`] do not wait: they delete the
    /// sessions from the store, which every instance sees on the next
    /// request, and evict the user here. Off by default.
    pub fn with_user_cache(mut self, ttl: Duration) -> Self {
        let capacity = self
            .cache
            .map_or(DEFAULT_USER_CACHE_CAPACITY, |(_, capacity)| capacity);
        self.cache = Some((ttl, capacity));
        self
    }

    /// The most users the cache holds (default
    /// [`DEFAULT_USER_CACHE_CAPACITY`]); at capacity, expired users go
    /// first, then the one fetched longest ago. Turns the cache on with a
    /// 60 s TTL if [`with_user_cache`](Self::with_user_cache) was not called.
    pub fn with_user_cache_capacity(mut self, capacity: usize) -> Self {
        let ttl = self.cache.map_or(Duration::from_secs(60), |(ttl, _)| ttl);
        self.cache = Some((ttl, capacity));
        self
    }

    /// The guard that [`login`](super::AuthSession::login) and
    /// [`logout`](super::AuthSession::logout) apply (default: [`CrossSiteGuard::new`]),
    /// e.g. one that trusts your other front end's origin.
    pub fn with_cross_site_guard(mut self, guard: CrossSiteGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Lets [`login`](super::AuthSession::login) and [`logout`](super::AuthSession::logout)
    /// run for cross-site requests (a sign-in link in an email, say). This
    /// opens the door to login CSRF: an attacker's page can sign the
    /// victim's browser into the attacker's account. Prefer a guard with
    /// [`allow_origin`](CrossSiteGuard::allow_origin).
    pub fn allow_cross_site_sign_in(mut self) -> Self {
        self.guard = None;
        self
    }

    /// The layer.
    pub fn build(self) -> AuthManagerLayer<B, S> {
        let core = AuthCore {
            backend: self.backend,
            sessions: Arc::new(self.sessions.store().clone()),
            cache: self
                .cache
                .map(|(ttl, capacity)| UserCache::new(ttl, capacity)),
            guard: self.guard,
        };
        AuthManagerLayer {
            core: Arc::new(core),
            sessions: self.sessions,
        }
    }
}

/// Sessions of [`AuthData`] plus sign-in with backend `B`: add it to the
/// router once, and handlers can name [`AuthSession<B>`](super::AuthSession).
pub struct AuthManagerLayer<B: AuthnBackend, S> {
    core: Arc<AuthCore<B>>,
    sessions: SessionLayer<AuthData, S>,
}

impl<B: AuthnBackend, S> Clone for AuthManagerLayer<B, S> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

impl<B: AuthnBackend, S: std::fmt::Debug> std::fmt::Debug for AuthManagerLayer<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthManagerLayer")
            .field("sessions", &self.sessions)
            .field(
                "user_cache_ttl",
                &self.core.cache.as_ref().map(UserCache::ttl),
            )
            .finish_non_exhaustive()
    }
}

impl<B: AuthnBackend, S> AuthManagerLayer<B, S> {
    /// The users' sessions, for code outside a request: an admin's "sign
    /// this user out everywhere", a password reset by email.
    pub fn sessions(&self) -> AuthSessions<B> {
        AuthSessions {
            core: self.core.clone(),
        }
    }
}

impl<I, B: AuthnBackend, S: SessionStore<AuthData>> Layer<I> for AuthManagerLayer<B, S> {
    type Service = SessionService<AuthManagerService<I, B>, AuthData, S>;

    fn layer(&self, inner: I) -> Self::Service {
        self.sessions.layer(AuthManagerService {
            inner,
            core: self.core.clone(),
        })
    }
}

/// The service of [`AuthManagerLayer`], inside its session service: it only
/// hands the backend to the request; users are looked up when a handler
/// asks, so routes that never name [`AuthSession`](super::AuthSession) pay nothing.
pub struct AuthManagerService<I, B: AuthnBackend> {
    inner: I,
    core: Arc<AuthCore<B>>,
}

impl<I: Clone, B: AuthnBackend> Clone for AuthManagerService<I, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: self.core.clone(),
        }
    }
}

impl<I: std::fmt::Debug, B: AuthnBackend> std::fmt::Debug for AuthManagerService<I, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthManagerService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<I, ReqBody, B> Service<Request<ReqBody>> for AuthManagerService<I, B>
where
    I: Service<Request<ReqBody>>,
    B: AuthnBackend + 'static,
{
    type Response = I::Response;
    type Error = I::Error;
    type Future = I::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        request.extensions_mut().insert(self.core.clone());
        self.inner.call(request)
    }
}

/// The sessions of every user, outside a request (from
/// [`AuthManagerLayer::sessions`]).
pub struct AuthSessions<B: AuthnBackend> {
    core: Arc<AuthCore<B>>,
}

impl<B: AuthnBackend> Clone for AuthSessions<B> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
        }
    }
}

impl<B: AuthnBackend> std::fmt::Debug for AuthSessions<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSessions").finish_non_exhaustive()
    }
}

impl<B: AuthnBackend> AuthSessions<B> {
    pub(crate) fn of_core(core: Arc<AuthCore<B>>) -> Self {
        Self { core }
    }

    /// The live sessions of a user ("your devices"): one indexed query.
    pub async fn of(&self, user_id: &UserId<B>) -> Result<Vec<SessionInfo<AuthData>>, Error<B>> {
        let key = user_key::<B>(user_id)?;
        Ok(self
            .core
            .sessions_of(&key)
            .await
            .map_err(SessionError::Store)?)
    }

    /// Signs the user out on every device: deletes its sessions (a request
    /// of one of them in flight cannot write it back) and forgets the cached
    /// user. Returns how many sessions there were.
    pub async fn sign_out_everywhere(&self, user_id: &UserId<B>) -> Result<u64, Error<B>> {
        let key = user_key::<B>(user_id)?;
        Ok(self
            .core
            .sign_out(&key, None)
            .await
            .map_err(SessionError::Store)?)
    }

    /// The same, sparing the session `keep` (the one the user is using).
    pub async fn sign_out_others(
        &self,
        user_id: &UserId<B>,
        keep: &SessionId,
    ) -> Result<u64, Error<B>> {
        let key = user_key::<B>(user_id)?;
        Ok(self
            .core
            .sign_out(&key, Some(*keep))
            .await
            .map_err(SessionError::Store)?)
    }

    /// Forgets the cached user (after changing it in the backend), so the
    /// next request of each of its sessions asks the backend again.
    pub fn forget_user(&self, user_id: &UserId<B>) -> Result<(), Error<B>> {
        let key = user_key::<B>(user_id)?;
        self.core.forget(&key);
        Ok(())
    }
}
