//! Every documented type round-trips its whole range on every store and
//! every write path; a value a database cannot store is refused with an
//! error naming the field, never changed silently.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use axum_typed_session::{
    Session, SessionConfig, SessionError, SessionLayer, SessionStore, StoreError,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use conformance_tests::{Backend, Client, conformance, ungrouped_conformance};
use http::StatusCode;

#[derive(Session, Default, Clone, Debug, PartialEq)]
#[session(table = "range_sessions")]
struct Edges {
    at: DateTime<Utc>,
    naive: NaiveDateTime,
    day: NaiveDate,
    maybe_at: Option<DateTime<Utc>>,
    big: i64,
    real: f64,
    text: String,
}

/// The instants at the edges of the types the backends bind times as.
fn boundary_times() -> Vec<DateTime<Utc>> {
    [
        "1000-01-01T00:00:00Z",
        "1900-01-01T00:00:00Z",
        "1969-07-20T20:17:40Z",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:01Z",
        "2038-01-19T03:14:07Z",
        "2038-01-19T03:14:08Z",
        "2100-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ]
    .iter()
    .map(|text| text.parse().expect("an instant"))
    .collect()
}

fn with_time(at: DateTime<Utc>) -> Edges {
    Edges {
        at,
        naive: at.naive_utc(),
        day: at.date_naive(),
        maybe_at: Some(at),
        big: 7,
        real: 0.5,
        text: "t".into(),
    }
}

/// The value the next request writes, set by the test.
type Next = Arc<Mutex<Edges>>;

fn next(state: &Next) -> Edges {
    state.lock().expect("test state").clone()
}

fn app<S: SessionStore<Edges>>(store: S, state: Next) -> Router {
    Router::new()
        // A new session holding the value: the INSERT path.
        .route(
            "/insert",
            post(
                |State(state): State<Next>, session: Session<Edges>| async move {
                    let value = next(&state);
                    session.update(move |edges| *edges = value.clone())
                },
            ),
        )
        // One setter per field: a merged (grouped) UPDATE, or alone.
        .route(
            "/set",
            post(
                |State(state): State<Next>, session: Session<Edges>| async move {
                    let value = next(&state);
                    session.set_at(value.at);
                    session.set_naive(value.naive);
                    session.set_day(value.day);
                    session.set_maybe_at(value.maybe_at);
                    session.set_big(value.big);
                    session.set_real(value.real);
                    session.set_text(value.text);
                },
            ),
        )
        // Per-field read-modify-writes, awaited: compare-and-swap.
        .route(
            "/update_field",
            post(
                |State(state): State<Next>, session: Session<Edges>| async move {
                    let value = next(&state);
                    let (at, naive, day, maybe_at) =
                        (value.at, value.naive, value.day, value.maybe_at);
                    session.update_at(move |v| *v = at).await?;
                    session.update_naive(move |v| *v = naive).await?;
                    session.update_day(move |v| *v = day).await?;
                    session.update_maybe_at(move |v| *v = maybe_at).await?;
                    Ok::<_, SessionError>(())
                },
            ),
        )
        // The whole struct at once.
        .route(
            "/whole",
            post(
                |State(state): State<Next>, session: Session<Edges>| async move {
                    let value = next(&state);
                    session.update(move |edges| *edges = value.clone())
                },
            ),
        )
        // A write with a renew: the lone UPDATE that also moves the id.
        .route(
            "/renew",
            post(
                |State(state): State<Next>, session: Session<Edges>| async move {
                    let value = next(&state);
                    session.set_at(value.at);
                    session.set_naive(value.naive);
                    session.set_day(value.day);
                    session.set_maybe_at(value.maybe_at);
                    session.renew();
                },
            ),
        )
        .route(
            "/read",
            get(|session: Session<Edges>| async move { format!("{:?}", session.get()) }),
        )
        .with_state(state)
        .layer(SessionLayer::new(store, SessionConfig::default()))
}

async fn times_round_trip_on_every_write_path<B: Backend>() {
    let Some(fixture) = B::open::<Edges>().await else {
        return;
    };
    let state: Next = Arc::default();
    let app = app(fixture.store.clone(), state.clone());
    let times = boundary_times();
    for (index, at) in times.iter().enumerate() {
        // Each path writes a value different from the one before it.
        let previous = with_time(times[(index + 1) % times.len()]);
        let expected = with_time(*at);
        for path in ["/insert", "/set", "/update_field", "/whole", "/renew"] {
            let mut client = Client::new(app.clone(), "session");
            *state.lock().unwrap() = previous.clone();
            assert_eq!(client.post("/insert").await.status, StatusCode::OK);
            *state.lock().unwrap() = expected.clone();
            let reply = client.post(path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path} {at}: {}", reply.body);
            assert_eq!(
                client.get("/read").await.body,
                format!("{expected:?}"),
                "{path} with {at} on {}",
                B::NAME
            );
        }
    }
    fixture.cleanup().await;
}

async fn other_types_round_trip_their_edges<B: Backend>() {
    let Some(fixture) = B::open::<Edges>().await else {
        return;
    };
    let state: Next = Arc::default();
    let app = app(fixture.store.clone(), state.clone());
    let base = with_time("2024-02-29T12:00:00Z".parse().unwrap());
    let cases = [
        Edges {
            big: i64::MIN,
            ..base.clone()
        },
        Edges {
            big: i64::MAX,
            ..base.clone()
        },
        Edges {
            real: f64::MAX,
            ..base.clone()
        },
        Edges {
            real: f64::MIN_POSITIVE,
            ..base.clone()
        },
        Edges {
            real: -f64::MAX,
            ..base.clone()
        },
        Edges {
            text: String::new(),
            ..base.clone()
        },
        Edges {
            text: "é".repeat(32 * 1024),
            ..base.clone()
        },
        Edges {
            maybe_at: None,
            ..base.clone()
        },
    ];
    for expected in cases {
        for path in ["/insert", "/set"] {
            let mut client = Client::new(app.clone(), "session");
            *state.lock().unwrap() = base.clone();
            client.post("/insert").await;
            *state.lock().unwrap() = expected.clone();
            assert_eq!(client.post(path).await.status, StatusCode::OK);
            let read = client.get("/read").await.body;
            assert!(
                read == format!("{expected:?}"),
                "{path}: {} bytes differ on {}",
                read.len(),
                B::NAME
            );
        }
    }
    fixture.cleanup().await;
}

/// What the store says of a value one backend cannot store: refused,
/// naming the field; the stored session unchanged.
async fn unstorable_values_are_refused_by_name<B: Backend>() {
    let Some(fixture) = B::open::<Edges>().await else {
        return;
    };
    let state: Next = Arc::default();
    let app = app(fixture.store.clone(), state.clone());
    let base = with_time("2024-02-29T12:00:00Z".parse().unwrap());
    let mysql = B::NAME.starts_with("MariaDB");
    let postgres = B::NAME.starts_with("PostgreSQL");
    let sqlite = B::NAME.starts_with("SQLite");
    let cases: Vec<(Edges, &str, bool)> = vec![
        (
            Edges {
                real: f64::NAN,
                ..base.clone()
            },
            "real",
            mysql || sqlite,
        ),
        (
            Edges {
                real: f64::INFINITY,
                ..base.clone()
            },
            "real",
            mysql,
        ),
        (
            Edges {
                real: f64::NEG_INFINITY,
                ..base.clone()
            },
            "real",
            mysql,
        ),
        (
            Edges {
                text: "a\0b".into(),
                ..base.clone()
            },
            "text",
            postgres,
        ),
        (
            with_time("0999-12-31T23:59:59Z".parse().unwrap()),
            "at",
            mysql,
        ),
        (
            with_time("+10000-01-01T00:00:00Z".parse().unwrap()),
            "at",
            mysql,
        ),
    ];
    for (value, field, refused) in cases {
        let mut client = Client::new(app.clone(), "session");
        *state.lock().unwrap() = base.clone();
        client.post("/insert").await;
        *state.lock().unwrap() = value.clone();
        let reply = client.post("/set").await;
        let read = client.get("/read").await.body;
        if refused {
            assert_eq!(
                reply.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{field} on {}",
                B::NAME
            );
            assert_eq!(read, format!("{base:?}"), "nothing stored in its place");
            // The store's own error names the field.
            let error = fixture
                .store
                .insert(&axum_typed_session::Record {
                    id: axum_typed_session::SessionToken::generate().id(),
                    data: value,
                    version: 1,
                    expires_at: Utc::now() + chrono::Duration::hours(1),
                    created_at: Utc::now(),
                    remember: false,
                })
                .await
                .expect_err("refused");
            assert!(
                matches!(&error, StoreError::Unstorable { field: f, .. } if *f == field),
                "{error}"
            );
        } else {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{field} on {}: {}",
                B::NAME,
                reply.body
            );
            // NaN is not equal to itself: compare the text.
            assert_eq!(read, format!("{value:?}"), "{field} on {}", B::NAME);
        }
    }
    fixture.cleanup().await;
}

