//! What a user sees at the edges, on every store: the answer of a
//! read-modify-write under concurrency, the cookie a browser keeps when two
//! responses race, what one bad session can take down, and the cross-site
//! guard.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use axum_typed_session::{
    CrossSiteGuard, Session, SessionConfig, SessionError, SessionId, SessionLayer, SessionStore,
    SessionToken,
};
use chrono::Utc;
use conformance_tests::{
    Backend, Client, Raw, Reply, conformance, redis_conformance, send, sql_conformance,
    ungrouped_conformance,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Session, Default)]
#[session(table = "edge_sessions")]
struct Account {
    visits: i64,
    user: Option<String>,
    note: Option<String>,
}

const COOKIE: &str = "session";

fn config() -> SessionConfig {
    // Secure stays on: the test client, like a browser on localhost, keeps it.
    SessionConfig::default()
}

/// Lets a test hold a request after it loaded its session.
#[derive(Clone, Default)]
struct Hold {
    loaded: Arc<Notify>,
    release: Arc<Notify>,
}

fn app<S: SessionStore<Account>>(store: S, hold: Hold) -> Router {
    Router::new()
        .route(
            "/visit",
            get(|session: Session<Account>| async move {
                let visits = session
                    .update_visits(|visits| {
                        *visits += 1;
                        *visits
                    })
                    .await?;
                Ok::<_, SessionError>(visits.to_string())
            }),
        )
        .route(
            "/peek",
            get(|session: Session<Account>| async move { session.visits().to_string() }),
        )
        .route(
            "/start",
            post(|session: Session<Account>| async move { session.set_note(Some("hi".into())) }),
        )
        .route(
            "/whoami",
            get(|session: Session<Account>| async move {
                session.user().unwrap_or_else(|| "anonymous".into())
            }),
        )
        .route(
            "/login",
            post(|session: Session<Account>| async move {
                session.set_user(Some("ada".into()));
                session.renew();
            }),
        )
        .route(
            "/logout",
            post(|session: Session<Account>| async move { session.destroy() }),
        )
        .route(
            "/slow",
            post(
                |State(hold): State<Hold>, session: Session<Account>| async move {
                    hold.loaded.notify_one();
                    hold.release.notified().await;
                    session.set_note(Some("slow".into()));
                },
            ),
        )
        .with_state(hold)
        .layer(SessionLayer::new(store, config()))
}

/// What a browser's jar holds after applying `reply`'s `Set-Cookie`.
fn apply(jar: &mut Option<String>, reply: &Reply) {
    if let Some(value) = reply.cookie(COOKIE) {
        *jar = (!value.is_empty()).then_some(value);
    }
}

fn cookie(jar: &Option<String>) -> Option<String> {
    jar.as_ref().map(|token| format!("{COOKIE}={token}"))
}

/// 50 concurrent increments of one session, each answering with the
/// awaited (committed) value: exactly 1..=50, each once.
async fn awaited_updates_answer_what_was_committed<B: Backend>() {
    const REQUESTS: i64 = 50;
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let app = app(fixture.store.clone(), Hold::default());
    let mut client = Client::new(app.clone(), COOKIE);
    assert_eq!(client.post("/start").await.status, StatusCode::OK);
    let cookie = client.cookie_header();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let app = app.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move { send(&app, "GET", "/visit", cookie.as_deref()).await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        let reply = request.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        answers.push(reply.body.parse::<i64>().expect("a count"));
    }
    answers.sort_unstable();
    assert_eq!(answers, (1..=REQUESTS).collect::<Vec<_>>());
    assert_eq!(client.get("/peek").await.body, REQUESTS.to_string());
    fixture.cleanup().await;
}

/// A slow request of a session is in flight while another request logs in
/// (renew). Applying both responses in the order they complete, the
/// browser ends logged in with the login's data.
async fn a_racing_write_never_logs_the_browser_out<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let hold = Hold::default();
    let app = app(fixture.store.clone(), hold.clone());
    let mut jar = None;
    apply(&mut jar, &send(&app, "POST", "/start", None).await);
    let before = cookie(&jar);

    let slow = {
        let app = app.clone();
        let before = before.clone();
        tokio::spawn(async move { send(&app, "POST", "/slow", before.as_deref()).await })
    };
    hold.loaded.notified().await;
    let login = send(&app, "POST", "/login", before.as_deref()).await;
    assert_eq!(login.status, StatusCode::OK);
    apply(&mut jar, &login);
    hold.release.notify_one();
    let slow = slow.await.expect("slow request");
    assert_eq!(
        slow.status,
        StatusCode::OK,
        "the handler's own answer stands"
    );
    assert_eq!(
        slow.cookies,
        Vec::<String>::new(),
        "no Set-Cookie from the dropped write"
    );
    apply(&mut jar, &slow);

    assert_ne!(cookie(&jar), before, "the login's new token");
    let whoami = send(&app, "GET", "/whoami", cookie(&jar).as_deref()).await;
    assert_eq!(whoami.body, "ada", "still logged in");
    assert_eq!(fixture.count_rows().await, 1, "one session, not an orphan");
    fixture.cleanup().await;
}

