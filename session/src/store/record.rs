//! A stored session and one write of it: what stores hand back and take.

use chrono::{DateTime, Utc};

use crate::{
    data::{DirtyFields, SessionData},
    token::SessionId,
};

/// A stored session: its data and the library's columns.
#[derive(Debug)]
pub struct Record<T> {
    /// The primary key.
    pub id: SessionId,
    /// The session struct.
    pub data: T,
    /// Bumped by every write; compare-and-swap writes check it.
    pub version: i64,
    /// After this instant the row is invisible and purged.
    pub expires_at: DateTime<Utc>,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// Whether the session has the long remember-me lifetime.
    pub remember: bool,
}

impl<T: SessionData> Record<T> {
    /// Applies a successful [`Update`] of `data` to this copy of the row
    /// (stores that keep records in memory); the id is left to the caller.
    pub fn apply(&mut self, data: &T, update: &Update) {
        data.copy_fields(&mut self.data, update.dirty);
        if !update.is_touch() {
            self.version += 1;
        }
        if let Some(expires_at) = update.expires_at {
            self.expires_at = expires_at;
        }
        if let Some(remember) = update.remember {
            self.remember = remember;
        }
    }

    /// A field-by-field copy (session structs need not be `Clone`).
    pub fn duplicate(&self) -> Self {
        Self {
            data: self.data.duplicate(),
            ..*self
        }
    }
}

/// One UPDATE of a stored session.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    /// The fields to write; no other column is touched.
    pub dirty: DirtyFields,
    /// `Some(v)`: write only if the row is still at version `v`
    /// (compare-and-swap); `None`: last writer wins for these columns.
    pub expected_version: Option<i64>,
    /// The new expiry; `None` keeps the stored one (the layer moves it only
    /// once per touch fraction of the lifetime, see
    /// [`SessionConfig::with_touch_fraction`](crate::SessionConfig::with_touch_fraction)).
    pub expires_at: Option<DateTime<Utc>>,
    /// Move the row to this id in the same statement (`renew`).
    pub new_id: Option<SessionId>,
    /// Change the remember-me flag.
    pub remember: Option<bool>,
    /// The current time: an expired row is never written (nor revived).
    pub now: DateTime<Utc>,
}

impl Update {
    /// Whether this update only extends the expiry: it then leaves `version`
    /// alone, so it never makes a concurrent compare-and-swap retry.
    pub fn is_touch(&self) -> bool {
        self.dirty.is_empty() && self.new_id.is_none() && self.remember.is_none()
    }

    /// Whether this update writes nothing at all. The layer never sends
    /// one; the SQL stores answer it with `Ok(true)` and no round trip.
    pub fn is_empty(&self) -> bool {
        self.is_touch() && self.expires_at.is_none()
    }
}
