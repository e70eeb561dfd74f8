//! The same cases on every store: memory, SQLite, PostgreSQL and MariaDB.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    extract::{Path, State},
    routing::{get, post},
};
use axum_typed_session::{Session, SessionConfig, SessionLayer, SessionStore, SessionToken};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use conformance_tests::{
    Backend, Client, Counting, Fixture, conformance, send, ungrouped_conformance,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use uuid::Uuid;

#[derive(Session, Default)]
#[session(table = "conformance_visits")]
struct Visit {
    count: i64,
    a: i64,
    b: i64,
    #[session(json)]
    items: Vec<u32>,
    note: Option<String>,
}

const COOKIE: &str = "session";

fn config() -> SessionConfig {
    SessionConfig::default().with_secure(false)
}

/// Handlers wait here so that concurrent requests have all loaded the
/// session before any of them writes.
#[derive(Clone)]
struct Gate(Option<Arc<Barrier>>);

impl Gate {
    async fn pass(&self) {
        if let Some(barrier) = &self.0 {
            barrier.wait().await;
        }
    }
}

fn visit_app<S: SessionStore<Visit>>(store: S, gate: Option<usize>) -> Router {
    Router::new()
        .route(
            "/count",
            get(|visit: Session<Visit>| async move {
                visit.update_count(|count| *count += 1);
                visit.count().to_string()
            }),
        )
        .route("/peek", get(|visit: Session<Visit>| async move { visit.count().to_string() }))
        .route("/untouched", get(|| async { "no session here" }))
        .route(
            "/set_a/{value}",
            post(|State(gate): State<Gate>, visit: Session<Visit>, Path(value): Path<i64>| async move {
                visit.set_a(value);
                gate.pass().await;
            }),
        )
        .route(
            "/set_b/{value}",
            post(|State(gate): State<Gate>, visit: Session<Visit>, Path(value): Path<i64>| async move {
                visit.set_b(value);
                gate.pass().await;
            }),
        )
        .route(
            "/append/{item}",
            post(|State(gate): State<Gate>, visit: Session<Visit>, Path(item): Path<u32>| async move {
                visit.update_items(move |items| items.push(item));
                gate.pass().await;
            }),
        )
        .route(
            "/state",
            get(|visit: Session<Visit>| async move {
                let visit = visit.get();
                let mut items = visit.items.clone();
                items.sort_unstable();
                format!("count={} a={} b={} items={:?} note={:?}", visit.count, visit.a, visit.b, items, visit.note)
            }),
        )
        .route("/destroy", post(|visit: Session<Visit>| async move { visit.destroy() }))
        .with_state(Gate(gate.map(|parties| Arc::new(Barrier::new(parties)))))
        .layer(SessionLayer::new(store, config()))
}

/// The token a client holds, as the store's id.
fn id_of(client: &Client) -> axum_typed_session::SessionId {
    SessionToken::parse(client.token.as_deref().expect("client has a session"))
        .expect("well-formed token")
        .id()
}

async fn cookie_round_trip<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let mut client = Client::new(visit_app(fixture.store.clone(), None), COOKIE);

    let first = client.get("/count").await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    let cookie = first
        .cookies
        .first()
        .expect("a new session sets its cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    let token = client.token.clone().expect("token kept");
    assert_eq!(
        SessionToken::parse(&token).map(|t| t.encode()),
        Some(token.clone())
    );

    assert_eq!(client.get("/count").await.body, "2");
    assert_eq!(client.get("/count").await.body, "3");
    assert_eq!(
        client.token.as_deref(),
        Some(token.as_str()),
        "the token is stable across requests"
    );
    assert_eq!(fixture.count_rows().await, 1);
    fixture.cleanup().await;
}

async fn anonymous_visitors_create_no_rows<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let app = visit_app(fixture.store.clone(), None);
    for _ in 0..5 {
        let reply = send(&app, "GET", "/peek", None).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "0"));
        assert!(
            reply.cookies.is_empty(),
            "a session that holds nothing sets no cookie: {:?}",
            reply.cookies
        );
    }
    assert_eq!(fixture.count_rows().await, 0);
    fixture.cleanup().await;
}