/// The same race with a logout: the browser ends logged out, and no row is
/// left.
async fn a_racing_write_after_logout_leaves_nothing<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let hold = Hold::default();
    let app = app(fixture.store.clone(), hold.clone());
    let mut jar = None;
    apply(&mut jar, &send(&app, "POST", "/start", None).await);
    let before = cookie(&jar);

    let slow = {
        let app = app.clone();
        let before = before.clone();
        tokio::spawn(async move { send(&app, "POST", "/slow", before.as_deref()).await })
    };
    hold.loaded.notified().await;
    let logout = send(&app, "POST", "/logout", before.as_deref()).await;
    apply(&mut jar, &logout);
    assert_eq!(jar, None, "the logout removed the cookie");
    hold.release.notify_one();
    let slow = slow.await.expect("slow request");
    assert_eq!(slow.cookies, Vec::<String>::new());
    apply(&mut jar, &slow);
    assert_eq!(jar, None, "still logged out");
    assert_eq!(
        fixture.count_rows().await,
        0,
        "the slow write brought nothing back"
    );
    fixture.cleanup().await;
}

/// A `POST /start` with the headers a browser sends.
async fn post_start(app: &Router, headers: &[(&str, &str)]) -> (StatusCode, String, bool) {
    let mut all = vec![("host", "app.example.com")];
    all.extend_from_slice(headers);
    let reply = conformance_tests::send_with(app, "POST", "/start", None, &all).await;
    (reply.status, reply.body, !reply.cookies.is_empty())
}

/// Login CSRF: a cross-site form posted to a route that works without a
/// session is refused before it creates one.
async fn the_guard_refuses_cross_site_posts<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let app = app(fixture.store.clone(), Hold::default()).layer(CrossSiteGuard::new());
    for (headers, allowed) in [
        (
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://app.example.com"),
            ],
            true,
        ),
        (vec![("sec-fetch-site", "none")], true),
        (
            vec![
                ("sec-fetch-site", "same-site"),
                ("origin", "https://blog.example.com"),
            ],
            false,
        ),
        (
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.test"),
            ],
            false,
        ),
        (vec![("origin", "https://evil.test")], false),
        (vec![("origin", "https://app.example.com")], true),
        (vec![], true),
    ] {
        let (status, body, sets_cookie) = post_start(&app, &headers).await;
        if allowed {
            assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
            assert!(sets_cookie, "{headers:?}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
            assert!(body.starts_with("cross-site request refused"), "{body}");
            assert!(!sets_cookie, "{headers:?}");
        }
    }
    assert_eq!(
        fixture.count_rows().await,
        4,
        "one session per allowed request"
    );
    fixture.cleanup().await;
}

conformance!(
    awaited_updates_answer_what_was_committed,
    a_racing_write_never_logs_the_browser_out,
    a_racing_write_after_logout_leaves_nothing,
    the_guard_refuses_cross_site_posts,
);

/// A field type whose serde code panics on marker values: the app's own
/// code, run by the library while it serves many sessions at once.
#[derive(Clone, Debug, Default, PartialEq)]
struct Fragile(String);

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        assert!(self.0 != "panic-on-write", "Fragile refuses to be written");
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        assert!(text != "panic-on-read", "Fragile refuses to be read");
        Ok(Fragile(text))
    }
}

#[derive(Session, Default, Debug)]
#[session(table = "fragile_sessions")]
struct Shelf {
    count: i64,
    #[session(json)]
    fragile: Fragile,
}

fn shelf_app<S: SessionStore<Shelf>>(store: S) -> Router {
    Router::new()
        .route(
            "/count",
            get(|shelf: Session<Shelf>| async move {
                shelf.update_count(|count| *count += 1);
                shelf.count().to_string()
            }),
        )
        .route(
            "/poison",
            post(|shelf: Session<Shelf>| async move {
                shelf.set_fragile(Fragile("panic-on-write".into()));
            }),
        )
        .layer(SessionLayer::new(store, config()))
}

/// Sends with a bound: a request that does not answer within 5 s is a hang.
async fn bounded(app: &Router, method: &str, path: &str, cookie: Option<&str>) -> Reply {
    tokio::time::timeout(Duration::from_secs(5), send(app, method, path, cookie))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} did not answer within 5 s"))
}

