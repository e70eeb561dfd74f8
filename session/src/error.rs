//! Errors: what a store can fail with, and how a request sees it.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::data::{DecodeError, EncodeError};

/// A store could not do what a request needed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database returned an error or could not be reached. Shared: when
    /// a statement served several requests (group commit, grouped loads),
    /// each of them gets this same error, its source kept.
    #[cfg(feature = "_sql")]
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// Redis answered with an error (not an outage: those are
    /// [`Unavailable`](Self::Unavailable)).
    #[cfg(feature = "redis")]
    #[error("Redis error: {0}")]
    Redis(#[source] Arc<redis::RedisError>),
    /// A stored row does not decode into the session struct (the table does
    /// not match the struct; run `migrate()` to see how).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A `#[session(json)]` field could not be serialized.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The database cannot be reached (or is known to be down): the request
    /// failed at once instead of waiting. Answered as a 503 with
    /// `Retry-After`; nothing was written.
    #[error("the session database is unavailable; retry in {} s{}", retry_after.as_secs().max(1), source.as_ref().map(|source| format!(": {source}")).unwrap_or_default())]
    Unavailable {
        /// When to try again.
        retry_after: std::time::Duration,
        /// What failed, when this request saw it fail (`None`: the store
        /// already knew the database was down and did not try).
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A field's value is one the database cannot store (a date outside its
    /// range, NaN on MySQL, NUL in PostgreSQL text): refused before it is
    /// sent, so nothing is stored in its place.
    #[error("field `{field}` of `{struct_name}` cannot be stored: {problem}")]
    Unstorable {
        /// The struct.
        struct_name: &'static str,
        /// The field.
        field: &'static str,
        /// Why, and the range the database has.
        problem: String,
    },
    /// The store does not answer this kind of query (a custom store that
    /// does not implement it).
    #[error("this session store does not support {what}")]
    Unsupported {
        /// What was asked.
        what: &'static str,
    },
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

#[cfg(feature = "_sql")]
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(Arc::new(error))
    }
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
    /// An awaited change could not be written because the session is gone:
    /// this request called [`destroy`](crate::Session::destroy), or another
    /// request destroyed or renewed it (or it expired) first. The change was
    /// dropped; the session will not come back.
    #[error(
        "the session is gone (destroyed, renewed elsewhere or expired); the change was dropped"
    )]
    Gone,
}

impl StoreError {
    /// The same error for each request that waited on one shared call (a
    /// grouped statement, a shared sync point): the variant and its source
    /// kept where the source can be shared, else the message.
    pub(crate) fn share(&self) -> StoreError {
        match self {
            #[cfg(feature = "_sql")]
            StoreError::Database(source) => StoreError::Database(source.clone()),
            #[cfg(feature = "redis")]
            StoreError::Redis(source) => StoreError::Redis(source.clone()),
            StoreError::Unavailable {
                retry_after,
                source,
            } => StoreError::Unavailable {
                retry_after: *retry_after,
                source: source.clone(),
            },
            #[cfg(feature = "_sql")]
            other => sqlx::Error::Protocol(other.to_string()).into(),
            #[cfg(not(feature = "_sql"))]
            other => StoreError::Unavailable {
                retry_after: std::time::Duration::from_secs(1),
                source: Some(Arc::new(std::io::Error::other(other.to_string()))),
            },
        }
    }

    /// Whether this is [`StoreError::Unavailable`]: the database is down,
    /// as opposed to a conflict, a decode error or a refused statement.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        if let SessionError::Store(StoreError::Unavailable { retry_after, .. }) = &self {
            let seconds = retry_after.as_secs().max(1).to_string();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::RETRY_AFTER, seconds)],
                "session storage is unavailable; try again shortly",
            )
                .into_response();
        }
        let body = match &self {
            SessionError::MissingLayer { .. } => self.to_string(),
            SessionError::Store(_) => "session storage is unavailable".to_owned(),
            SessionError::Gone => "the session has ended; sign in again".to_owned(),
        };
        (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
    }
}
