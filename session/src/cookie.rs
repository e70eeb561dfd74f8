//! Reading the session token from a request and writing it to a response:
//! cookie name and flags, signing or encryption, the optional token header.

// `SessionCookie` is public only to the benches (through `__internals`).
#![cfg_attr(not(feature = "_internals"), allow(unreachable_pub))]

use std::time::Duration;

use cookie::{Cookie, CookieJar, SameSite, time};
use http::{HeaderMap, HeaderName, HeaderValue, header::COOKIE, header::SET_COOKIE};

use crate::{
    config::{CookieProtection, SessionConfig},
    token::SessionToken,
};

/// The session cookie of one layer, as configured (public only for the benches).
#[derive(Clone, Debug)]
pub struct SessionCookie {
    config: SessionConfig,
    /// With the `__Host-` prefix if configured.
    name: String,
}

/// The headers a response gets for its session.
pub(crate) type SessionHeaders = Vec<(HeaderName, HeaderValue)>;

/// A token a request presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    /// The token.
    pub token: SessionToken,
    /// Opened with a previous key of a rotation: the client gets the token
    /// again under the current key on the next write.
    pub reseal: bool,
}

impl SessionCookie {
    /// The cookie `config` describes.
    pub fn new(config: SessionConfig) -> Self {
        let name = config.cookie_name().into_owned();
        Self { config, name }
    }

