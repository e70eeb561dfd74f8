//! Concurrent writes of many sessions share commits, and every one lands.

use axum::{Router, routing::get};
use axum_typed_session::{
    Session, SessionConfig, SessionLayer, SessionStore,
    store::sql::{Backend as SqlBackend, SqlStore},
};
use conformance_tests::{Backend, Client, send, sql_conformance};
use http::StatusCode;

#[derive(Session, Default)]
#[session(table = "grouped_sessions")]
struct Visit {
    count: i64,
}

fn app<S: SessionStore<Visit>>(store: S) -> Router {
    Router::new()
        .route(
            "/count",
            get(|visit: Session<Visit>| async move {
                visit.update_count(|count| *count += 1);
                visit.count().to_string()
            }),
        )
        .layer(SessionLayer::new(
            store,
            SessionConfig::default().with_secure(false),
        ))
}

/// The write statistics of whichever SQL store the backend uses.
trait Stats {
    fn stats(&self) -> (u64, u64);
}
impl<B: SqlBackend, T: axum_typed_session::SessionData> Stats for SqlStore<B, T> {
    fn stats(&self) -> (u64, u64) {
        self.write_stats()
    }
}

async fn concurrent_writes_share_commits<B: Backend>()
where
    B::Store<Visit>: Stats,
{
    const CLIENTS: usize = 64;
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let app = app(fixture.store.clone());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = Client::new(app.clone(), "session");
        client.get("/count").await;
        clients.push(client);
    }
    let before = fixture.store.stats();
    for round in 2..=4 {
        let requests = clients.iter().map(|client| {
            let (app, cookie) = (client.app.clone(), client.cookie_header());
            tokio::spawn(async move { send(&app, "GET", "/count", cookie.as_deref()).await })
        });
        for request in requests.collect::<Vec<_>>() {
            let reply = request.await.unwrap();
            assert_eq!(
                (reply.status, reply.body),
                (StatusCode::OK, round.to_string())
            );
        }
    }
    let (writes, commits) = fixture.store.stats();
    let (writes, commits) = (writes - before.0, commits - before.1);
    assert_eq!(writes, 3 * CLIENTS as u64, "one UPDATE per request");
    assert!(
        commits < writes,
        "{writes} writes took {commits} commits: none were grouped"
    );
    eprintln!("{}: {writes} writes in {commits} commits", B::NAME);
    fixture.cleanup().await;
}

sql_conformance!(concurrent_writes_share_commits);
