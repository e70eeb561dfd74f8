//! A guard for state-changing routes against cross-site requests: the
//! defence against login CSRF, and against CSRF on any route that works
//! without a session (where `SameSite` cannot help, because the attacker
//! needs no cookie of the victim's).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Request, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

/// Refuses state-changing requests (any method but `GET`, `HEAD`,
/// `OPTIONS`) that a browser sent from another site, with a 403.
///
/// It asks the browser, by Fetch Metadata: `Sec-Fetch-Site` is set by every
/// current browser and cannot be set by a page. `same-origin` and `none`
/// (the user typed the address or used a bookmark) pass; `same-site` and
/// `cross-site` are refused — a sibling subdomain is another site to a
/// session. Without Fetch Metadata (older browsers), the `Origin` header is
/// compared with `Host`: a mismatch, or `Origin: null`, is refused. A
/// request with neither header is not from a browser (curl, a server) and
/// passes: it carries no victim's ambient credentials. Origins you trust
/// (your other front end) pass with [`allow_origin`](Self::allow_origin).
///
/// Put it on login and logout and on every route that changes state without
/// a session; put it on all routes if in doubt — same-origin forms and
/// `fetch` calls pass.
///
/// ```
/// use axum::{Router, routing::post};
/// use axum_typed_session::CrossSiteGuard;
///
/// let app: Router = Router::new()
///     .route("/login", post(|| async { "signed in" }))
///     .layer(CrossSiteGuard::new().allow_origin("https://admin.example.com"));
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct CrossSiteGuard {
    allowed_origins: Arc<[String]>,
}

/// Why the guard refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrossSiteRefusal {
    /// `Sec-Fetch-Site: cross-site`.
    #[error(
        "cross-site request refused: this route accepts only requests from its own site (Sec-Fetch-Site: cross-site)"
    )]
    CrossSite,
    /// `Sec-Fetch-Site: same-site` (another subdomain, say).
    #[error(
        "cross-site request refused: this route accepts only requests from its own origin, not from another subdomain (Sec-Fetch-Site: same-site)"
    )]
    SameSite,
    /// No Fetch Metadata, and an `Origin` other than this host.
    #[error("cross-site request refused: the request's Origin is not this site")]
    OtherOrigin,
}

impl IntoResponse for CrossSiteRefusal {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, self.to_string()).into_response()
    }
}

impl CrossSiteGuard {
    /// A guard that trusts no other origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accepts requests whose `Origin` is exactly `origin`
    /// (`scheme://host[:port]`, as browsers send it).
    pub fn allow_origin(self, origin: impl Into<String>) -> Self {
        let mut origins = self.allowed_origins.to_vec();
        origins.push(origin.into().trim_end_matches('/').to_owned());
        Self {
            allowed_origins: origins.into(),
        }
    }

    /// Whether a request may pass; the layer answers the refusal as a 403.
    ///
    /// ```
    /// use axum_typed_session::{CrossSiteGuard, CrossSiteRefusal};
    /// use http::{HeaderMap, HeaderValue, Method};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    /// let guard = CrossSiteGuard::new();
    /// assert_eq!(guard.check(&Method::POST, &headers), Err(CrossSiteRefusal::CrossSite));
    /// assert_eq!(guard.check(&Method::GET, &headers), Ok(()));
    /// ```
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), CrossSiteRefusal> {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|value| value.to_str().ok());
        if origin.is_some_and(|origin| self.allowed_origins.iter().any(|allowed| allowed == origin))
        {
            return Ok(());
        }
        match headers
            .get("sec-fetch-site")
            .and_then(|value| value.to_str().ok())
        {
            Some("same-origin" | "none") => Ok(()),
            Some("same-site") => Err(CrossSiteRefusal::SameSite),
            Some(_) => Err(CrossSiteRefusal::CrossSite),
            None => match origin {
                None => Ok(()),
                Some(origin) if same_host(origin, headers) => Ok(()),
                Some(_) => Err(CrossSiteRefusal::OtherOrigin),
            },
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the request's `Host`.
fn same_host(origin: &str, headers: &HeaderMap) -> bool {
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        // `null` (a sandboxed frame, a file) or anything else.
        return false;
    };
    headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(authority))
}

impl<S> Layer<S> for CrossSiteGuard {
    type Service = CrossSiteGuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CrossSiteGuardService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service of a [`CrossSiteGuard`].
#[derive(Clone, Debug)]
pub struct CrossSiteGuardService<S> {
    inner: S,
    guard: CrossSiteGuard,
}

impl<S, B> Service<Request<B>> for CrossSiteGuardService<S>
where
    S: Service<Request<B>, Error = Infallible>,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Err(refusal) = self.guard.check(request.method(), request.headers()) {
            tracing::warn!(
                method = %request.method(),
                path = request.uri().path(),
                %refusal,
                "refused a cross-site request"
            );
            return Box::pin(std::future::ready(Ok(refusal.into_response())));
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = future.await;
            Ok(response.into_response())
        })
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn what_browsers_send_decides() {
        let guard = CrossSiteGuard::new();
        let post = Method::POST;
        let host = ("host", "app.example.com");
        for (sent, expected) in [
            (
                vec![
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "https://app.example.com"),
                    host,
                ],
                Ok(()),
            ),
            (vec![("sec-fetch-site", "none"), host], Ok(())),
            (
                vec![
                    ("sec-fetch-site", "same-site"),
                    ("origin", "https://evil.example.com"),
                    host,
                ],
                Err(CrossSiteRefusal::SameSite),
            ),
            (
                vec![
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://evil.test"),
                    host,
                ],
                Err(CrossSiteRefusal::CrossSite),
            ),
            // A browser without Fetch Metadata: the Origin decides.
            (vec![("origin", "https://app.example.com"), host], Ok(())),
            (
                vec![("origin", "https://evil.test"), host],
                Err(CrossSiteRefusal::OtherOrigin),
            ),
            (
                vec![("origin", "null"), host],
                Err(CrossSiteRefusal::OtherOrigin),
            ),
            // Not a browser: no ambient credentials to abuse.
            (vec![host], Ok(())),
        ] {
            assert_eq!(guard.check(&post, &headers(&sent)), expected, "{sent:?}");
        }
    }

    #[test]
    fn safe_methods_and_allowed_origins_pass() {
        let cross = headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://admin.example.com"),
        ]);
        let guard = CrossSiteGuard::new();
        assert_eq!(guard.check(&Method::GET, &cross), Ok(()));
        assert_eq!(guard.check(&Method::HEAD, &cross), Ok(()));
        assert_eq!(
            guard.check(&Method::DELETE, &cross),
            Err(CrossSiteRefusal::CrossSite)
        );
        let trusting = guard.allow_origin("https://admin.example.com/");
        assert_eq!(trusting.check(&Method::POST, &cross), Ok(()));
    }
}
