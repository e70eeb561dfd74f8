//! Errors: what a store can fail with, and how a request sees it.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::data::{DecodeError, EncodeError};

/// A store could not do what a request needed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database returned an error or could not be reached.
    #[cfg(feature = "_sql")]
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row does not decode into the session struct (the table does
    /// not match the struct; run `migrate()` to see how).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A `#[session(json)]` field could not be serialized.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Other requests kept writing the same session; the read-modify-write
    /// was replayed this many times without getting its write in.
    #[error("gave up after {attempts} conflicting writes to the same session")]
    Conflict {
        /// How many compare-and-swap attempts were made.
        attempts: u32,
    },
    /// The table does not match the struct in a way `migrate()` cannot fix.
    #[error("table `{table}` does not match the session struct: {problem}")]
    Schema {
        /// The table.
        table: String,
        /// What differs, naming column, expected and found type.
        problem: String,
    },
}

/// Why a request could not use its session; answered as a response.
///
/// Every variant is a server-side problem (500): client input never causes
/// one (a bad cookie gets a fresh session instead). The response body says
/// what went wrong in general terms; the details go to a `tracing` event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The handler asked for `Session<T>` but no `SessionLayer` for `T` wraps the route.
    #[error(
        "no SessionLayer for `{struct_name}` wraps this route: add `.layer(SessionLayer::new(store, config))` to the router"
    )]
    MissingLayer {
        /// The session struct's name.
        struct_name: &'static str,
    },
    /// The store failed while loading or saving.
    #[error("session store error: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let body = match &self {
            SessionError::MissingLayer { .. } => self.to_string(),
            SessionError::Store(_) => "session storage is unavailable".to_owned(),
        };
        (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
    }
}