async fn unknown_and_malformed_tokens_get_a_fresh_session<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let app = visit_app(fixture.store.clone(), None);
    let mut owner = Client::new(app.clone(), COOKIE);
    for _ in 0..3 {
        owner.get("/count").await;
    }
    let real = owner.token.clone().expect("owner has a session");
    let mut tampered = real.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");

    let never_issued = SessionToken::generate().encode();
    let huge = "A".repeat(8192);
    let presented = [
        format!("{COOKIE}={never_issued}"),
        format!("{COOKIE}={tampered}"),
        format!("{COOKIE}="),
        format!("{COOKIE}=garbage"),
        format!("{COOKIE}={huge}"),
        format!("{COOKIE}={}", &real[..20]),
        format!("{COOKIE}={real}x"),
        "not even a cookie".to_owned(),
    ];
    for cookie in &presented {
        let reply = send(&app, "GET", "/count", Some(cookie)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "1"),
            "for {cookie:.60}"
        );
        let issued = reply
            .cookie(COOKIE)
            .expect("a fresh session gets its own cookie");
        assert_ne!(
            issued, never_issued,
            "a token the server never issued is never adopted"
        );
        assert_ne!(issued, real);
        assert!(SessionToken::parse(&issued).is_some());
    }
    assert_eq!(
        owner.get("/peek").await.body,
        "3",
        "the real session is untouched"
    );
    fixture.cleanup().await;
}

/// Round trips per request: untouched 0, read 1, new session 1, change 2.
async fn round_trips<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let store = Counting::new(fixture.store.clone());
    let calls = store.calls.clone();
    let mut client = Client::new(visit_app(store, None), COOKIE);

    client.get("/untouched").await;
    assert_eq!(
        calls.take(),
        (0, 0, 0, 0),
        "a route that never extracts the session touches no store"
    );

    client.get("/count").await;
    assert_eq!(
        calls.take(),
        (0, 1, 0, 0),
        "a new session is one INSERT and nothing else"
    );

    client.get("/peek").await;
    assert_eq!(
        calls.take(),
        (1, 0, 0, 0),
        "a read is one SELECT and writes nothing"
    );

    client.get("/count").await;
    assert_eq!(
        calls.take(),
        (1, 0, 1, 0),
        "a change is one SELECT and one UPDATE"
    );

    client.get("/untouched").await;
    assert_eq!(calls.take(), (0, 0, 0, 0));
    fixture.cleanup().await;
}

async fn unchanged_request_writes_nothing<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let mut client = Client::new(visit_app(fixture.store.clone(), None), COOKIE);
    client.get("/count").await;
    let id = id_of(&client);
    let before = fixture
        .store
        .load(&id, Utc::now())
        .await
        .unwrap()
        .expect("stored");
    for _ in 0..3 {
        let reply = client.get("/peek").await;
        assert!(reply.cookies.is_empty(), "a read sets no cookie");
    }
    let after = fixture
        .store
        .load(&id, Utc::now())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(after.version, before.version, "reads do not write");
    assert_eq!(after.expires_at, before.expires_at);
    fixture.cleanup().await;
}

/// Only dirty columns are written: a column changed behind the request's
/// back survives the request's UPDATE of another column.
async fn only_dirty_columns_are_written<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let mut client = Client::new(visit_app(fixture.store.clone(), None), COOKIE);
    client.post("/set_a/1").await;
    let table = "conformance_visits";
    let written_elsewhere = match B::NAME {
        // Also "MariaDB, group commit off".
        name if name.starts_with("MariaDB") => {
            fixture
                .execute(&format!("UPDATE `{table}` SET `b` = 42"))
                .await
        }
        _ => {
            fixture
                .execute(&format!("UPDATE \"{table}\" SET \"b\" = 42"))
                .await
        }
    };
    if written_elsewhere.is_none() {
        // The memory store has no other writer; the concurrent case covers it.
        return;
    }
    client.post("/set_a/2").await;
    assert_eq!(
        client.get("/state").await.body,
        "count=0 a=2 b=42 items=[] note=None"
    );
    fixture.cleanup().await;
}

/// Two requests of one session, both loaded before either writes, change
/// different fields: both changes survive.
async fn concurrent_disjoint_updates_both_survive<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let app = visit_app(fixture.store.clone(), Some(2));
    let mut client = Client::new(visit_app(fixture.store.clone(), None), COOKIE);
    client.post("/set_a/1").await;
    let cookie = client.cookie_header();

    let (first, second) = tokio::join!(
        send(&app, "POST", "/set_a/10", cookie.as_deref()),
        send(&app, "POST", "/set_b/20", cookie.as_deref()),
    );
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(
        client.get("/state").await.body,
        "count=0 a=10 b=20 items=[] note=None"
    );
    fixture.cleanup().await;
}

