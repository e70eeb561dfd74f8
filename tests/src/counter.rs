//! The counter app of the tests that run on a Redis Cluster of their own
//! (failover, resharding, TLS): one session field, and `/visit` answers
//! the count it stored (the awaited read-modify-write), so every answer
//! can be checked against the one before.

use axum::{Router, routing::get};
use axum_typed_session::{Session, SessionConfig, SessionError, SessionLayer, SessionStore};

#[derive(Session, Default)]
#[session(table = "counter_visits")]
pub struct Visit {
    pub count: i64,
}

/// `/visit`: this visitor's count plus one, once stored.
pub fn app<S: SessionStore<Visit>>(store: S) -> Router {
    Router::new()
        .route(
            "/visit",
            get(|visit: Session<Visit>| async move {
                let count = visit
                    .update_count(|count| {
                        *count += 1;
                        *count
                    })
                    .await?;
                Ok::<_, SessionError>(count.to_string())
            }),
        )
        .layer(SessionLayer::new(store, SessionConfig::default()))
}
