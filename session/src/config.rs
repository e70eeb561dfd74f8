//! How sessions and their cookie behave.

use std::{borrow::Cow, time::Duration};

pub use cookie::SameSite;

/// Configuration of a [`SessionLayer`](crate::SessionLayer), builder style.
///
/// The defaults follow OWASP's session management cheat sheet: the cookie is
/// `HttpOnly`, `SameSite=Lax` and `Secure`; a session expires after 24 hours
/// without use.
///
/// ```
/// use std::time::Duration;
/// use axum_typed_session::{SameSite, SessionConfig};
///
/// let config = SessionConfig::default()
///     .with_cookie_name("cart")
///     .with_same_site(SameSite::Strict)
///     .with_idle_timeout(Duration::from_secs(30 * 60));
/// assert_eq!(config.cookie_name(), "cart");
/// ```
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub(crate) cookie_name: Cow<'static, str>,
    pub(crate) cookie_path: Cow<'static, str>,
    pub(crate) cookie_domain: Option<Cow<'static, str>>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) idle_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: Cow::Borrowed("session"),
            cookie_path: Cow::Borrowed("/"),
            cookie_domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            idle_timeout: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl SessionConfig {
    /// The cookie's name (default `session`). Give each session struct of an
    /// app its own name.
    pub fn with_cookie_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn with_cookie_path(mut self, path: impl Into<Cow<'static, str>>) -> Self {
        self.cookie_path = path.into();
        self
    }

    /// The cookie's `Domain` (default none: the cookie goes to this host only).
    pub fn with_cookie_domain(mut self, domain: impl Into<Cow<'static, str>>) -> Self {
        self.cookie_domain = Some(domain.into());
        self
    }

    /// Whether the cookie is `Secure`, sent over HTTPS only (default `true`).
    /// Turn it off only for plain-HTTP development.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Whether the cookie is `HttpOnly`, hidden from scripts (default `true`).
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The cookie's `SameSite` (default `Lax`). `None` makes the cookie `Secure`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// How long a session lives without being used (default 24 hours).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// How long a session lives without being used.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}
