//! The greet counter: `GET /greet` answers how many times this visitor came.
//!
//! ```sh
//! cargo run --example counter                       # SQLite file sessions.db
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example counter
//! DATABASE_URL=mysql://root@127.0.0.1/test cargo run --example counter
//! DATABASE_URL=redis://127.0.0.1:6379 cargo run --example counter
//! DATABASE_URL=memory cargo run --example counter   # non-persistent
//! curl -c jar -b jar http://localhost:3000/greet    # 1, then 2, 3, ...
//! ```
//!
//! The cookie is `Secure`, as it should be in production: browsers and curl
//! treat `http://localhost` as a secure context and send it back over plain
//! HTTP there, so nothing needs turning off for development.

#[path = "common.rs"]
mod common;

use axum::{Router, routing::get};
use axum_typed_session::{Session, SessionConfig, SessionError, SessionLayer, SessionStore};

#[derive(Session, Default)]
#[session(table = "counter_sessions")]
struct Visit {
    count: i64,
}

async fn greet(visit: Session<Visit>) -> Result<String, SessionError> {
    // A read-modify-write, written before it answers: replayed on the fresh
    // value if two requests of this visitor race, so no visit is lost and
    // each answer is the count that was stored.
    let count = visit
        .update_count(|count| {
            *count += 1;
            *count
        })
        .await?;
    Ok(count.to_string())
}

struct Counter;

impl common::App<Visit> for Counter {
    fn router<S: SessionStore<Visit>>(&self, store: S) -> Router {
        let config = SessionConfig::default();
        Router::new()
            .route("/greet", get(greet))
            .layer(SessionLayer::new(store, config))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::run(Counter).await
}
