//! Lifecycle events: hear what happens to sessions without polling.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::{data::SessionData, token::SessionId, value::Value};

/// What happened.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// A new session was stored.
    Created,
    /// The session got a new token (login); `id` is the new id.
    Renewed {
        /// The id it had before.
        from: SessionId,
    },
    /// The session was destroyed.
    Destroyed {
        /// By whom.
        by: DestroyedBy,
    },
    /// `count` sessions whose indexed field held the value in `indexed`
    /// were revoked at once (`destroy_by`, `destroy_by_except`).
    Revoked {
        /// How many.
        count: u64,
        /// The session spared (`destroy_by_except`).
        spared: Option<SessionId>,
    },
    /// A write set the value in `indexed`, and `count` older sessions with
    /// it were destroyed to keep the cap
    /// ([`max_sessions`](crate::store::sql::SqlStoreBuilder::max_sessions)).
    Capped {
        /// How many.
        count: u64,
        /// The cap.
        max: u32,
    },
    /// `count` expired sessions were deleted by the purge.
    Purged {
        /// How many.
        count: u64,
    },
}

/// Who destroyed a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestroyedBy {
    /// Its own request ([`Session::destroy`](crate::Session::destroy)).
    Request,
    /// A revoke by id ([`destroy_session`](crate::SessionQueries::destroy_session)).
    Revoke,
}

/// One lifecycle event. It never carries a token: `id` is the public id
/// (the token's SHA-256).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionEvent {
    /// What happened.
    pub kind: EventKind,
    /// The session struct.
    pub session: &'static str,
    /// The session's id (`None` for events about many sessions).
    pub id: Option<SessionId>,
    /// The `#[session(index)]` fields' values: column name and value
    /// (for `Revoked`, the value revoked by).
    pub indexed: Vec<(&'static str, Value<'static>)>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where a store sends its lifecycle events: give it to the store
/// (`SqliteStore::builder().events(..)`, `MemoryStore::new().with_events(..)`)
/// and read them from the [`SessionEventReceiver`].
///
/// Sending never waits: when the queue is full (a slow or stuck listener)
/// the event is dropped and counted ([`dropped`](Self::dropped)), so a
/// listener never slows or fails a request. Every event is also a `tracing`
/// event (target `axum_typed_session::events`) with the same fields.
///
/// ```
/// # async fn run() {
/// use axum_typed_session::{EventKind, MemoryStore, Session, SessionEvents};
///
/// #[derive(Session, Default)]
/// struct Auth {
///     #[session(index)]
///     user_id: Option<i64>,
/// }
///
/// let (events, mut receiver) = SessionEvents::channel(1024);
/// let store = MemoryStore::<Auth>::new().with_events(events);
/// tokio::spawn(async move {
///     while let Some(event) = receiver.recv().await {
///         if event.kind == EventKind::Created {
///             // e.g. email the user that a new device signed in
///         }
///     }
/// });
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SessionEvents {
    sender: mpsc::Sender<SessionEvent>,
    dropped: Arc<AtomicU64>,
}

/// The receiving end of [`SessionEvents`].
#[derive(Debug)]
pub struct SessionEventReceiver {
    receiver: mpsc::Receiver<SessionEvent>,
}

impl SessionEventReceiver {
    /// The next event; `None` once every store holding the sender is gone.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        self.receiver.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<SessionEvent> {
        self.receiver.try_recv().ok()
    }
}

impl SessionEvents {
    /// A queue of at most `capacity` events (at least 1).
    pub fn channel(capacity: usize) -> (SessionEvents, SessionEventReceiver) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (
            SessionEvents {
                sender,
                dropped: Arc::default(),
            },
            SessionEventReceiver { receiver },
        )
    }

    /// Events dropped because the queue was full or the receiver gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends `event` if there is room, and logs it.
    pub(crate) fn emit(&self, event: SessionEvent) {
        tracing::info!(
            target: "axum_typed_session::events",
            kind = ?event.kind,
            session = event.session,
            id = ?event.id,
            indexed = ?event.indexed,
            at = %event.at,
            "session event"
        );
        if self.sender.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An event about one session of `data`.
pub(crate) fn about<T: SessionData>(
    kind: EventKind,
    id: SessionId,
    data: Option<&T>,
) -> SessionEvent {
    SessionEvent {
        kind,
        session: T::SCHEMA.struct_name,
        id: Some(id),
        indexed: data.map(indexed_values).unwrap_or_default(),
        at: Utc::now(),
    }
}

/// The indexed fields' values of `data` (a field that does not encode is
/// left out: an event is no place to fail).
pub(crate) fn indexed_values<T: SessionData>(data: &T) -> Vec<(&'static str, Value<'static>)> {
    T::SCHEMA
        .columns
        .iter()
        .enumerate()
        .filter(|(_, column)| column.indexed)
        .filter_map(|(index, column)| {
            let value = data.encode_column(index).ok()?.into_owned();
            Some((column.name, value))
        })
        .collect()
}
