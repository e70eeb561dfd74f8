//! Sign-in on typed sessions (feature `auth`), with axum-login 0.18's trait
//! names and signatures: a backend written for axum-login ports by changing
//! its imports.
//!
//! - [`AuthUser`], [`AuthnBackend`], [`AuthzBackend`]: as in axum-login.
//! - [`AuthManagerLayerBuilder`]: the backend plus a [`SessionLayer`](crate::SessionLayer)
//!   of [`AuthData`], the library's own session struct: the user's id in an
//!   indexed column, the auth hash beside it.
//! - [`AuthSession`]: the extractor — [`user`](AuthSession::user),
//!   [`authenticate`](AuthSession::authenticate), [`login`](AuthSession::login),
//!   [`logout`](AuthSession::logout), and what axum-login cannot do because
//!   its sessions are opaque blobs: [`sessions`](AuthSession::sessions),
//!   [`sign_out_everywhere`](AuthSession::sign_out_everywhere),
//!   [`sign_out_others`](AuthSession::sign_out_others),
//!   [`password_changed`](AuthSession::password_changed).
//! - Route protection: [`login_required`](crate::login_required!),
//!   [`permission_required`](crate::permission_required!) and
//!   [`predicate_required`](crate::predicate_required!), as macros with
//!   axum-login's spelling or as the functions behind them.
//!
//! ```
//! # use axum_typed_session::auth::{AuthUser, AuthnBackend, UserId};
//! # #[derive(Clone, Debug)]
//! # struct User { id: i64 }
//! # impl AuthUser for User {
//! #     type Id = i64;
//! #     fn id(&self) -> i64 { self.id }
//! #     fn session_auth_hash(&self) -> &[u8] { &[] }
//! # }
//! # #[derive(Clone)]
//! # struct Backend;
//! # impl AuthnBackend for Backend {
//! #     type User = User;
//! #     type Credentials = ();
//! #     type Error = std::convert::Infallible;
//! #     async fn authenticate(&self, _: ()) -> Result<Option<User>, Self::Error> { Ok(None) }
//! #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
//! # }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use axum_typed_session::{SessionConfig, SessionLayer, SqliteStore, login_required};
//! use axum_typed_session::auth::{AuthData, AuthManagerLayerBuilder, AuthSession};
//!
//! let store = SqliteStore::<AuthData>::connect("sqlite::memory:").await?;
//! store.migrate().await?; // the `auth_sessions` table and its user index
//! let sessions = SessionLayer::new(store, SessionConfig::default().with_cookie_name("auth"));
//! let app: Router = Router::new()
//!     .route("/account", get(|auth: AuthSession<Backend>| async move {
//!         format!("user {}", auth.user().await.map_or(0, |user| user.id))
//!     }))
//!     .route_layer(login_required!(Backend, login_url = "/login"))
//!     .layer(AuthManagerLayerBuilder::new(Backend, sessions).build());
//! # Ok(()) }
//! ```
//!
//! Where this differs from axum-login, and why:
//! - The session is a typed row, [`AuthData`], in a table of its own
//!   (`auth_sessions`), not a key in the app's session: the user's id is an
//!   indexed column, so "the sessions of user 42" is one query. Keep the
//!   app's own session data in its own struct, with its own cookie name.
//! - [`AuthUser::Id`] is stored as its JSON text; its bounds are axum-login's.
//! - `login` and `logout` are refused for cross-site requests by default
//!   (login CSRF); axum-login leaves that to the app.
//! - `logout` deletes the session at once; the request goes on with a fresh one.
//! - `permission_required` answers 403 to a signed-in user without the
//!   permission, and 500 (logged) when the backend fails, where axum-login
//!   redirects to the sign-in page in both cases.
//! - A redirect is `303 See Other`, so a denied `POST` is not re-sent to the
//!   sign-in page; clients that do not ask for HTML get a 401 instead.

mod backend;
mod cache;
mod layer;
mod require;
mod session;

use crate::Session;

pub use backend::{AuthUser, AuthnBackend, AuthzBackend, UserId};
pub use layer::{
    AuthManagerLayer, AuthManagerLayerBuilder, AuthManagerService, AuthSessions,
    DEFAULT_USER_CACHE_CAPACITY,
};
pub use require::{
    Access, Custom, Permissions, Predicate, Require, RequireLayer, SignedIn, login_required,
    permission_required, predicate_required,
};
pub use session::{AuthSession, Error};

/// The session of sign-in: which user, and the auth hash it signed in with.
/// Store it like any session struct (`SqliteStore::<AuthData>`, ...) and
/// `migrate()` it: table `auth_sessions`, `user_id` indexed.
#[derive(Session, Default, Debug)]
#[session(table = "auth_sessions")]
pub struct AuthData {
    /// The user's id as JSON text; `None` while no one is signed in.
    #[session(index)]
    user_id: Option<String>,
    /// [`AuthUser::session_auth_hash`] at sign-in.
    auth_hash: Option<Vec<u8>>,
}