/// 50 concurrent read-modify-writes of the same field, all loaded before
/// any writes: the compare-and-swap replays each on fresh data, none is lost.
async fn concurrent_appends_lose_nothing<B: Backend>() {
    const REQUESTS: u32 = 50;
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let app = visit_app(fixture.store.clone(), Some(REQUESTS as usize));
    let mut client = Client::new(visit_app(fixture.store.clone(), None), COOKIE);
    client.get("/count").await;
    let cookie = client.cookie_header();

    let requests = (0..REQUESTS).map(|item| {
        let app = app.clone();
        let cookie = cookie.clone();
        tokio::spawn(async move {
            send(&app, "POST", &format!("/append/{item}"), cookie.as_deref()).await
        })
    });
    for reply in futures_join_all(requests).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let expected: Vec<u32> = (0..REQUESTS).collect();
    assert_eq!(
        client.get("/state").await.body,
        format!("count=1 a=0 b=0 items={expected:?} note=None")
    );
    fixture.cleanup().await;
}

async fn futures_join_all<R: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<R>>,
) -> Vec<R> {
    let mut results = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        results.push(handle.await.expect("request task"));
    }
    results
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Preferences {
    theme: String,
    sizes: Vec<u16>,
    nested: Option<Box<Preferences>>,
}

#[derive(Session, Default, Clone, Debug, PartialEq)]
#[session(table = "conformance_types")]
struct AllTypes {
    flag: bool,
    tiny: i8,
    small: i16,
    int: i32,
    big: i64,
    byte: u8,
    word: u16,
    dword: u32,
    float: f32,
    double: f64,
    text: String,
    bytes: Vec<u8>,
    at: DateTime<Utc>,
    naive: NaiveDateTime,
    day: NaiveDate,
    uuid: Uuid,
    maybe_int: Option<i64>,
    maybe_text: Option<String>,
    no_text: Option<String>,
    maybe_at: Option<DateTime<Utc>>,
    no_uuid: Option<Uuid>,
    r#type: String,
    #[session(rename = "renamed_column")]
    renamed: i32,
    #[session(json)]
    preferences: Preferences,
    #[session(json)]
    scores: BTreeMap<String, Vec<i32>>,
}

fn extreme_values() -> AllTypes {
    // Microsecond precision: what PostgreSQL and MySQL keep.
    let at = Utc.with_ymd_and_hms(2031, 12, 31, 23, 59, 58).unwrap()
        + chrono::Duration::microseconds(123_456);
    AllTypes {
        flag: true,
        tiny: i8::MIN,
        small: i16::MIN,
        int: i32::MAX,
        big: i64::MIN,
        byte: u8::MAX,
        word: u16::MAX,
        dword: u32::MAX,
        float: 1.5e-7,
        double: std::f64::consts::PI,
        text: "héllo \u{1F600} 'quoted' \"double\" \\ back\nline".to_owned(),
        bytes: vec![0, 1, 2, 255, 0, 127],
        at,
        naive: NaiveDate::from_ymd_opt(1999, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 678_901)
            .unwrap(),
        day: NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
        uuid: Uuid::new_v4(),
        maybe_int: Some(i64::MAX),
        maybe_text: Some(String::new()),
        no_text: None,
        maybe_at: Some(at),
        no_uuid: None,
        r#type: "raw identifier".to_owned(),
        renamed: -7,
        preferences: Preferences {
            theme: "dark".into(),
            sizes: vec![1, 2, 65535],
            nested: Some(Box::new(Preferences::default())),
        },
        scores: BTreeMap::from([("a".to_owned(), vec![1, -2]), ("ü".to_owned(), vec![])]),
    }
}

async fn typed_values_round_trip_exactly<B: Backend>() {
    let Some(fixture) = B::open::<AllTypes>().await else {
        return;
    };
    let expected = extreme_values();
    let wanted = expected.clone();
    let app = Router::new()
        .route(
            "/set",
            post(move |session: Session<AllTypes>| {
                let wanted = wanted.clone();
                async move {
                    session
                        .update(move |values| *values = wanted.clone())
                        .map(|_| "set")
                }
            }),
        )
        .route(
            "/get",
            get(|session: Session<AllTypes>| async move { format!("{:?}", session.get()) }),
        )
        .route(
            "/clear",
            post(|session: Session<AllTypes>| async move {
                session.set_maybe_int(None);
                session.set_maybe_text(None);
                session.set_type(String::new());
                session.set_renamed(0);
            }),
        )
        .layer(SessionLayer::new(fixture.store.clone(), config()));
    let mut client = Client::new(app, COOKIE);
    assert_eq!(client.post("/set").await.status, StatusCode::OK);
    assert_eq!(
        client.get("/get").await.body,
        format!("{expected:?}"),
        "on {}",
        B::NAME
    );

    client.post("/clear").await;
    let cleared = AllTypes {
        maybe_int: None,
        maybe_text: None,
        r#type: String::new(),
        renamed: 0,
        ..expected
    };
    assert_eq!(
        client.get("/get").await.body,
        format!("{cleared:?}"),
        "on {}",
        B::NAME
    );
    fixture.cleanup().await;
}

