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
    /// `with_previous_keys` was given keys while the cookie is plain.
    pub(crate) previous_keys_without_key: bool,
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
            previous_keys_without_key: false,
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
    /// Browsers (Chromium, Firefox) and curl treat `http://localhost` as a
    /// secure context and send `Secure` cookies there, so development on
    /// localhost needs no change. `SameSite=None` and the `__Host-` prefix
    /// need it: the layer refuses `false` with them.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Whether the cookie is `HttpOnly`, hidden from scripts (default `true`).
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The cookie's `SameSite` (default `Lax`). `None` needs `Secure`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Names the cookie `__Host-<name>`: browsers then accept it only if it is
    /// `Secure`, has `Path=/` and no `Domain`; the layer refuses a
    /// configuration that asks for anything else ([`ConfigError`]).
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
    /// Needs [`with_signed_key`](Self::with_signed_key) or
    /// [`with_private_key`](Self::with_private_key) first: on plain cookies
    /// the layer refuses it ([`ConfigError::PreviousKeysWithoutKey`]).
    ///
    /// ```
    /// use axum_typed_session::{Key, SessionConfig};
    ///
    /// # let (new_key, old_key) = (Key::generate(), Key::generate());
    /// let config = SessionConfig::default()
    ///     .with_private_key(new_key)
    ///     .with_previous_keys([old_key]);
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn with_previous_keys(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        match &mut self.protection {
            CookieProtection::Plain => {
                self.previous_keys_without_key = keys.into_iter().next().is_some();
            }
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
    ///
    /// ```
    /// use axum_typed_session::SessionConfig;
    /// use http::HeaderName;
    ///
    /// let config = SessionConfig::default()
    ///     .with_token_header(HeaderName::from_static("x-session-token"));
    /// # let _ = config;
    /// ```
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
    /// both alone. `1.0` extends only once the whole lifetime has passed
    /// since the last extension (so never, for an idle timeout); a tiny value
    /// extends on nearly every request. Outside `(0, 1]` the layer refuses it
    /// ([`ConfigError::TouchFraction`]).
    pub fn with_touch_fraction(mut self, fraction: f64) -> Self {
        self.touch_fraction = fraction;
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
    ///
    /// ```
    /// use axum_typed_session::{SessionConfig, SessionMode};
    ///
    /// // Kept in memory until `session.set_store(true)`, e.g. after consent.
    /// let config = SessionConfig::default().with_mode(SessionMode::Storable);
    /// # let _ = config;
    /// ```
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

/// A [`SessionConfig`] that contradicts itself or can only be a mistake,
/// refused when the layer is built
/// ([`SessionLayer::try_new`](crate::SessionLayer::try_new)). Each names the
/// setting and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `with_host_prefix(true)` with `with_cookie_domain(..)`.
    #[error(
        "with_host_prefix(true) forbids a Domain, but with_cookie_domain({domain:?}) sets one: browsers drop a __Host- cookie with a Domain; remove one of the two"
    )]
    HostPrefixWithDomain {
        /// The domain given.
        domain: String,
    },
    /// `with_host_prefix(true)` with a path other than `/`.
    #[error(
        "with_host_prefix(true) needs Path=/, but with_cookie_path({path:?}) sets another: browsers drop such a __Host- cookie; remove one of the two"
    )]
    HostPrefixWithPath {
        /// The path given.
        path: String,
    },
    /// `Secure` turned off where browsers require it.
    #[error(
        "with_secure(false) with {requires}: browsers drop such a cookie unless it is Secure; keep Secure on (http://localhost counts as secure in browsers)"
    )]
    InsecureCookie {
        /// What requires `Secure`: the `__Host-` prefix or `SameSite=None`.
        requires: &'static str,
    },
    /// A touch fraction outside `(0, 1]`.
    #[error(
        "with_touch_fraction({0}) is outside (0, 1]: it is the part of the lifetime after which a request extends the expiry, e.g. 0.1"
    )]
    TouchFraction(f64),
    /// A lifetime or interval of zero.
    #[error(
        "{setting}(0) ends every session (or purges without pause) at once: give it a positive duration{fix}"
    )]
    Zero {
        /// The setting.
        setting: &'static str,
        /// How to say "none" instead, where that exists.
        fix: &'static str,
    },
    /// A cookie name that is not an HTTP token.
    #[error(
        "with_cookie_name({0:?}) is not a valid cookie name: use letters, digits and !#$%&'*+-.^_`|~, nothing else"
    )]
    CookieName(String),
    /// A cookie path that is not a path a browser keeps.
    #[error("with_cookie_path({0:?}) must start with '/' and hold no ';' or control characters")]
    CookiePath(String),
    /// A cookie domain that cannot be sent.
    #[error(
        "with_cookie_domain({0:?}) must be a host name: no ';', spaces or control characters, not empty"
    )]
    CookieDomain(String),
    /// A token header that is a header browsers and proxies own.
    #[error(
        "with_token_header({0}) names a header HTTP already uses; pick your own, e.g. x-session-token"
    )]
    TokenHeader(String),
    /// `with_previous_keys` on plain cookies.
    #[error(
        "with_previous_keys(..) without with_signed_key or with_private_key: previous keys only verify signed or private cookies; set the current key first"
    )]
    PreviousKeysWithoutKey,
}

/// Whether `name` is an HTTP token (RFC 9110 section 5.6.2), what a cookie
/// name must be (RFC 6265 section 4.1.1).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Characters that end or break a cookie attribute.
fn breaks_attribute(value: &str) -> bool {
    value.chars().any(|c| c == ';' || c.is_control())
}

