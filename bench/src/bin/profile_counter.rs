//! Drives the counter route in process (no sockets) for profiling:
//!
//! ```sh
//! cargo build --release -p bench --bin profile_counter
//! valgrind --tool=callgrind --callgrind-out-file=counter.callgrind target/release/profile_counter
//! callgrind_annotate --inclusive=yes counter.callgrind | head -60
//! ```
//!
//! 64 users, 2,000 counter requests each way on an SQLite file, in the
//! proportions of the load bench's counter route.

use axum::{Router, body::Body, routing::get};
use axum_typed_session::{Session, SessionConfig, SessionLayer, SqliteStore};
use http::{Request, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[derive(Session, Default)]
#[session(table = "profile_sessions")]
struct Visit {
    count: i64,
}

const USERS: usize = 64;
const REQUESTS: usize = 2_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("profile_counter_{}.db", std::process::id()));
    let store =
        SqliteStore::<Visit>::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
    store.migrate().await?;
    let app = Router::new()
        .route(
            "/counter",
            get(|visit: Session<Visit>| async move {
                visit.update_count(|count| *count += 1);
                visit.count().to_string()
            }),
        )
        .layer(SessionLayer::new(
            store,
            SessionConfig::default().with_purge_interval(None),
        ));
    let mut cookies = Vec::new();
    for _ in 0..USERS {
        let response = app
            .clone()
            .oneshot(Request::get("/counter").body(Body::empty())?)
            .await?;
        let cookie = response.headers()[header::SET_COOKIE]
            .to_str()?
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned();
        cookies.push(cookie);
    }
    for index in 0..REQUESTS {
        let request = Request::get("/counter")
            .header(header::COOKIE, &cookies[index % USERS])
            .body(Body::empty())?;
        let response = app.clone().oneshot(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        response.into_body().collect().await?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
