//! Session tokens (what the client holds) and session ids (what the store keys on).

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Random bytes in a token: 256 bits, twice the OWASP minimum of 128.
const TOKEN_BYTES: usize = 32;
/// Length of a token as base64url without padding.
const TOKEN_CHARS: usize = 43;

/// The secret a client presents: 256 random bits from a CSPRNG.
///
/// It is sent in the cookie and never stored or logged; the store keys the
/// session by its [`SessionId`] (SHA-256 of the token), so a leaked database
/// does not hand out live sessions. `Debug` prints the id, not the token.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; TOKEN_BYTES]);

impl SessionToken {
    /// A new token from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses the textual form; anything that is not exactly a token is `None`.
    ///
    /// ```
    /// use axum_typed_session::SessionToken;
    ///
    /// let token = SessionToken::generate();
    /// assert_eq!(SessionToken::parse(&token.encode()), Some(token));
    /// assert_eq!(SessionToken::parse("not a token"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(TOKEN_BYTES) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// The textual form: 43 characters of base64url.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The id the store keys this session by.
    pub fn id(&self) -> SessionId {
        SessionId(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionToken").field(&self.id()).finish()
    }
}

/// SHA-256 of a [`SessionToken`]: the primary key of a session row.
///
/// Safe to log and to show: it cannot be turned back into the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// The raw digest, as stored in the `id` column.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds an id from the `id` column.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 64 lowercase hex digits [`Display`](fmt::Display) writes, without
    /// a formatter: ids are written into every key and script call.
    pub(crate) fn hex(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 64];
        for (byte, pair) in self.0.iter().zip(out.chunks_exact_mut(2)) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        out
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

/// The id as [`Display`](fmt::Display) writes it (64 hex digits) did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 64 hexadecimal digits")]
pub struct ParseSessionIdError;

impl std::str::FromStr for SessionId {
    type Err = ParseSessionIdError;

    /// Parses the 64 hex digits [`Display`](fmt::Display) writes: what a
    /// "revoke this device" form posts back.
    ///
    /// ```
    /// use axum_typed_session::{SessionId, SessionToken};
    ///
    /// let id = SessionToken::generate().id();
    /// assert_eq!(id.to_string().parse::<SessionId>(), Ok(id));
    /// assert!("not an id".parse::<SessionId>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return Err(ParseSessionIdError);
        }
        let digit = |byte: u8| (byte as char).to_digit(16).ok_or(ParseSessionIdError);
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_round_trip() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.encode().len(), TOKEN_CHARS);
        assert_eq!(SessionToken::parse(&a.encode()), Some(a.clone()));
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = SessionToken::generate().encode();
        for bad in [
            String::new(),
            good[..42].to_string(),
            format!("{good}A"),
            "!".repeat(43),
            "é".repeat(22),
            good.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
        ] {
            assert_eq!(SessionToken::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = SessionToken::generate();
        assert!(!format!("{token:?}").contains(&token.encode()));
    }
}
