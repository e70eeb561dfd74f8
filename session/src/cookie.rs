//! Reading the session token from a request and writing the `Set-Cookie` header.

use cookie::{Cookie, SameSite, time};
use http::{HeaderMap, HeaderValue, header::COOKIE};

use crate::{config::SessionConfig, token::SessionToken};

/// The session cookie of one layer, as configured.
#[derive(Clone, Debug)]
pub(crate) struct SessionCookie {
    config: SessionConfig,
}

impl SessionCookie {
    pub(crate) fn new(config: SessionConfig) -> Self {
        Self { config }
    }

    pub(crate) fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The first well-formed token under our cookie name. Anything else
    /// (absent, not UTF-8, malformed) is no token: the request gets a fresh
    /// session.
    pub(crate) fn read(&self, headers: &HeaderMap) -> Option<SessionToken> {
        let name = self.config.cookie_name.as_ref();
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|header| header.to_str().ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key.trim() == name).then(|| value.trim())
            })
            .find_map(SessionToken::parse)
    }

    fn build(&self, value: String) -> Cookie<'static> {
        let config = &self.config;
        let mut cookie = Cookie::build((config.cookie_name.clone(), value))
            .path(config.cookie_path.clone())
            .http_only(config.http_only)
            .same_site(config.same_site)
            // Browsers drop SameSite=None cookies that are not Secure.
            .secure(config.secure || config.same_site == SameSite::None)
            .build();
        if let Some(domain) = &config.cookie_domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    /// The header that gives the client its token, valid as long as the session.
    pub(crate) fn set(&self, token: &SessionToken) -> Option<HeaderValue> {
        let mut cookie = self.build(token.encode());
        let max_age =
            time::Duration::try_from(self.config.idle_timeout).unwrap_or(time::Duration::MAX);
        cookie.set_max_age(max_age);
        HeaderValue::try_from(cookie.to_string()).ok()
    }

    /// The header that removes the cookie (same name, path, domain and flags).
    pub(crate) fn remove(&self) -> Option<HeaderValue> {
        let mut cookie = self.build(String::new());
        cookie.make_removal();
        HeaderValue::try_from(cookie.to_string()).ok()
    }
}
