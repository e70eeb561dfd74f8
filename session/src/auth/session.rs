//! [`AuthSession`]: who is signed in, and signing in and out.

use std::sync::{Arc, Mutex};

use axum::{
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use http::{Method, StatusCode, request::Parts};
use subtle::ConstantTimeEq;

use super::{
    AuthData, AuthUser, AuthnBackend, UserId,
    layer::{AuthCore, AuthSessions},
    user_key,
};
use crate::{CrossSiteRefusal, Session, SessionError, SessionInfo, sync::lock};

/// Why an [`AuthSession`] call failed. As a response: the backend's error is
/// a 500 (logged with `tracing`, never shown), a store outage a 503, a
/// cross-site sign-in a 403.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error<B: AuthnBackend> {
    /// The session could not be loaded or written.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The backend failed.
    #[error("the authentication backend failed: {0}")]
    Backend(#[source] B::Error),
    /// `login` or `logout` in a request another site sent (login CSRF).
    #[error(transparent)]
    CrossSite(CrossSiteRefusal),
    /// The user's id does not serialize to JSON (it is stored as its JSON text).
    #[error("the user id does not serialize to JSON: {0}")]
    UserId(#[source] serde_json::Error),
    /// No `AuthManagerLayer` for this backend wraps the route.
    #[error(
        "no AuthManagerLayer for this backend wraps this route: add `.layer(AuthManagerLayerBuilder::new(backend, session_layer).build())` to the router"
    )]
    MissingLayer,
}

impl<B: AuthnBackend> std::fmt::Debug for Error<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Session(error) => f.debug_tuple("Session").field(error).finish(),
            Error::Backend(error) => f.debug_tuple("Backend").field(error).finish(),
            Error::CrossSite(refusal) => f.debug_tuple("CrossSite").field(refusal).finish(),
            Error::UserId(error) => f.debug_tuple("UserId").field(error).finish(),
            Error::MissingLayer => f.write_str("MissingLayer"),
        }
    }
}

impl<B: AuthnBackend> IntoResponse for Error<B> {
    fn into_response(self) -> Response {
        match self {
            // Logged where it happened, with the session's id.
            Error::Session(error) => error.into_response(),
            Error::CrossSite(refusal) => refusal.into_response(),
            error => {
                // The backend's message, never the credentials or the user.
                tracing::error!(%error, "sign-in failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
            }
        }
    }
}

/// The user a request resolved, shared by every extraction in the request.
pub(crate) struct Resolved<U>(Arc<Mutex<Option<U>>>);

impl<U> Clone for Resolved<U> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Sign-in for one request: an axum extractor, behind an
/// [`AuthManagerLayer`](super::AuthManagerLayer).
///
/// Extracting it loads the session and, if a user is signed in, gets the
/// user from the backend (or the user cache) and compares the session's
/// auth hash with the user's in constant time. A mismatch (the password
/// changed) or a user that no longer exists signs the session out: it is
/// deleted and the request goes on signed out. A backend failure rejects
/// the request with a 500.
///
/// ```
/// # use axum_typed_session::auth::{AuthUser, AuthnBackend, UserId};
/// # #[derive(Clone, Debug)]
/// # struct User { id: i64, name: String }
/// # impl AuthUser for User {
/// #     type Id = i64;
/// #     fn id(&self) -> i64 { self.id }
/// #     fn session_auth_hash(&self) -> &[u8] { &[] }
/// # }
/// # #[derive(Clone)]
/// # struct Backend;
/// # struct Credentials { name: String, password: String }
/// # impl AuthnBackend for Backend {
/// #     type User = User;
/// #     type Credentials = Credentials;
/// #     type Error = std::convert::Infallible;
/// #     async fn authenticate(&self, _: Credentials) -> Result<Option<User>, Self::Error> { Ok(None) }
/// #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
/// # }
/// use axum::response::{IntoResponse, Redirect, Response};
/// use axum_typed_session::auth::AuthSession;
///
/// async fn login(mut auth: AuthSession<Backend>, creds: Credentials) -> Response {
///     let user = match auth.authenticate(creds).await {
///         Ok(Some(user)) => user,
///         Ok(None) => return "wrong name or password".into_response(),
///         Err(error) => return error.into_response(),
///     };
///     // A new token, and the user's id and auth hash in their columns, in
///     // one write done before this returns.
///     if let Err(error) = auth.login(&user).await {
///         return error.into_response();
///     }
///     Redirect::to("/").into_response()
/// }
///
/// async fn home(auth: AuthSession<Backend>) -> String {
///     match auth.user().await {
///         Some(user) => format!("hello, {}", user.name),
///         None => "hello, stranger".to_owned(),
///     }
/// }
///
/// async fn logout(mut auth: AuthSession<Backend>) -> Result<Redirect, axum_typed_session::auth::Error<Backend>> {
///     auth.logout().await?;
///     Ok(Redirect::to("/"))
/// }
/// ```
pub struct AuthSession<B: AuthnBackend> {
    core: Arc<AuthCore<B>>,
    session: Session<AuthData>,
    user: Resolved<B::User>,
    /// What the cross-site guard says about this request.
    cross_site: Result<(), CrossSiteRefusal>,
}

impl<B: AuthnBackend> Clone for AuthSession<B> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            session: self.session.clone(),
            user: self.user.clone(),
            cross_site: self.cross_site,
        }
    }
}

