//! The opt-in cache: cached reads cost no round trip, the process's own
//! writes keep it exact, and nothing is lost under concurrency.

use std::sync::atomic::Ordering;

use axum::{
    Router,
    extract::Path,
    routing::{get, post},
};
use axum_typed_session::{Session, SessionConfig, SessionLayer, SessionStore, store::CachedStore};
use conformance_tests::{Backend, Client, Counting, conformance, send};
use http::StatusCode;

#[derive(Session, Default)]
#[session(table = "cached_sessions")]
struct Visit {
    count: i64,
    name: String,
    #[session(json)]
    items: Vec<u32>,
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
        .route(
            "/name/{name}",
            post(|visit: Session<Visit>, Path(name): Path<String>| async move { visit.set_name(name) }),
        )
        .route(
            "/append/{item}",
            post(|visit: Session<Visit>, Path(item): Path<u32>| async move {
                visit.update_items(move |items| items.push(item));
            }),
        )
        .route(
            "/state",
            get(|visit: Session<Visit>| async move {
                let mut items = visit.items();
                items.sort_unstable();
                format!("{} {} {}", visit.count(), visit.name(), items.len())
            }),
        )
        .route("/logout", post(|visit: Session<Visit>| async move { visit.destroy() }))
        .layer(SessionLayer::new(store, SessionConfig::default().with_secure(false)))
}

async fn cached_reads_cost_no_round_trip<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let counted = Counting::new(fixture.store.clone());
    let calls = counted.calls.clone();
    let mut client = Client::new(app(CachedStore::new(counted, 1000)), "session");
    client.get("/count").await;
    calls.take();
    for expected in 2..=6 {
        assert_eq!(client.get("/count").await.body, expected.to_string());
    }
    let (loads, inserts, updates, _) = calls.take();
    assert_eq!(
        (loads, inserts, updates),
        (0, 0, 5),
        "reads come from the cache, writes go to the store"
    );

    // A last-writer-wins set drops the entry; the next read reloads it.
    client.post("/name/ada").await;
    calls.take();
    assert_eq!(client.get("/state").await.body, "6 ada 0");
    assert_eq!(calls.load.load(Ordering::SeqCst), 1, "reloaded once");
    assert_eq!(client.get("/state").await.body, "6 ada 0");
    assert_eq!(calls.load.load(Ordering::SeqCst), 1, "then cached again");

    // Destroy removes it from the cache too.
    let token = client.cookie_header();
    client.post("/logout").await;
    let reply = send(&client.app, "GET", "/state", token.as_deref()).await;
    assert_eq!(
        reply.body, "0  0",
        "a destroyed session is not served from the cache"
    );
    fixture.cleanup().await;
}

async fn cached_concurrent_writes_lose_nothing<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let app = app(CachedStore::new(fixture.store.clone(), 1000));
    let mut client = Client::new(app.clone(), "session");
    client.get("/count").await;
    let cookie = client.cookie_header();
    let tasks: Vec<_> = (0..40)
        .map(|item| {
            let (app, cookie) = (app.clone(), cookie.clone());
            tokio::spawn(async move {
                let path = if item % 2 == 0 {
                    format!("/append/{item}")
                } else {
                    "/count".to_owned()
                };
                let method = if item % 2 == 0 { "POST" } else { "GET" };
                send(&app, method, &path, cookie.as_deref()).await.status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        client.get("/state").await.body,
        "21  20",
        "1 + 20 increments, 20 appends"
    );
    // And the store itself agrees, read without the cache.
    let plain = Client {
        app: self::app(fixture.store.clone()),
        ..client.clone()
    };
    let mut plain = plain;
    assert_eq!(plain.get("/state").await.body, "21  20");
    fixture.cleanup().await;
}

conformance!(
    cached_reads_cost_no_round_trip,
    cached_concurrent_writes_lose_nothing
);