/// Stores `json` as the `fragile` field of session `id`, which has
/// counted to `count`: behind the store's back, as another program or an
/// older deploy would (a row by its count on SQL, the hash on Redis).
async fn spoil<B: Backend>(
    fixture: &conformance_tests::Fixture<B, Shelf>,
    id: &SessionId,
    count: i64,
    json: &str,
) {
    if let Raw::Redis(raw) = fixture.raw() {
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(raw.store::<Shelf>().key_of(id))
            .arg("fragile")
            .arg(json);
        let _: i64 = raw.command(&cmd).await;
        return;
    }
    let quote = |name: &str| match B::NAME {
        name_ if name_.starts_with("MariaDB") => format!("`{name}`"),
        _ => format!("\"{name}\""),
    };
    fixture
        .execute(&format!(
            "UPDATE {} SET {} = '{}' WHERE {} = {count}",
            quote("fragile_sessions"),
            quote("fragile"),
            json,
            quote("count")
        ))
        .await;
}

/// One session whose stored value panics its type's `Deserialize`, loaded
/// in a group with 15 others; one whose new value panics `Serialize`; one
/// whose stored value does not decode. Each fails alone: its group-mates,
/// later requests and new visitors are served.
async fn one_bad_session_fails_alone<B: Backend>() {
    const CLIENTS: usize = 16;
    let Some(fixture) = B::open::<Shelf>().await else {
        return;
    };
    let app = shelf_app(fixture.store.clone());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = Client::new(app.clone(), COOKIE);
        assert_eq!(client.get("/count").await.status, StatusCode::OK);
        clients.push(client);
    }
    // Client 0 counts to 3, client 2 to 2: the rows to spoil.
    clients[0].get("/count").await;
    clients[0].get("/count").await;
    clients[2].get("/count").await;
    let ids: Vec<_> = clients
        .iter()
        .map(|client| {
            SessionToken::parse(client.token.as_deref().expect("a session"))
                .expect("a token")
                .id()
        })
        .collect();
    spoil(&fixture, &ids[0], 3, r#""panic-on-read""#).await;
    spoil(&fixture, &ids[2], 2, r#"{"not": "a string"}"#).await;

    // All at once, so that the loads share a group.
    let requests: Vec<_> = clients
        .iter()
        .map(|client| {
            let app = app.clone();
            let cookie = client.cookie_header();
            tokio::spawn(async move { bounded(&app, "GET", "/count", cookie.as_deref()).await })
        })
        .collect();
    for (index, request) in requests.into_iter().enumerate() {
        let reply = request.await.expect("request task");
        let expected = if index == 0 || index == 2 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        assert_eq!(reply.status, expected, "client {index}: {}", reply.body);
    }

    // The store names the field of the row that does not decode, loaded
    // alone or in a group alike.
    let now = Utc::now();
    let loads: Vec<_> = ids
        .iter()
        .map(|id| {
            let store = fixture.store.clone();
            let id = *id;
            tokio::spawn(async move { store.load(&id, now).await })
        })
        .collect();
    for (index, load) in loads.into_iter().enumerate() {
        let result = load.await.expect("load task");
        match index {
            0 => assert!(
                matches!(&result, Err(axum_typed_session::StoreError::Decode(error)) if error.field == "fragile" && error.to_string().contains("panicked")),
                "{result:?}"
            ),
            2 => assert!(
                matches!(&result, Err(axum_typed_session::StoreError::Decode(error)) if error.field == "fragile"),
                "{result:?}"
            ),
            _ => assert!(matches!(result, Ok(Some(_))), "client {index}: {result:?}"),
        }
    }

    // A value whose Serialize panics fails its own request only.
    let poisoned = bounded(
        &app,
        "POST",
        "/poison",
        clients[1].cookie_header().as_deref(),
    )
    .await;
    assert_eq!(poisoned.status, StatusCode::INTERNAL_SERVER_ERROR);

    // Everyone else, later, and a new visitor, are served.
    for round in 0..3 {
        let requests: Vec<_> = clients
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != 0 && *index != 2)
            .map(|(_, client)| {
                let app = app.clone();
                let cookie = client.cookie_header();
                tokio::spawn(async move { bounded(&app, "GET", "/count", cookie.as_deref()).await })
            })
            .collect();
        for request in requests {
            let reply = request.await.expect("request task");
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "round {round}: {}",
                reply.body
            );
        }
    }
    let newcomer = bounded(&app, "GET", "/count", None).await;
    assert_eq!(
        (newcomer.status, newcomer.body.as_str()),
        (StatusCode::OK, "1")
    );
    // Client 1's poisoned write stored nothing: its first visit, the group,
    // three rounds, and this one.
    let one = bounded(&app, "GET", "/count", clients[1].cookie_header().as_deref()).await;
    assert_eq!(one.body, "6");
    fixture.cleanup().await;
}

mod bad_session {
    use super::*;

    sql_conformance!(one_bad_session_fails_alone);
    ungrouped_conformance!(one_bad_session_fails_alone);
    redis_conformance!(one_bad_session_fails_alone);
}
