//! Route protection: sign-in required, permissions required, or any
//! predicate, answered with a redirect to the sign-in page for browsers and
//! a status for API clients.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::{FromRequestParts, OriginalUri},
    response::{IntoResponse, Redirect, Response},
};
use http::{HeaderMap, Request, StatusCode, header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tower_layer::Layer;
use tower_service::Service;

use super::{AuthSession, AuthnBackend, AuthzBackend, Error};

/// What a [`Predicate`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The request goes on to the route.
    Granted,
    /// No one is signed in: sign-in page (browsers) or 401 (API clients).
    SignInRequired,
    /// Signed in, but not allowed: 403.
    Forbidden,
}

/// Decides whether a request may reach a route.
pub trait Predicate<B: AuthnBackend>: Clone + Send + Sync + 'static {
    /// The decision for this request's sign-in.
    fn check(&self, auth: AuthSession<B>) -> impl Future<Output = Result<Access, Error<B>>> + Send;
}

/// Someone is signed in ([`login_required`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SignedIn;

impl<B: AuthnBackend + 'static> Predicate<B> for SignedIn {
    async fn check(&self, auth: AuthSession<B>) -> Result<Access, Error<B>> {
        Ok(if auth.user().await.is_some() {
            Access::Granted
        } else {
            Access::SignInRequired
        })
    }
}

/// The signed-in user has every one of these permissions
/// ([`permission_required`]).
pub struct Permissions<B: AuthzBackend>(Arc<[B::Permission]>);

impl<B: AuthzBackend> Clone for Permissions<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B: AuthzBackend> std::fmt::Debug for Permissions<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permissions")
            .field("count", &self.0.len())
            .finish()
    }
}

impl<B> Predicate<B> for Permissions<B>
where
    B: AuthzBackend + 'static,
    B::Permission: Clone,
{
    async fn check(&self, auth: AuthSession<B>) -> Result<Access, Error<B>> {
        let Some(user) = auth.user().await else {
            return Ok(Access::SignInRequired);
        };
        let granted = auth
            .backend()
            .get_all_permissions(&user)
            .await
            .map_err(Error::Backend)?;
        Ok(if self.0.iter().all(|perm| granted.contains(perm)) {
            Access::Granted
        } else {
            Access::Forbidden
        })
    }
}

/// Any `async fn(AuthSession<B>) -> bool` ([`predicate_required`]): `false`
/// is [`Access::SignInRequired`] when no one is signed in, else
/// [`Access::Forbidden`].
pub struct Custom<F>(F);

impl<F: Clone> Clone for Custom<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F> std::fmt::Debug for Custom<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Custom")
    }
}

impl<B, F, Fut> Predicate<B> for Custom<F>
where
    B: AuthnBackend + 'static,
    F: Fn(AuthSession<B>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    async fn check(&self, auth: AuthSession<B>) -> Result<Access, Error<B>> {
        let signed_in = auth.user().await.is_some();
        Ok(if (self.0)(auth).await {
            Access::Granted
        } else if signed_in {
            Access::Forbidden
        } else {
            Access::SignInRequired
        })
    }
}

type Alternative = Arc<dyn Fn() -> Response + Send + Sync>;

/// A layer that lets a request reach the route only if its predicate grants
/// access. Put it on protected routes with axum's `route_layer`.
///
/// Denied requests get, in this order: the response of
/// [`otherwise`](Self::otherwise) if set; for [`Access::SignInRequired`], a
/// `303 See Other` to the [`login_url`](Self::login_url) with the page
/// asked for in `next=` when the client is a browser (its `Accept` names
/// HTML) or [`always_redirect`](Self::always_redirect) is set, else `401`;
/// for [`Access::Forbidden`], `403`.
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
/// use axum::{Router, routing::get};
/// use axum_typed_session::{auth::login_required, login_required};
///
/// let app: Router = Router::new()
///     .route("/account", get(|| async { "yours" }))
///     // axum-login's spelling...
///     .route_layer(login_required!(Backend, login_url = "/login"))
///     .route("/api/me", get(|| async { "you" }))
///     // ...or the function it stands for.
///     .route_layer(login_required::<Backend>());
/// ```
#[must_use]
pub struct RequireLayer<B: AuthnBackend, P> {
    predicate: P,
    login_url: Option<Arc<str>>,
    redirect_field: Arc<str>,
    always_redirect: bool,
    otherwise: Option<Alternative>,
    backend: std::marker::PhantomData<fn() -> B>,
}