impl<B: AuthnBackend> std::fmt::Debug for AuthSession<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whether someone is signed in, never who.
        f.debug_struct("AuthSession")
            .field("session", &self.session)
            .field("signed_in", &lock(&self.user.0).is_some())
            .finish_non_exhaustive()
    }
}

impl<B: AuthnBackend> AuthSession<B> {
    /// The backend.
    pub fn backend(&self) -> &B {
        &self.core.backend
    }

    /// The signed-in user, if any. `async` as in axum-login, so ported
    /// handlers compile unchanged; it never waits: the user was resolved
    /// when the extractor ran.
    #[allow(clippy::unused_async)]
    pub async fn user(&self) -> Option<B::User> {
        lock(&self.user.0).clone()
    }

    /// The session underneath: its public id, expiry, remember-me.
    pub fn session(&self) -> &Session<AuthData> {
        &self.session
    }

    /// Checks credentials with the backend: the user, or `None` when they
    /// are wrong (never an error). Refused, before the backend is asked,
    /// when another site sent the request, as [`login`](Self::login) is: a
    /// sign-in route is protected whole, and no other site can use a
    /// visitor's browser to try passwords.
    pub async fn authenticate(&self, creds: B::Credentials) -> Result<Option<B::User>, Error<B>> {
        self.cross_site.map_err(Error::CrossSite)?;
        self.core
            .backend
            .authenticate(creds)
            .await
            .map_err(Error::Backend)
    }

    /// Signs `user` in: a new token (against session fixation) and the
    /// user's id and auth hash in their columns, in one write that is done
    /// when this returns. Refused with [`Error::CrossSite`] when another
    /// site sent the request (login CSRF), unless the layer allows it.
    /// For remember-me, call `auth.session().set_remember(true)` first: it
    /// goes in the same write.
    pub async fn login(&mut self, user: &B::User) -> Result<(), Error<B>> {
        self.cross_site.map_err(Error::CrossSite)?;
        let key = self.write_sign_in(user).await?;
        self.core.remember(&key, user);
        tracing::debug!(session = ?self.session.id(), "signed in");
        Ok(())
    }

    /// The sign-in write: a new token, the user's id and auth hash, done
    /// when this returns; the request goes on as `user`. Returns the id as
    /// stored.
    async fn write_sign_in(&mut self, user: &B::User) -> Result<String, Error<B>> {
        let key = user_key::<B>(&user.id())?;
        self.session.set_user_id(Some(key.clone()));
        self.session
            .set_auth_hash(Some(user.session_auth_hash().to_vec()));
        self.session.renew();
        self.session.write_now().await?;
        *lock(&self.user.0) = Some(user.clone());
        Ok(key)
    }

    /// Signs out: deletes the session now and clears the cookie; the rest
    /// of the request goes on with a fresh, empty session. Returns the user
    /// that was signed in. Refused for cross-site requests, as
    /// [`login`](Self::login) is.
    pub async fn logout(&mut self) -> Result<Option<B::User>, Error<B>> {
        self.cross_site.map_err(Error::CrossSite)?;
        let id = self.session.id();
        self.session.destroy_now().await?;
        tracing::debug!(session = ?id, "signed out");
        Ok(lock(&self.user.0).take())
    }

