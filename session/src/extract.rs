//! The `Session<T>` extractor: what a handler names to use its session.

use std::ops::Deref;

use axum::extract::FromRequestParts;
use chrono::{DateTime, Utc};
use http::request::Parts;

use crate::{
    data::SessionData,
    error::{SessionError, StoreError},
    request::{Handle, Location, PendingSession},
    sync::lock,
    token::SessionId,
};

/// The typed session of a request: an axum extractor.
///
/// `Session<T>` derefs to the accessors `#[derive(Session)]` generated for
/// `T`: a getter `field()`, a setter `set_field(value)` and a read-modify-write
/// `update_field(|value| ...)` per field.
///
/// ```
/// use axum_typed_session::{Session, SessionError};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// async fn greet(visit: Session<Visit>) -> Result<String, SessionError> {
///     // Written before it answers: the count that was stored.
///     let count = visit.update_count(|count| { *count += 1; *count }).await?;
///     Ok(count.to_string())
/// }
/// ```
///
/// Loading happens here, on first extraction: a request whose handler never
/// names `Session<T>` costs no store call. A store error rejects the request
/// with a 500 (see [`SessionError`]); it never yields an empty session.
///
/// Writes happen after the handler, in the [`SessionLayer`](crate::SessionLayer):
/// a new session is one INSERT (only once something was set), a changed one
/// is one UPDATE of the changed columns, an unchanged one is not written.
/// `set_field` is last-writer-wins for its column; `update_field` and
/// [`update`](Self::update) are compare-and-swap: replayed on the fresh row
/// when a concurrent request wrote first, so the closures must be `FnMut`
/// and may run more than once. Awaiting `update_field(..)` writes the
/// request's changes now and answers what the closure returned on the
/// stored attempt ([`Updated`](crate::Updated)): use it when the response
/// shows the changed value.
pub struct Session<T: SessionData> {
    accessors: T::Accessors,
}

impl<T: SessionData> std::fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id is a hash, safe to print; the data is the app's to show.
        f.debug_struct("Session")
            .field("struct", &T::SCHEMA.struct_name)
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl<T: SessionData> Clone for Session<T> {
    fn clone(&self) -> Self {
        Self {
            accessors: T::Accessors::from(handle(self).clone()),
        }
    }
}

impl<T: SessionData> Deref for Session<T> {
    type Target = T::Accessors;

    fn deref(&self) -> &Self::Target {
        &self.accessors
    }
}

/// The handle behind a session; a free function so that no method name of
/// `Session<T>` can hide a generated accessor.
fn handle<T: SessionData>(session: &Session<T>) -> &Handle<T> {
    session.accessors.as_ref()
}

impl<T: SessionData> Session<T> {
    /// A copy of the whole struct.
    ///
    /// ```
    /// # use axum_typed_session::Session;
    /// # #[derive(Session, Default)]
    /// # struct Account {
    /// #     user: Option<String>,
    /// #     visits: i64,
    /// # }
    /// async fn profile(session: Session<Account>) -> String {
    ///     let account = session.get();
    ///     format!("{:?} visited {} times", account.user, account.visits)
    /// }
    /// ```
    pub fn get(&self) -> T {
        handle(self).read(T::duplicate)
    }

    /// Changes several fields at once; only fields whose value changed are
    /// written, as one compare-and-swap (the closure is replayed on conflict).
    ///
    /// Fails only if a `#[session(json)]` field cannot be serialized.
    ///
    /// ```
    /// # use axum_typed_session::Session;
    /// # #[derive(Session, Default)]
    /// # struct Account {
    /// #     user: Option<String>,
    /// #     visits: i64,
    /// # }
    /// async fn visit(session: Session<Account>) -> Result<(), axum_typed_session::SessionError> {
    ///     session.update(|account| {
    ///         account.visits += 1;
    ///         account.user.get_or_insert_with(|| "guest".into());
    ///     })
    /// }
    /// ```
    pub fn update(&self, change: impl FnMut(&mut T) + Send + 'static) -> Result<(), SessionError> {
        handle(self)
            .update_all(change)
            .map_err(|error| SessionError::Store(StoreError::Encode(error)))
    }

    /// The session's id (SHA-256 of its token): safe to log or show, `None`
    /// for a session not yet stored.
    ///
    /// ```
    /// # use axum_typed_session::Session;
    /// # #[derive(Session, Default)]
    /// # struct Account {
    /// #     user: Option<String>,
    /// #     visits: i64,
    /// # }
    /// async fn whoami(session: Session<Account>) -> String {
    ///     match session.id() {
    ///         Some(id) => format!("session {id}, expires {:?}", session.expires_at()),
    ///         None => "no session yet".into(),
    ///     }
    /// }
    /// ```
    pub fn id(&self) -> Option<SessionId> {
        handle(self).meta().map(|meta| meta.id)
    }