/// A store error is a 500, never a fresh session, and nothing is written
/// over the real row.
async fn store_errors_are_surfaced<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let mut client = Client::new(visit_app(fixture.store.clone(), None), COOKIE);
    for _ in 0..5 {
        client.get("/count").await;
    }
    if fixture.break_table().await.is_none() {
        // The memory store has no I/O that can fail.
        return;
    }
    let reply = client.get("/count").await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "load error: {reply:?}"
    );
    assert!(
        reply.cookies.is_empty(),
        "an error never replaces the client's cookie"
    );
    assert!(
        !reply.body.contains("SELECT"),
        "no SQL leaks to the client: {}",
        reply.body
    );
    fixture.restore_table().await;
    assert_eq!(
        client.get("/peek").await.body,
        "5",
        "the row survived the failed request"
    );

    // A save that fails after the handler ran must not answer 200.
    let breaking = Arc::new(tokio::sync::Mutex::new(Some(fixture)));
    let in_handler = breaking.clone();
    let app = Router::new()
        .route(
            "/count",
            get(move |visit: Session<Visit>| {
                let in_handler = in_handler.clone();
                async move {
                    visit.update_count(|count| *count += 1);
                    if let Some(fixture) = in_handler.lock().await.as_ref() {
                        fixture.break_table().await;
                    }
                    visit.count().to_string()
                }
            }),
        )
        .layer(SessionLayer::new(
            breaking.lock().await.as_ref().unwrap().store.clone(),
            config(),
        ));
    let reply = send(&app, "GET", "/count", client.cookie_header().as_deref()).await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "save error: {reply:?}"
    );
    assert_ne!(reply.body, "6", "the unsaved answer is not sent");
    let fixture: Fixture<B, Visit> = breaking.lock().await.take().unwrap();
    fixture.restore_table().await;
    assert_eq!(
        client.get("/peek").await.body,
        "5",
        "the failed write changed nothing"
    );
    fixture.cleanup().await;
}

/// A write that races a destroy does not bring the session back.
async fn destroyed_session_is_not_resurrected<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let gate = Arc::new(Barrier::new(2));
    let (inside, release) = (gate.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/slow_write",
            post(move |visit: Session<Visit>| {
                let inside = inside.clone();
                async move {
                    visit.set_a(99);
                    inside.wait().await; // loaded; now let the destroy happen
                    inside.wait().await; // the destroy is done
                }
            }),
        )
        .layer(SessionLayer::new(fixture.store.clone(), config()));
    let mut client = Client::new(visit_app(fixture.store.clone(), None), COOKIE);
    client.get("/count").await;
    let cookie = client.cookie_header();

    let slow = tokio::spawn({
        let app = app.clone();
        let cookie = cookie.clone();
        async move { send(&app, "POST", "/slow_write", cookie.as_deref()).await }
    });
    release.wait().await;
    let destroyed = client.post("/destroy").await;
    assert!(
        destroyed.cookies.iter().any(|c| c.contains("Max-Age=0")),
        "removal cookie: {:?}",
        destroyed.cookies
    );
    release.wait().await;
    slow.await.expect("slow request");
    assert_eq!(
        fixture.count_rows().await,
        0,
        "the late write did not resurrect the session"
    );
    fixture.cleanup().await;
}

/// The cases, once: on every store, and on the SQL stores again with group
/// commit off (loads and writes alone).
macro_rules! every_case {
    ($runner:ident) => {
        $runner!(
            cookie_round_trip,
            anonymous_visitors_create_no_rows,
            unknown_and_malformed_tokens_get_a_fresh_session,
            round_trips,
            unchanged_request_writes_nothing,
            only_dirty_columns_are_written,
            concurrent_disjoint_updates_both_survive,
            concurrent_appends_lose_nothing,
            typed_values_round_trip_exactly,
            store_errors_are_surfaced,
            destroyed_session_is_not_resurrected,
        );
    };
}

every_case!(conformance);
every_case!(ungrouped_conformance);