    pub(crate) fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The token of the request: from the token header if configured and
    /// present, else the first of our cookies that decodes. Anything else
    /// (absent, not UTF-8, malformed, forged, under a retired key) is no
    /// token: the request gets a fresh session.
    pub fn read(&self, headers: &HeaderMap) -> Option<Presented> {
        if let Some(header) = &self.config.token_header
            && let Some(token) = headers
                .get_all(header)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(|value| self.decode(value.trim()))
        {
            return Some(token);
        }
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|header| header.to_str().ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key.trim() == self.name).then(|| value.trim())
            })
            .find_map(|value| self.decode(value))
    }

    fn decode(&self, value: &str) -> Option<Presented> {
        // Bound the work an attacker can cause: a token cookie is short.
        if value.len() > 512 {
            return None;
        }
        // The cookie and the position of the key that opened it.
        let opened = |keys: &[cookie::Key],
                      open: fn(
            &CookieJar,
            &cookie::Key,
            Cookie<'static>,
        ) -> Option<Cookie<'static>>| {
            let jar = CookieJar::new();
            keys.iter().enumerate().find_map(|(position, key)| {
                open(&jar, key, Cookie::new(self.name.clone(), value.to_owned()))
                    .map(|cookie| (cookie, position))
            })
        };
        let (plain, key) = match &self.config.protection {
            CookieProtection::Plain => {
                return SessionToken::parse(value).map(|token| Presented {
                    token,
                    reseal: false,
                });
            }
            CookieProtection::Signed(keys) => {
                opened(keys, |jar, key, cookie| jar.signed(key).verify(cookie))?
            }
            CookieProtection::Private(keys) => {
                opened(keys, |jar, key, cookie| jar.private(key).decrypt(cookie))?
            }
        };
        SessionToken::parse(plain.value()).map(|token| Presented {
            token,
            reseal: key > 0,
        })
    }

    fn encode(&self, token: &SessionToken) -> String {
        let cookie = Cookie::new(self.name.clone(), token.encode());
        let mut jar = CookieJar::new();
        match &self.config.protection {
            CookieProtection::Plain => return token.encode(),
            CookieProtection::Signed(keys) => jar.signed_mut(&keys[0]).add(cookie),
            CookieProtection::Private(keys) => jar.private_mut(&keys[0]).add(cookie),
        }
        jar.get(&self.name)
            .map(|cookie| cookie.value().to_owned())
            .unwrap_or_default()
    }

    fn build(&self, value: String) -> Cookie<'static> {
        let config = &self.config;
        let mut cookie = Cookie::build((self.name.clone(), value))
            .path(if config.host_prefix {
                "/".into()
            } else {
                config.cookie_path.clone()
            })
            .http_only(config.http_only)
            .same_site(config.same_site)
            // Browsers drop SameSite=None and __Host- cookies that are not Secure.
            .secure(config.secure || config.same_site == SameSite::None || config.host_prefix)
            .build();
        if let Some(domain) = &config.cookie_domain
            && !config.host_prefix
        {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    /// The headers that give the client its token. `max_age` is the time
    /// left until the session expires on the server, `None` for a
    /// browser-session cookie.
    pub fn set(&self, token: &SessionToken, max_age: Option<Duration>) -> SessionHeaders {
        let value = self.encode(token);
        let mut headers = Vec::with_capacity(2);
        if let Some(header) = &self.config.token_header
            && let Ok(header_value) = HeaderValue::try_from(value.as_str())
        {
            headers.push((header.clone(), header_value));
        }
        let mut cookie = self.build(value);
        if let Some(max_age) = max_age {
            cookie.set_max_age(time::Duration::try_from(max_age).unwrap_or(time::Duration::MAX));
        }
        if let Ok(value) = HeaderValue::try_from(cookie.to_string()) {
            headers.push((SET_COOKIE, value));
        }
        headers
    }

    /// The header that removes the cookie (same name, path, domain and flags).
    pub(crate) fn remove(&self) -> SessionHeaders {
        let mut cookie = self.build(String::new());
        cookie.make_removal();
        HeaderValue::try_from(cookie.to_string())
            .map(|value| vec![(SET_COOKIE, value)])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Key;

    fn headers(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::try_from(cookie).unwrap());
        headers
    }

    fn cookie_value(set: &SessionHeaders) -> String {
        let (_, value) = set.iter().find(|(name, _)| name == SET_COOKIE).unwrap();
        let text = value.to_str().unwrap();
        text.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    }

    #[test]
    fn signed_and_private_cookies_round_trip_and_reject_tampering() {
        for config in [
            SessionConfig::default().with_signed_key(Key::generate()),
            SessionConfig::default().with_private_key(Key::generate()),
        ] {
            let cookie = SessionCookie::new(config);
            let token = SessionToken::generate();
            let value = cookie_value(&cookie.set(&token, None));
            assert_ne!(value, token.encode(), "the token is not sent as is");
            assert_eq!(
                cookie.read(&headers(&format!("session={value}"))),
                Some(Presented {
                    token: token.clone(),
                    reseal: false
                })
            );
            let mut tampered = value.clone().into_bytes();
            tampered[3] ^= 1;
            let tampered = String::from_utf8_lossy(&tampered).into_owned();
            assert_eq!(cookie.read(&headers(&format!("session={tampered}"))), None);
            assert_eq!(
                cookie.read(&headers(&format!("session={}", token.encode()))),
                None,
                "unsigned"
            );
        }
    }

    #[test]
    fn previous_keys_verify_and_the_first_signs() {
        let (old, new) = (Key::generate(), Key::generate());
        let before = SessionCookie::new(SessionConfig::default().with_private_key(old.clone()));
        let token = SessionToken::generate();
        let value = cookie_value(&before.set(&token, None));
        let rotated = SessionCookie::new(
            SessionConfig::default()
                .with_private_key(new)
                .with_previous_keys([old]),
        );
        assert_eq!(
            rotated.read(&headers(&format!("session={value}"))),
            Some(Presented {
                token: token.clone(),
                reseal: true
            }),
            "opened with the previous key, to be resealed"
        );
        let resealed = cookie_value(&rotated.set(&token, None));
        assert_eq!(
            rotated.read(&headers(&format!("session={resealed}"))),
            Some(Presented {
                token: token.clone(),
                reseal: false
            })
        );
        assert_eq!(
            before.read(&headers(&format!("session={resealed}"))),
            None,
            "sealed with the new key"
        );
    }

    #[test]
    fn host_prefix_forces_secure_root_path_and_no_domain() {
        let config = SessionConfig::default()
            .with_host_prefix(true)
            .with_secure(false)
            .with_cookie_path("/app")
            .with_cookie_domain("example.com");
        let cookie = SessionCookie::new(config);
        let set = cookie.set(&SessionToken::generate(), Some(Duration::from_secs(60)));
        let text = set[0].1.to_str().unwrap();
        assert!(text.starts_with("__Host-session="), "{text}");
        assert!(
            text.contains("Secure") && text.contains("Path=/;") && !text.contains("Domain"),
            "{text}"
        );
        assert!(text.contains("Max-Age=60"), "{text}");
    }
}
