//! The greet counter: `GET /greet` answers how many times this visitor came.
//!
//! ```sh
//! cargo run --example counter                       # SQLite file sessions.db
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example counter
//! DATABASE_URL=mysql://root@127.0.0.1/test cargo run --example counter
//! DATABASE_URL=memory cargo run --example counter   # non-persistent
//! curl -c jar -b jar http://127.0.0.1:3000/greet    # 1, then 2, 3, ...
//! ```

#[path = "common.rs"]
mod common;

use axum::{Router, routing::get};
use axum_typed_session::{Session, SessionConfig, SessionLayer, SessionStore};

#[derive(Session, Default)]
#[session(table = "counter_sessions")]
struct Visit {
    count: i64,
}

async fn greet(visit: Session<Visit>) -> String {
    // A read-modify-write: replayed on the fresh value if two requests of
    // this visitor race, so no visit is lost.
    visit.update_count(|count| *count += 1);
    visit.count().to_string()
}

struct Counter;

impl common::App<Visit> for Counter {
    fn router<S: SessionStore<Visit>>(store: S) -> Router {
        // Plain HTTP on loopback: a Secure cookie would not come back.
        let config = SessionConfig::default().with_secure(false);
        Router::new()
            .route("/greet", get(greet))
            .layer(SessionLayer::new(store, config))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::run::<Visit, Counter>().await
}