    /// The live sessions of the signed-in user ("your devices"); empty when
    /// no one is signed in.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo<AuthData>>, Error<B>> {
        let Some(user) = self.user().await else {
            return Ok(Vec::new());
        };
        self.users().of(&user.id()).await
    }

    /// Signs `user_id` out on every device, this one too if it is theirs.
    /// Returns how many sessions were deleted.
    pub async fn sign_out_everywhere(&mut self, user_id: &UserId<B>) -> Result<u64, Error<B>> {
        let count = self.users().sign_out_everywhere(user_id).await?;
        if self.is_signed_in_as(user_id)? {
            // Its row is gone; the cookie goes with the response.
            self.session.destroy_now().await?;
            *lock(&self.user.0) = None;
        }
        Ok(count)
    }

    /// Signs `user_id` out on every device but this session. Returns how
    /// many sessions were deleted.
    pub async fn sign_out_others(&self, user_id: &UserId<B>) -> Result<u64, Error<B>> {
        match self.session.id() {
            Some(current) => self.users().sign_out_others(user_id, &current).await,
            None => self.users().sign_out_everywhere(user_id).await,
        }
    }

    /// After `user`'s password (its auth hash) changed: every other session
    /// of the user is deleted, and this one, if it is the user's, is signed
    /// in again with the new hash and a new token. One call, done when it
    /// returns. Returns how many other sessions were signed out.
    pub async fn password_changed(&mut self, user: &B::User) -> Result<u64, Error<B>> {
        let id = user.id();
        if !self.is_signed_in_as(&id)? {
            return self.users().sign_out_everywhere(&id).await;
        }
        // Re-sign this session in first (new token, new hash), then delete
        // every other: none of them can be written back afterwards.
        let key = self.write_sign_in(user).await?;
        let count = self.sign_out_others(&id).await?;
        // After the sign-out, which forgets the cached user.
        self.core.remember(&key, user);
        Ok(count)
    }

    fn users(&self) -> AuthSessions<B> {
        AuthSessions::of_core(self.core.clone())
    }

    fn is_signed_in_as(&self, user_id: &UserId<B>) -> Result<bool, Error<B>> {
        let key = user_key::<B>(user_id)?;
        Ok(lock(&self.user.0).is_some() && self.session.user_id().as_deref() == Some(key.as_str()))
    }

    /// Loads the session and resolves its user.
    async fn resolve(parts: &mut Parts) -> Result<Self, Error<B>>
    where
        B: 'static,
    {
        let core = parts
            .extensions
            .get::<Arc<AuthCore<B>>>()
            .cloned()
            .ok_or(Error::MissingLayer)?;
        // Sign-in and sign-out change state whatever the method: a
        // cross-site GET to /logout is refused too.
        let cross_site = core
            .guard
            .as_ref()
            .map_or(Ok(()), |guard| guard.check(&Method::POST, &parts.headers));
        let session = Session::<AuthData>::from_request_parts(parts, &()).await?;
        if let Some(user) = parts.extensions.get::<Resolved<B::User>>() {
            return Ok(Self {
                core,
                session,
                user: user.clone(),
                cross_site,
            });
        }
        let user = signed_in_user(&core, &session).await?;
        let user = Resolved(Arc::new(Mutex::new(user)));
        parts.extensions.insert(user.clone());
        Ok(Self {
            core,
            session,
            user,
            cross_site,
        })
    }
}

/// The user the session is signed in as, after checking its auth hash; a
/// session that fails the check is deleted.
async fn signed_in_user<B: AuthnBackend>(
    core: &AuthCore<B>,
    session: &Session<AuthData>,
) -> Result<Option<B::User>, Error<B>> {
    let (Some(key), Some(hash)) = (session.user_id(), session.auth_hash()) else {
        return Ok(None);
    };
    let Ok(id) = serde_json::from_str::<UserId<B>>(&key) else {
        // Written for another id type (the app changed it): not a user.
        tracing::warn!(session = ?session.id(), "the session's user id does not decode as this backend's id type; signing it out");
        session.destroy_now().await?;
        return Ok(None);
    };
    let matches = |user: &B::User| bool::from(user.session_auth_hash().ct_eq(&hash));
    let mut user = core.user(&key, &id, true).await.map_err(Error::Backend)?;
    if core.is_caching() && user.as_ref().is_some_and(|user| !matches(user)) {
        // The cached user may be older than the session (signed in again
        // after a password change elsewhere): ask the backend before deciding.
        user = core.user(&key, &id, false).await.map_err(Error::Backend)?;
    }
    match user {
        Some(user) if matches(&user) => Ok(Some(user)),
        _ => {
            tracing::debug!(session = ?session.id(), "the user is gone or its credentials changed; signing the session out");
            session.destroy_now().await?;
            Ok(None)
        }
    }
}

impl<B: AuthnBackend + 'static, S: Send + Sync> FromRequestParts<S> for AuthSession<B> {
    type Rejection = Error<B>;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::resolve(parts).await
    }
}