impl SessionConfig {
    /// Checks the configuration once; the layer calls it when it is built.
    ///
    /// ```
    /// use axum_typed_session::{ConfigError, SessionConfig};
    ///
    /// let config = SessionConfig::default()
    ///     .with_host_prefix(true)
    ///     .with_cookie_domain("example.com");
    /// assert!(matches!(config.validate(), Err(ConfigError::HostPrefixWithDomain { .. })));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_cookie()?;
        self.validate_lifetimes()?;
        if self.previous_keys_without_key {
            return Err(ConfigError::PreviousKeysWithoutKey);
        }
        if let Some(header) = &self.token_header
            && [
                http::header::COOKIE,
                http::header::SET_COOKIE,
                http::header::AUTHORIZATION,
            ]
            .contains(header)
        {
            return Err(ConfigError::TokenHeader(header.to_string()));
        }
        Ok(())
    }

    fn validate_cookie(&self) -> Result<(), ConfigError> {
        if !is_token(&self.cookie_name) {
            return Err(ConfigError::CookieName(self.cookie_name.to_string()));
        }
        if !self.cookie_path.starts_with('/') || breaks_attribute(&self.cookie_path) {
            return Err(ConfigError::CookiePath(self.cookie_path.to_string()));
        }
        if let Some(domain) = &self.cookie_domain
            && (domain.is_empty() || domain.contains(' ') || breaks_attribute(domain))
        {
            return Err(ConfigError::CookieDomain(domain.to_string()));
        }
        if self.host_prefix {
            if let Some(domain) = &self.cookie_domain {
                return Err(ConfigError::HostPrefixWithDomain {
                    domain: domain.to_string(),
                });
            }
            if self.cookie_path != "/" {
                return Err(ConfigError::HostPrefixWithPath {
                    path: self.cookie_path.to_string(),
                });
            }
            if !self.secure {
                return Err(ConfigError::InsecureCookie {
                    requires: "with_host_prefix(true)",
                });
            }
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::InsecureCookie {
                requires: "with_same_site(SameSite::None)",
            });
        }
        Ok(())
    }

    fn validate_lifetimes(&self) -> Result<(), ConfigError> {
        if !(self.touch_fraction > 0.0 && self.touch_fraction <= 1.0) {
            return Err(ConfigError::TouchFraction(self.touch_fraction));
        }
        let zero = |setting, fix| Err(ConfigError::Zero { setting, fix });
        if self.idle_timeout.is_zero() {
            return zero("with_idle_timeout", "");
        }
        if self.remember_lifetime.is_zero() {
            return zero("with_remember_lifetime", "");
        }
        if self
            .absolute_lifetime
            .is_some_and(|lifetime| lifetime.is_zero())
        {
            return zero("with_absolute_lifetime", "");
        }
        if self
            .purge_interval
            .is_some_and(|interval| interval.is_zero())
        {
            return zero("with_purge_interval", ", or None to turn the purge off");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(SessionConfig::default().validate(), Ok(()));
        assert_eq!(
            SessionConfig::default()
                .with_host_prefix(true)
                .with_same_site(SameSite::None)
                .with_private_key(Key::generate())
                .with_previous_keys([Key::generate()])
                .with_touch_fraction(1.0)
                .validate(),
            Ok(())
        );
    }

    #[test]
    fn contradictions_and_mistakes_are_named() {
        let cases: Vec<(SessionConfig, &str)> = vec![
            (
                SessionConfig::default()
                    .with_host_prefix(true)
                    .with_cookie_domain("example.com"),
                "with_cookie_domain(\"example.com\")",
            ),
            (
                SessionConfig::default()
                    .with_host_prefix(true)
                    .with_cookie_path("/app"),
                "with_cookie_path(\"/app\")",
            ),
            (
                SessionConfig::default()
                    .with_host_prefix(true)
                    .with_secure(false),
                "with_secure(false) with with_host_prefix(true)",
            ),
            (
                SessionConfig::default()
                    .with_same_site(SameSite::None)
                    .with_secure(false),
                "with_same_site(SameSite::None)",
            ),
            (
                SessionConfig::default().with_touch_fraction(0.0),
                "with_touch_fraction(0)",
            ),
            (
                SessionConfig::default().with_touch_fraction(1.5),
                "with_touch_fraction(1.5)",
            ),
            (
                SessionConfig::default().with_touch_fraction(f64::NAN),
                "with_touch_fraction(NaN)",
            ),
            (
                SessionConfig::default().with_idle_timeout(Duration::ZERO),
                "with_idle_timeout(0)",
            ),
            (
                SessionConfig::default().with_remember_lifetime(Duration::ZERO),
                "with_remember_lifetime(0)",
            ),
            (
                SessionConfig::default().with_absolute_lifetime(Duration::ZERO),
                "with_absolute_lifetime(0)",
            ),
            (
                SessionConfig::default().with_purge_interval(Some(Duration::ZERO)),
                "None to turn the purge off",
            ),
            (
                SessionConfig::default().with_cookie_name("my session"),
                "with_cookie_name(\"my session\")",
            ),
            (
                SessionConfig::default().with_cookie_name(""),
                "not a valid cookie name",
            ),
            (
                SessionConfig::default().with_cookie_name("a;b"),
                "not a valid cookie name",
            ),
            (
                SessionConfig::default().with_cookie_path("app"),
                "must start with '/'",
            ),
            (
                SessionConfig::default().with_cookie_path("/a;b"),
                "must start with '/'",
            ),
            (
                SessionConfig::default().with_cookie_domain("a b"),
                "must be a host name",
            ),
            (
                SessionConfig::default().with_token_header(http::header::COOKIE),
                "with_token_header(cookie)",
            ),
            (
                SessionConfig::default().with_previous_keys([Key::generate()]),
                "set the current key first",
            ),
        ];
        for (config, expected) in cases {
            let error = config.validate().expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{error:?} should name {expected:?}"
            );
        }
    }
}