conformance!(
    times_round_trip_on_every_write_path,
    other_types_round_trip_their_edges,
    unstorable_values_are_refused_by_name,
);

mod alone {
    use super::*;

    ungrouped_conformance!(times_round_trip_on_every_write_path);
}

/// Lifetimes that end after 2038 (or never, in practice) on MariaDB's
/// `expires_at`: a new session still starts, with the longest expiry the
/// column holds.
async fn long_lifetimes_start_sessions<B: Backend>() {
    let Some(fixture) = B::open::<Edges>().await else {
        return;
    };
    for config in [
        SessionConfig::default()
            .with_idle_timeout(std::time::Duration::from_secs(20 * 365 * 86400)),
        SessionConfig::default().with_remember_lifetime(std::time::Duration::MAX),
    ] {
        let app = Router::new()
            .route(
                "/start",
                post(|session: Session<Edges>| async move {
                    session.set_big(1);
                    session.set_remember(true);
                }),
            )
            .route(
                "/read",
                get(|session: Session<Edges>| async move { session.big().to_string() }),
            )
            .layer(SessionLayer::new(fixture.store.clone(), config));
        let mut client = Client::new(app, "session");
        let reply = client.post("/start").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(client.get("/read").await.body, "1", "on {}", B::NAME);
    }
    fixture.cleanup().await;
}

mod lifetimes {
    use super::*;

    conformance!(long_lifetimes_start_sessions);
}
