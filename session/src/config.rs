//! How sessions and their cookie behave.

use std::{borrow::Cow, time::Duration};

pub use cookie::{Key, SameSite};

/// Where sessions live before the app (or the visitor) agrees to store them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionMode {
    /// Every session that holds data is written to the store (default).
    #[default]
    Persistent,
    /// A new session lives in this process's memory only (with its cookie)
    /// until [`Session::set_store(true)`](crate::Session::set_store), e.g.
    /// once the visitor consented; then it is written to the store. Memory
    /// sessions are lost on restart and not shared between instances.
    Storable,
}

/// How the session cookie is protected.
#[derive(Clone, Default)]
pub(crate) enum CookieProtection {
    /// The token as is: 256 random bits are unguessable on their own.
    #[default]
    Plain,
    /// HMAC-signed: the first key signs, every key verifies.
    Signed(Vec<Key>),
    /// Encrypted and authenticated (AES-256-GCM): the first key seals,
    /// every key opens.
    Private(Vec<Key>),
}

/// Configuration of a [`SessionLayer`](crate::SessionLayer), builder style.
///
/// The defaults follow OWASP's session management cheat sheet: the cookie is
/// `HttpOnly`, `SameSite=Lax` and `Secure`; a session expires after 24 hours
/// without use; expired sessions are purged hourly.
///
/// ```
/// use std::time::Duration;
/// use axum_typed_session::{Key, SameSite, SessionConfig};
///
/// let config = SessionConfig::default()
///     .with_cookie_name("cart")
///     .with_same_site(SameSite::Strict)
///     .with_idle_timeout(Duration::from_secs(30 * 60))
///     .with_absolute_lifetime(Duration::from_secs(12 * 60 * 60))
///     .with_private_key(Key::generate());
/// assert_eq!(config.cookie_name(), "cart");
/// ```
#[derive(Clone)]
pub struct SessionConfig {
    pub(crate) cookie_name: Cow<'static, str>,
    pub(crate) cookie_path: Cow<'static, str>,
    pub(crate) cookie_domain: Option<Cow<'static, str>>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) host_prefix: bool,
    pub(crate) persistent_cookie: bool,
    pub(crate) protection: CookieProtection,
    pub(crate) token_header: Option<http::HeaderName>,
    pub(crate) idle_timeout: Duration,
    pub(crate) touch_fraction: f64,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) remember_lifetime: Duration,
    pub(crate) purge_interval: Option<Duration>,
    pub(crate) mode: SessionMode,
    pub(crate) consent_required: bool,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protection = match &self.protection {
            CookieProtection::Plain => "plain",
            CookieProtection::Signed(_) => "signed",
            CookieProtection::Private(_) => "private",
        };
        // Keys are never printed.
        f.debug_struct("SessionConfig")
            .field("cookie_name", &self.cookie_name)
            .field("cookie_path", &self.cookie_path)
            .field("cookie_domain", &self.cookie_domain)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("host_prefix", &self.host_prefix)
            .field("persistent_cookie", &self.persistent_cookie)
            .field("protection", &protection)
            .field("token_header", &self.token_header)
            .field("idle_timeout", &self.idle_timeout)
            .field("touch_fraction", &self.touch_fraction)
            .field("absolute_lifetime", &self.absolute_lifetime)
            .field("remember_lifetime", &self.remember_lifetime)
            .field("purge_interval", &self.purge_interval)
            .field("mode", &self.mode)
            .field("consent_required", &self.consent_required)
            .finish()
    }
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
            host_prefix: false,
            persistent_cookie: true,
            protection: CookieProtection::Plain,
            token_header: None,
            idle_timeout: Duration::from_secs(24 * 60 * 60),
            touch_fraction: 0.1,
            absolute_lifetime: None,
            remember_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
            purge_interval: Some(Duration::from_secs(60 * 60)),
            mode: SessionMode::Persistent,
            consent_required: false,
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
    /// Turn it off only for plain-HTTP development; `SameSite=None` and the
    /// `__Host-` prefix keep it on regardless.
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

    /// Names the cookie `__Host-<name>`: browsers then accept it only if it is
    /// `Secure`, has `Path=/` and no `Domain`, which this enforces.
    pub fn with_host_prefix(mut self, host_prefix: bool) -> Self {
        self.host_prefix = host_prefix;
        self
    }

    /// Whether the cookie carries `Max-Age` (default `true`): it then lives
    /// exactly as long as the session on the server. `false` makes it a
    /// browser-session cookie, dropped when the browser closes, except for
    /// remembered sessions ([`Session::set_remember`](crate::Session::set_remember)).
    pub fn with_persistent_cookie(mut self, persistent: bool) -> Self {
        self.persistent_cookie = persistent;
        self
    }

    /// Signs the cookie with `key` (HMAC-SHA256): a tampered cookie is a
    /// fresh session. Add older keys with [`with_previous_keys`](Self::with_previous_keys).
    pub fn with_signed_key(mut self, key: Key) -> Self {
        self.protection = CookieProtection::Signed(vec![key]);
        self
    }

    /// Encrypts the cookie with `key` (AES-256-GCM, authenticated, bound to
    /// the cookie name): the token is neither readable nor forgeable.
    pub fn with_private_key(mut self, key: Key) -> Self {
        self.protection = CookieProtection::Private(vec![key]);
        self
    }

    /// Keys that still verify (or decrypt) cookies during a rotation; the key
    /// given to `with_signed_key`/`with_private_key` signs new ones. A cookie
    /// under an old key is re-issued under the current one on its next write.
    /// Has no effect on plain cookies.
    pub fn with_previous_keys(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        match &mut self.protection {
            CookieProtection::Plain => {}
            CookieProtection::Signed(current) | CookieProtection::Private(current) => {
                current.truncate(1);
                current.extend(keys);
            }
        }
        self
    }

    /// Also reads the token from this request header and writes it to the
    /// same response header when it is issued or changes, for API clients
    /// that do not keep cookies. The cookie keeps working alongside.
    pub fn with_token_header(mut self, name: http::HeaderName) -> Self {
        self.token_header = Some(name);
        self
    }

    /// How long a session lives without being used (default 24 hours).
    /// Use extends it, in steps: the stored expiry (and the cookie's
    /// `Max-Age`) moves only once a [fraction](Self::with_touch_fraction) of
    /// it has passed, so a session may end up to that fraction early.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The part of the lifetime after which a request extends the expiry
    /// (default `0.1`). With 24 hours, a reading visitor costs at most one
    /// write every 2.4 hours, and a writing one moves the `expires_at` index
    /// entry and gets a new cookie at most that often; other writes leave
    /// both alone. `0.0` extends on every request. Clamped to `0.0..=1.0`.
    pub fn with_touch_fraction(mut self, fraction: f64) -> Self {
        self.touch_fraction = if fraction.is_nan() {
            0.1
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The longest a session can live, counted from its creation and never
    /// extended by use (default none). Re-authenticate after it.
    pub fn with_absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// How long an unused remembered session lives (default 30 days), see
    /// [`Session::set_remember`](crate::Session::set_remember).
    pub fn with_remember_lifetime(mut self, lifetime: Duration) -> Self {
        self.remember_lifetime = lifetime;
        self
    }

    /// How often expired sessions are deleted in the background (default
    /// hourly); `None` turns the purge off.
    pub fn with_purge_interval(mut self, interval: Option<Duration>) -> Self {
        self.purge_interval = interval;
        self
    }

    /// Where new sessions live before they are marked storable (default
    /// [`SessionMode::Persistent`]).
    pub fn with_mode(mut self, mode: SessionMode) -> Self {
        self.mode = mode;
        self
    }

    /// No cookie and nothing kept until the app calls
    /// [`Session::set_store(true)`](crate::Session::set_store) — e.g. when
    /// the visitor accepts cookies. Until then each request starts empty.
    pub fn with_consent_required(mut self, required: bool) -> Self {
        self.consent_required = required;
        self
    }

    /// The cookie's name as sent, with the `__Host-` prefix if configured.
    pub fn cookie_name(&self) -> Cow<'_, str> {
        if self.host_prefix {
            Cow::Owned(format!("__Host-{}", self.cookie_name))
        } else {
            Cow::Borrowed(&self.cookie_name)
        }
    }

    /// How long a session lives without being used.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}