impl<B: AuthnBackend, P: Clone> Clone for RequireLayer<B, P> {
    fn clone(&self) -> Self {
        Self {
            predicate: self.predicate.clone(),
            login_url: self.login_url.clone(),
            redirect_field: self.redirect_field.clone(),
            always_redirect: self.always_redirect,
            otherwise: self.otherwise.clone(),
            backend: std::marker::PhantomData,
        }
    }
}

impl<B: AuthnBackend, P: std::fmt::Debug> std::fmt::Debug for RequireLayer<B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireLayer")
            .field("predicate", &self.predicate)
            .field("login_url", &self.login_url)
            .field("redirect_field", &self.redirect_field)
            .field("always_redirect", &self.always_redirect)
            .field("otherwise", &self.otherwise.is_some())
            .finish()
    }
}

/// Requires a signed-in user.
pub fn login_required<B: AuthnBackend + 'static>() -> RequireLayer<B, SignedIn> {
    RequireLayer::new(SignedIn)
}

/// Requires a signed-in user with every one of `permissions`.
pub fn permission_required<B>(
    permissions: impl IntoIterator<Item = B::Permission>,
) -> RequireLayer<B, Permissions<B>>
where
    B: AuthzBackend + 'static,
    B::Permission: Clone,
{
    RequireLayer::new(Permissions(permissions.into_iter().collect()))
}

/// Requires what `predicate` says.
pub fn predicate_required<B, F, Fut>(predicate: F) -> RequireLayer<B, Custom<F>>
where
    B: AuthnBackend + 'static,
    F: Fn(AuthSession<B>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    RequireLayer::new(Custom(predicate))
}

impl<B: AuthnBackend + 'static, P: Predicate<B>> RequireLayer<B, P> {
    /// A layer for `predicate`, answering 401 and 403.
    pub fn new(predicate: P) -> Self {
        Self {
            predicate,
            login_url: None,
            redirect_field: Arc::from("next"),
            always_redirect: false,
            otherwise: None,
            backend: std::marker::PhantomData,
        }
    }

    /// Where browsers that must sign in are sent (`/login`, or an absolute
    /// URL), with the page they asked for in the
    /// [`redirect_field`](Self::redirect_field) (unless `url` already has it).
    pub fn login_url(mut self, url: impl Into<String>) -> Self {
        self.login_url = Some(Arc::from(url.into()));
        self
    }

    /// The query parameter that carries the page asked for (default `next`).
    /// The sign-in handler should pass it through [`next_path`](super::next_path)
    /// before redirecting to it.
    pub fn redirect_field(mut self, field: impl Into<String>) -> Self {
        self.redirect_field = Arc::from(field.into());
        self
    }

    /// Redirects every client that must sign in, not only browsers (by
    /// default an `Accept` without HTML gets a 401).
    pub fn always_redirect(mut self) -> Self {
        self.always_redirect = true;
        self
    }

    /// Answers every denied request with `response()` instead.
    pub fn otherwise<R: IntoResponse>(
        mut self,
        response: impl Fn() -> R + Send + Sync + 'static,
    ) -> Self {
        self.otherwise = Some(Arc::new(move || response().into_response()));
        self
    }

    fn deny(&self, access: Access, headers: &HeaderMap, asked_for: &http::Uri) -> Response {
        if let Some(otherwise) = &self.otherwise {
            return otherwise();
        }
        match (access, &self.login_url) {
            (Access::SignInRequired, Some(login_url))
                if self.always_redirect || accepts_html(headers) =>
            {
                Redirect::to(&with_next(login_url, &self.redirect_field, asked_for)).into_response()
            }
            (Access::SignInRequired, _) => {
                (StatusCode::UNAUTHORIZED, "sign-in required").into_response()
            }
            _ => (StatusCode::FORBIDDEN, "forbidden").into_response(),
        }
    }
}

