//! Two app instances (two pools, two layers) on one database: requests of
//! one session alternate between them; every read sees the latest write and
//! no update is lost, in the default configuration.

use axum::{Router, routing::get};
use axum_typed_session::{Session, SessionConfig, SessionLayer, SessionStore};
use conformance_tests::{Backend, Client, redis_conformance, send, sql_conformance};
use http::StatusCode;

#[derive(Session, Default)]
#[session(table = "shared_sessions")]
struct Visit {
    count: i64,
    last: Option<String>,
}

fn instance<S: SessionStore<Visit>>(store: S, name: &'static str) -> Router {
    Router::new()
        .route(
            "/count",
            get(move |visit: Session<Visit>| async move {
                visit.update_count(|count| *count += 1);
                visit.set_last(Some(name.to_owned()));
                visit.count().to_string()
            }),
        )
        .route(
            "/peek",
            get(|visit: Session<Visit>| async move { format!("{} {:?}", visit.count(), visit.last()) }),
        )
        .layer(SessionLayer::new(store, SessionConfig::default().with_secure(false)))
}

async fn alternating_instances_see_every_write<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let a = instance(fixture.store.clone(), "a");
    // Another process: its own pool and layer on the same database.
    let b = instance(fixture.independent_store().await, "b");
    let mut client = Client::new(a.clone(), "session");
    for round in 1..=20 {
        let (app, name) = if round % 2 == 1 { (&a, "a") } else { (&b, "b") };
        client.app = app.clone();
        let reply = client.get("/count").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, round.to_string().as_str())
        );
        let other = if name == "a" { &b } else { &a };
        client.app = other.clone();
        assert_eq!(
            client.get("/peek").await.body,
            format!("{round} Some(\"{name}\")"),
            "the other instance sees it"
        );
    }

    // Concurrent increments through both instances lose nothing.
    let cookie = client.cookie_header();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            send(&app, "GET", "/count", cookie.as_deref()).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert!(
        client.get("/peek").await.body.starts_with("60 "),
        "20 + 40 increments"
    );
    fixture.cleanup().await;
}

sql_conformance!(alternating_instances_see_every_write);
redis_conformance!(alternating_instances_see_every_write);