    /// When the stored session expires (before this request extends it).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        handle(self).meta().map(|meta| meta.expires_at)
    }

    /// When the session was first stored.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        handle(self).meta().map(|meta| meta.created_at)
    }

    /// Whether the client presented a session that exists (in the store, or
    /// in memory for a session not yet storable).
    pub fn is_stored(&self) -> bool {
        handle(self).meta().is_some()
    }

    /// Gives the session the remember-me lifetime
    /// ([`SessionConfig::with_remember_lifetime`](crate::SessionConfig::with_remember_lifetime),
    /// default 30 days) instead of the idle timeout, and a persistent cookie;
    /// `false` goes back. Kept with the session.
    ///
    /// ```
    /// # use axum_typed_session::Session;
    /// # #[derive(Session, Default)]
    /// # struct Account {
    /// #     user: Option<String>,
    /// #     visits: i64,
    /// # }
    /// async fn login(session: Session<Account>, remember_me: bool) {
    ///     session.set_user(Some("ada".into()));
    ///     session.set_remember(remember_me);
    ///     session.renew();
    /// }
    /// ```
    pub fn set_remember(&self, remember: bool) {
        lock(&handle(self).0.state).remember = Some(remember);
    }

    /// Whether the session has (or, after this request, will have) the
    /// remember-me lifetime.
    pub fn is_remembered(&self) -> bool {
        let state = lock(&handle(self).0.state);
        state
            .remember
            .or(state.stored.map(|meta| meta.remember))
            .unwrap_or(false)
    }

    /// Marks the session storable (e.g. the visitor consented): with
    /// [`SessionMode::Storable`](crate::SessionMode::Storable) or
    /// [`with_consent_required`](crate::SessionConfig::with_consent_required)
    /// it is written to the store from now on. `false` takes it out of the
    /// store again (back to memory, or gone when consent is required).
    /// In the default mode every session is storable already.
    ///
    /// ```
    /// # use axum_typed_session::Session;
    /// # #[derive(Session, Default)]
    /// # struct Account {
    /// #     user: Option<String>,
    /// #     visits: i64,
    /// # }
    /// // Behind a layer with `SessionConfig::default().with_consent_required(true)`:
    /// async fn accept_cookies(session: Session<Account>) {
    ///     session.set_store(true);
    /// }
    /// ```
    pub fn set_store(&self, storable: bool) {
        lock(&handle(self).0.state).storable = Some(storable);
    }

    /// Whether the session is (or, after this request, will be) kept in the store.
    pub fn is_storable(&self) -> bool {
        let state = lock(&handle(self).0.state);
        state
            .storable
            .or(state.stored.map(|meta| meta.location == Location::Store))
            .unwrap_or(handle(self).0.default_storable)
    }

    /// Deletes the session when the response is sent and clears the cookie.
    /// Changes made in this request are dropped.
    ///
    /// ```
    /// # use axum_typed_session::Session;
    /// # #[derive(Session, Default)]
    /// # struct Account {
    /// #     user: Option<String>,
    /// #     visits: i64,
    /// # }
    /// async fn logout(session: Session<Account>) -> &'static str {
    ///     session.destroy();
    ///     "signed out"
    /// }
    /// ```
    pub fn destroy(&self) {
        lock(&handle(self).0.state).destroy = true;
    }

    /// Issues a new token for the same data when the response is sent (call
    /// it at login, against session fixation); the old token stops working
    /// in the same UPDATE.
    ///
    /// ```
    /// # use axum_typed_session::Session;
    /// # #[derive(Session, Default)]
    /// # struct Account {
    /// #     user: Option<String>,
    /// #     visits: i64,
    /// # }
    /// async fn login(session: Session<Account>) {
    ///     session.set_user(Some("ada".into()));
    ///     // A token planted before sign-in (session fixation) is worth
    ///     // nothing after it.
    ///     session.renew();
    /// }
    /// ```
    pub fn renew(&self) {
        lock(&handle(self).0.state).renew = true;
    }
}

// Kept out of the block above: these are not methods a user calls, so the
// derive need not know them.
impl<T: SessionData> Session<T> {
    /// Writes the request's changes now (see [`Updated`](crate::Updated)).
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) async fn write_now(&self) -> Result<(), SessionError> {
        handle(self).write_now().await
    }

    /// Deletes the session now and goes on with a fresh one.
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) async fn destroy_now(&self) -> Result<(), SessionError> {
        handle(self).destroy_now().await
    }
}

impl<T: SessionData, S: Send + Sync> FromRequestParts<S> for Session<T> {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pending = parts.extensions.get::<PendingSession<T>>().cloned().ok_or(
            SessionError::MissingLayer {
                struct_name: T::SCHEMA.struct_name,
            },
        )?;
        // The load logs its own failure, with the session's id.
        let handle = pending.load(&parts.headers).await?;
        Ok(Session {
            accessors: T::Accessors::from(handle),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The derive refuses fields whose accessors these methods would hide;
    /// its list must be exactly the methods `Session<T>` has.
    #[test]
    fn the_derive_knows_every_method_of_session() {
        let source = include_str!("extract.rs");
        let start = source
            .find("impl<T: SessionData> Session<T> {")
            .expect("the inherent impl");
        let block = &source[start..];
        let block = &block[..block.find("\n}\n").expect("its end")];
        let defined: BTreeSet<&str> = block
            .lines()
            .filter_map(|line| {
                let line = line.trim_start();
                line.strip_prefix("pub fn ")
                    .or_else(|| line.strip_prefix("pub async fn "))
            })
            .filter_map(|rest| rest.split(['(', '<']).next())
            .collect();
        let known: BTreeSet<&str> = axum_typed_session_derive::__session_methods!()
            .into_iter()
            .collect();
        assert_eq!(defined, known, "update session-derive/src/names.rs");
    }
}