impl<I, B: AuthnBackend, P: Clone> Layer<I> for RequireLayer<B, P> {
    type Service = Require<I, B, P>;

    fn layer(&self, inner: I) -> Self::Service {
        Require {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequireLayer`].
pub struct Require<I, B: AuthnBackend, P> {
    inner: I,
    layer: RequireLayer<B, P>,
}

impl<I: Clone, B: AuthnBackend, P: Clone> Clone for Require<I, B, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<I: std::fmt::Debug, B: AuthnBackend, P: std::fmt::Debug> std::fmt::Debug for Require<I, B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Require")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<I, ReqBody, B, P> Service<Request<ReqBody>> for Require<I, B, P>
where
    I: Service<Request<ReqBody>, Error = Infallible> + Clone + Send + 'static,
    I::Response: IntoResponse,
    I::Future: Send,
    ReqBody: Send + 'static,
    B: AuthnBackend + 'static,
    P: Predicate<B>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let access = match AuthSession::<B>::from_request_parts(&mut parts, &()).await {
                Ok(auth) => layer.predicate.check(auth).await,
                Err(error) => Err(error),
            };
            match access {
                Ok(Access::Granted) => {
                    // The user resolved here rides along in the extensions:
                    // the handler's `AuthSession` does not look it up again.
                    let Ok(response) = inner.call(Request::from_parts(parts, body)).await;
                    Ok(response.into_response())
                }
                Ok(denied) => {
                    let asked_for = parts
                        .extensions
                        .get::<OriginalUri>()
                        .map_or(&parts.uri, |original| &original.0);
                    Ok(layer.deny(denied, &parts.headers, asked_for))
                }
                Err(error) => Ok(error.into_response()),
            }
        })
    }
}

/// Whether the client asked for HTML: a browser navigating, not `fetch` or
/// an API client.
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            let refused = params.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            !refused
                && (media.eq_ignore_ascii_case("text/html")
                    || media.eq_ignore_ascii_case("application/xhtml+xml"))
        })
}

/// `login_url` with `field=<path and query asked for>` added.
fn with_next(login_url: &str, field: &str, asked_for: &http::Uri) -> String {
    let has_field = login_url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(field))
    });
    if has_field {
        return login_url.to_owned();
    }
    let asked_for = asked_for
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let separator = if login_url.contains('?') { '&' } else { '?' };
    format!(
        "{login_url}{separator}{}={}",
        utf8_percent_encode(field, NON_ALPHANUMERIC),
        utf8_percent_encode(asked_for, NON_ALPHANUMERIC)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, http::HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn browsers_ask_for_html_and_api_clients_do_not() {
        // What Chromium sends for a navigation, and for `fetch`.
        assert!(accepts_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
        )));
        assert!(!accepts_html(&accept("*/*")));
        assert!(!accepts_html(&accept("application/json")));
        assert!(!accepts_html(&accept("text/html;q=0, application/json")));
        assert!(!accepts_html(&HeaderMap::new()));
    }

    #[test]
    fn next_carries_the_page_asked_for() {
        let uri: http::Uri = "/account/orders?page=2".parse().unwrap();
        assert_eq!(
            with_next("/login", "next", &uri),
            "/login?next=%2Faccount%2Forders%3Fpage%3D2"
        );
        assert_eq!(
            with_next("/login?lang=en", "next", &uri),
            "/login?lang=en&next=%2Faccount%2Forders%3Fpage%3D2"
        );
        assert_eq!(with_next("/login?next=/", "next", &uri), "/login?next=/");
    }
}