impl AuthData {
    /// The signed-in user's id, as stored (its JSON text).
    pub fn stored_user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// The key a user's sessions are stored under: the id's JSON text.
pub(crate) fn user_key<B: AuthnBackend>(id: &UserId<B>) -> Result<String, Error<B>> {
    serde_json::to_string(id).map_err(Error::UserId)
}

/// Where to send a browser after sign-in: `next` if it is a path on this
/// site, else `/`. A `next=` from the query string is the visitor's input:
/// redirecting to it unchecked is an open redirect (`next=//evil.example`).
///
/// ```
/// use axum_typed_session::auth::next_path;
///
/// assert_eq!(next_path(Some("/account?tab=2")), "/account?tab=2");
/// assert_eq!(next_path(Some("//evil.example")), "/");
/// assert_eq!(next_path(Some("https://evil.example")), "/");
/// assert_eq!(next_path(Some("/\\evil.example")), "/");
/// assert_eq!(next_path(None), "/");
/// ```
pub fn next_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path
        }
        _ => "/",
    }
}

/// Requires a signed-in user, in axum-login's spelling; expands to
/// [`auth::login_required`](crate::auth::login_required).
///
/// - `login_required!(Backend)`: 401 when no one is signed in.
/// - `login_required!(Backend, login_url = "/login")`: browsers are sent to
///   `/login?next=<page>`, API clients get a 401.
/// - `login_required!(Backend, login_url = "/login", redirect_field = "to")`.
///
/// ```
/// # use axum_typed_session::auth::{AuthUser, AuthnBackend};
/// # #[derive(Clone, Debug)] struct User;
/// # impl AuthUser for User { type Id = i64; fn id(&self) -> i64 { 1 } fn session_auth_hash(&self) -> &[u8] { &[] } }
/// # #[derive(Clone)] struct Backend;
/// # impl AuthnBackend for Backend {
/// #     type User = User; type Credentials = (); type Error = std::convert::Infallible;
/// #     async fn authenticate(&self, _: ()) -> Result<Option<User>, Self::Error> { Ok(None) }
/// #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
/// # }
/// use axum::{Router, routing::get};
/// use axum_typed_session::login_required;
///
/// let app: Router = Router::new()
///     .route("/account", get(|| async { "yours" }))
///     .route_layer(login_required!(Backend, login_url = "/login"));
/// ```
#[macro_export]
macro_rules! login_required {
    ($backend:ty $(,)?) => {
        $crate::auth::login_required::<$backend>()
    };
    ($backend:ty, login_url = $login_url:expr $(,)?) => {
        $crate::auth::login_required::<$backend>().login_url($login_url)
    };
    ($backend:ty, login_url = $login_url:expr, redirect_field = $field:expr $(,)?) => {
        $crate::auth::login_required::<$backend>()
            .login_url($login_url)
            .redirect_field($field)
    };
}

/// Requires a signed-in user with every permission listed, in axum-login's
/// spelling; expands to [`auth::permission_required`](crate::auth::permission_required).
/// Each permission is converted with `.into()` to the backend's
/// [`Permission`](crate::auth::AuthzBackend::Permission).
///
/// - `permission_required!(Backend, "admin.read")`: 401 signed out, 403
///   without the permission.
/// - `permission_required!(Backend, login_url = "/login", "admin.read", "admin.write")`.
/// - `permission_required!(Backend, login_url = "/login", redirect_field = "to", "admin.read")`.
#[macro_export]
macro_rules! permission_required {
    ($backend:ty, login_url = $login_url:expr, redirect_field = $field:expr, $($perm:expr),+ $(,)?) => {
        $crate::permission_required!($backend, $($perm),+)
            .login_url($login_url)
            .redirect_field($field)
    };
    ($backend:ty, login_url = $login_url:expr, $($perm:expr),+ $(,)?) => {
        $crate::permission_required!($backend, $($perm),+).login_url($login_url)
    };
    ($backend:ty, $($perm:expr),+ $(,)?) => {
        $crate::auth::permission_required::<$backend>([$(
            <<$backend as $crate::auth::AuthzBackend>::Permission as ::core::convert::From<_>>::from($perm)
        ),+])
    };
}

/// Requires what an `async fn(AuthSession<B>) -> bool` says, in
/// axum-login's spelling; expands to
/// [`auth::predicate_required`](crate::auth::predicate_required).
///
/// - `predicate_required!(is_admin, StatusCode::NOT_FOUND)`: the second
///   argument is the response to every denied request.
/// - `predicate_required!(is_admin, login_url = "/login", redirect_field = "next")`.
#[macro_export]
macro_rules! predicate_required {
    ($predicate:expr, login_url = $login_url:expr, redirect_field = $field:expr $(,)?) => {
        $crate::auth::predicate_required($predicate)
            .login_url($login_url)
            .redirect_field($field)
    };
    ($predicate:expr, login_url = $login_url:expr $(,)?) => {
        $crate::auth::predicate_required($predicate).login_url($login_url)
    };
    ($predicate:expr, $alternative:expr $(,)?) => {
        $crate::auth::predicate_required($predicate).otherwise(|| $alternative)
    };
}
