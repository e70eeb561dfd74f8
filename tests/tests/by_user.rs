//! Sessions by user, on every store: list the sessions that share an
//! indexed value, revoke them all, all but one, or one; revocation is
//! final; the query is one statement on the column's index.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    routing::{get, post},
};
use axum_typed_session::{
    CachedStore, Session, SessionConfig, SessionData, SessionLayer, SessionQueries, SessionStore,
    SessionToken, value::Value,
};
use chrono::Utc;
use conformance_tests::{Backend, Client, Reply, conformance, send, sql_conformance};
use http::StatusCode;
use tokio::sync::Notify;

#[derive(Session, Default, Debug)]
#[session(table = "by_user_sessions")]
struct Auth {
    #[session(index)]
    user_id: Option<i64>,
    #[session(index)]
    email: Option<String>,
    note: Option<String>,
}

const COOKIE: &str = "session";

#[derive(Clone, Default)]
struct Hold {
    loaded: Arc<Notify>,
    release: Arc<Notify>,
}

fn app<S: SessionStore<Auth>>(store: S, hold: Hold) -> Router {
    Router::new()
        .route(
            "/login/{user}",
            post(|session: Session<Auth>, Path(user): Path<i64>| async move {
                session.set_user_id(Some(user));
                session.set_email(Some(format!("user{user}@example.com")));
                session.renew();
            }),
        )
        .route(
            "/whoami",
            get(|session: Session<Auth>| async move {
                session
                    .user_id()
                    .map_or_else(|| "anonymous".to_owned(), |user| user.to_string())
            }),
        )
        .route(
            "/slow",
            post(
                |State(hold): State<Hold>, session: Session<Auth>| async move {
                    hold.loaded.notify_one();
                    hold.release.notified().await;
                    session.set_note(Some("written late".into()));
                },
            ),
        )
        .with_state(hold)
        .layer(SessionLayer::new(store, SessionConfig::default()))
}

fn id_of(client: &Client) -> axum_typed_session::SessionId {
    SessionToken::parse(client.token.as_deref().expect("a session"))
        .expect("a token")
        .id()
}

async fn login(app: &Router, user: i64) -> Client {
    let mut client = Client::new(app.clone(), COOKIE);
    assert_eq!(
        client.post(&format!("/login/{user}")).await.status,
        StatusCode::OK
    );
    client
}

/// List, revoke others, revoke one, revoke everywhere; the browsers of
/// revoked sessions are anonymous on their next request.
async fn sessions_are_listed_and_revoked_by_user<B: Backend>() {
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let store = fixture.store.clone();
    let app = app(store.clone(), Hold::default());
    let mut laptop = login(&app, 42).await;
    let mut phone = login(&app, 42).await;
    let mut tablet = login(&app, 42).await;
    let mut other = login(&app, 7).await;
    let mut anonymous = Client::new(app.clone(), COOKIE);
    anonymous.get("/whoami").await;

    let mut listed: Vec<_> = store
        .sessions_by(&Auth::USER_ID, &42)
        .await
        .expect("list")
        .into_iter()
        .map(|info| {
            assert_eq!(info.data.user_id, Some(42));
            assert!(info.created_at <= info.expires_at && !info.remember);
            let config = SessionConfig::default();
            assert!(info.last_active(&config) >= info.created_at);
            info.id
        })
        .collect();
    listed.sort();
    let mut expected = vec![id_of(&laptop), id_of(&phone), id_of(&tablet)];
    expected.sort();
    assert_eq!(
        listed, expected,
        "the three sessions of user 42, by public id"
    );
    // By the second index too.
    let by_email = store
        .sessions_by(&Auth::EMAIL, &"user7@example.com".to_owned())
        .await
        .expect("by email");
    assert_eq!(by_email.len(), 1);
    assert_eq!(by_email[0].id, id_of(&other));
    // Expired sessions are not listed.
    let later = Utc::now() + chrono::Duration::days(2);
    let expired = store
        .find_by(0, Value::I64(42), later)
        .await
        .expect("list later");
    assert!(expired.is_empty(), "expired rows are ignored");

    // Sign out other devices: the laptop stays.
    let revoked = store
        .destroy_by_except(&Auth::USER_ID, &42, &id_of(&laptop))
        .await
        .expect("revoke others");
    assert_eq!(revoked, 2);
    assert_eq!(laptop.get("/whoami").await.body, "42");
    assert_eq!(phone.get("/whoami").await.body, "anonymous");
    // Revoke one listed session.
    store
        .destroy_session(&id_of(&other))
        .await
        .expect("revoke one");
    assert_eq!(other.get("/whoami").await.body, "anonymous");
    // Sign out everywhere.
    assert_eq!(
        store
            .destroy_by(&Auth::USER_ID, &42)
            .await
            .expect("everywhere"),
        1
    );
    assert_eq!(laptop.get("/whoami").await.body, "anonymous");
    assert_eq!(tablet.get("/whoami").await.body, "anonymous");
    assert_eq!(anonymous.get("/whoami").await.body, "anonymous");
    assert!(
        store
            .sessions_by(&Auth::USER_ID, &42)
            .await
            .expect("list")
            .is_empty()
    );
    fixture.cleanup().await;
}

/// A request of a revoked session that is in flight cannot write it back,
/// and sends no cookie that would replace another.
async fn revocation_is_final<B: Backend>() {
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let hold = Hold::default();
    let app = app(fixture.store.clone(), hold.clone());
    let laptop = login(&app, 42).await;
    let cookie = laptop.cookie_header();
    let slow = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, "POST", "/slow", cookie.as_deref()).await })
    };
    hold.loaded.notified().await;
    let revoked = fixture
        .store
        .destroy_by(&Auth::USER_ID, &42)
        .await
        .expect("revoke");
    assert_eq!(revoked, 1);
    hold.release.notify_one();
    let slow: Reply = slow.await.expect("slow request");
    assert_eq!(
        slow.cookies,
        Vec::<String>::new(),
        "no cookie from the dropped write"
    );
    assert_eq!(fixture.count_rows().await, 0, "not written back");
    fixture.cleanup().await;
}

/// The cache forgets a revoked session at once.
async fn the_cache_forgets_revoked_sessions<B: Backend>() {
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let cached = CachedStore::new(fixture.store.clone(), 100);
    let app = app(cached.clone(), Hold::default());
    let mut laptop = login(&app, 42).await;
    assert_eq!(laptop.get("/whoami").await.body, "42", "now cached");
    assert_eq!(
        cached
            .sessions_by(&Auth::USER_ID, &42)
            .await
            .expect("list")
            .len(),
        1
    );
    cached
        .destroy_by(&Auth::USER_ID, &42)
        .await
        .expect("revoke");
    assert_eq!(laptop.get("/whoami").await.body, "anonymous");
    fixture.cleanup().await;
}

conformance!(
    sessions_are_listed_and_revoked_by_user,
    revocation_is_final,
    the_cache_forgets_revoked_sessions,
);

/// `migrate()` creates the indexes on a new table, adds them to a table
/// made without them, and the DDL names them.
async fn migrate_creates_and_adds_the_indexes<B: Backend>() {
    #[derive(Session, Default)]
    #[session(table = "by_user_sessions")]
    struct Unindexed {
        user_id: Option<i64>,
        email: Option<String>,
        note: Option<String>,
    }
    let Some(old) = B::open::<Unindexed>().await else {
        return;
    };
    let fixture = old.other::<Auth>();
    let names = || async {
        let query = match B::NAME {
            name if name.starts_with("SQLite") => {
                "SELECT name FROM pragma_index_list('by_user_sessions')".to_owned()
            }
            name if name.starts_with("PostgreSQL") => {
                "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'by_user_sessions'".to_owned()
            }
            _ => "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'by_user_sessions'".to_owned(),
        };
        let mut names: Vec<String> = fixture
            .rows(&query)
            .await
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .filter(|name| name.ends_with("_idx"))
            .collect();
        names.sort();
        names
    };
    assert!(names().await.is_empty(), "made without them");
    fixture.migrate().await.expect("migrate adds the indexes");
    assert_eq!(
        names().await,
        ["by_user_sessions_email_idx", "by_user_sessions_user_id_idx"]
    );
    fixture
        .migrate()
        .await
        .expect("and again, changing nothing");
    old.cleanup().await;
}

/// The listing query runs on the column's index: read from each SQL
/// backend's own query plan, with enough rows that a scan would cost more.
async fn the_listing_uses_the_index<B: Backend>()
where
    B::Store<Auth>: FindStatement,
{
    const ROWS: i64 = 3000;
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let sqlite = B::NAME.starts_with("SQLite");
    let postgres = B::NAME.starts_with("PostgreSQL");
    let fill = if postgres {
        format!(
            "INSERT INTO \"by_user_sessions\" (\"id\", \"expires_at\", \"version\", \"created_at\", \"remember\", \"user_id\") \
             SELECT decode(lpad(to_hex(g), 64, '0'), 'hex'), now() + interval '1 day', 1, now(), false, g % 300 \
             FROM generate_series(1, {ROWS}) g"
        )
    } else if sqlite {
        format!(
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {ROWS}) \
             INSERT INTO \"by_user_sessions\" (\"id\", \"expires_at\", \"version\", \"created_at\", \"remember\", \"user_id\") \
             SELECT randomblob(32), 9999999999999, 1, 0, 0, g % 300 FROM s"
        )
    } else {
        // MariaDB stops a recursive CTE at 1000 rows: three times 1000.
        "INSERT INTO `by_user_sessions` (`id`, `expires_at`, `version`, `created_at`, `remember`, `user_id`) \
             WITH RECURSIVE s(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM s WHERE g < 999) \
             SELECT UNHEX(SHA2(g + 1000 * k + 1, 256)), NOW() + INTERVAL 1 DAY, 1, NOW(), FALSE, (g + 1000 * k + 1) % 300 \
             FROM s, (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2) AS t"
            .to_owned()
    };
    fixture.execute(&fill).await;
    if postgres {
        fixture.execute("ANALYZE \"by_user_sessions\"").await;
    }
    // The store's own statement, with its two parameters written in.
    let statement = fixture.store.find_statement();
    let literal = if sqlite {
        statement.replacen('?', "42", 1).replacen('?', "0", 1)
    } else if postgres {
        statement.replace("$1", "42").replace("$2", "now()")
    } else {
        statement.replacen('?', "42", 1).replacen('?', "NOW()", 1)
    };
    let explain = if sqlite {
        format!("EXPLAIN QUERY PLAN {literal}")
    } else {
        format!("EXPLAIN {literal}")
    };
    let plan = fixture
        .rows(&explain)
        .await
        .into_iter()
        .map(|row| row.into_iter().flatten().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        plan.contains("by_user_sessions_user_id_idx"),
        "{}: the plan does not use the index:\n{plan}",
        B::NAME
    );
    eprintln!("{}: {plan}", B::NAME);
    // And the store answers through it: 3000 / 300 rows per user.
    let found = fixture
        .store
        .sessions_by(&Auth::USER_ID, &42)
        .await
        .expect("list");
    assert_eq!(found.len(), 10);
    fixture.cleanup().await;
}

/// The text of a SQL store's query by `user_id`.
trait FindStatement {
    fn find_statement(&self) -> String;
}

impl<D: axum_typed_session::store::sql::Backend> FindStatement
    for axum_typed_session::store::sql::SqlStore<D, Auth>
{
    fn find_statement(&self) -> String {
        let field = <Auth as SessionData>::SCHEMA
            .columns
            .iter()
            .position(|column| column.name == "user_id")
            .expect("the user_id column");
        self.find_by_statement(field).to_string()
    }
}

mod sql {
    use super::*;

    sql_conformance!(
        migrate_creates_and_adds_the_indexes,
        the_listing_uses_the_index
    );
}

/// What a listener hears: created (with the indexed values), renewed,
/// destroyed by the request, revoked by value and by id, purged; never a
/// token.
async fn lifecycle_events_are_heard<B: Backend>() {
    use axum_typed_session::{DestroyedBy, EventKind, SessionEvents};
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let (events, mut heard) = SessionEvents::channel(64);
    let store = fixture.store_with_events(events.clone());
    let app = Router::new()
        .route(
            "/login/{user}",
            post(|session: Session<Auth>, Path(user): Path<i64>| async move {
                session.set_user_id(Some(user));
                session.renew();
            }),
        )
        .route(
            "/logout",
            post(|session: Session<Auth>| async move { session.destroy() }),
        )
        .layer(SessionLayer::new(
            store.clone(),
            SessionConfig::default()
                .with_idle_timeout(std::time::Duration::from_secs(1))
                .with_purge_interval(None),
        ));
    let mut next = || heard.try_recv().expect("an event");
    // Every indexed field of the session, NULL ones included.
    let indexed = |value: i64| {
        vec![
            ("user_id", Value::I64(value)),
            (
                "email",
                Value::Null(axum_typed_session::value::SqlType::Text),
            ),
        ]
    };

    let mut laptop = Client::new(app.clone(), COOKIE);
    laptop.post("/login/42").await;
    let created = next();
    assert_eq!(
        (&created.kind, &created.indexed),
        (&EventKind::Created, &indexed(42))
    );
    assert_eq!(created.id, Some(id_of(&laptop)));
    assert_eq!(created.session, "Auth");

    let before = id_of(&laptop);
    laptop.post("/login/42").await;
    let renewed = next();
    assert_eq!(renewed.kind, EventKind::Renewed { from: before });
    assert_eq!(renewed.id, Some(id_of(&laptop)));

    laptop.post("/logout").await;
    let destroyed = next();
    assert_eq!(
        destroyed.kind,
        EventKind::Destroyed {
            by: DestroyedBy::Request
        }
    );
    assert_eq!(destroyed.indexed, indexed(42));

    let phone = {
        let mut phone = Client::new(app.clone(), COOKIE);
        phone.post("/login/7").await;
        next();
        phone
    };
    let mut tablet = Client::new(app.clone(), COOKIE);
    tablet.post("/login/7").await;
    next();
    assert_eq!(
        store
            .destroy_by_except(&Auth::USER_ID, &7, &id_of(&phone))
            .await
            .unwrap(),
        1
    );
    let revoked = next();
    assert_eq!(
        revoked.kind,
        EventKind::Revoked {
            count: 1,
            spared: Some(id_of(&phone))
        }
    );
    assert_eq!(
        revoked.indexed,
        vec![("user_id", Value::I64(7))],
        "the value revoked by"
    );
    store.destroy_session(&id_of(&phone)).await.unwrap();
    assert_eq!(
        next().kind,
        EventKind::Destroyed {
            by: DestroyedBy::Revoke
        }
    );

    // An expired session, purged.
    tablet.post("/login/9").await;
    next();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let layer = SessionLayer::new(
        store.clone(),
        SessionConfig::default().with_purge_interval(None),
    );
    if B::EXPIRES_BY_ITSELF {
        // Redis expired it by itself: nothing to purge, nothing to report.
        assert_eq!(layer.purge_expired().await.unwrap(), 0);
    } else {
        assert_eq!(layer.purge_expired().await.unwrap(), 1);
        assert_eq!(next().kind, EventKind::Purged { count: 1 });
    }
    assert!(heard.try_recv().is_none(), "nothing more");
    assert_eq!(events.dropped(), 0);
    fixture.cleanup().await;
}

/// A listener that never reads slows and fails nothing: events past the
/// queue's room are dropped and counted.
async fn a_stuck_listener_never_slows_requests<B: Backend>() {
    use axum_typed_session::SessionEvents;
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let (events, _never_read) = SessionEvents::channel(1);
    let app = app(fixture.store_with_events(events.clone()), Hold::default());
    for user in 0..5 {
        let mut client = Client::new(app.clone(), COOKIE);
        let reply = client.post(&format!("/login/{user}")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(events.dropped(), 4, "one queued, four dropped");
    fixture.cleanup().await;
}

mod events {
    use super::*;

    conformance!(
        lifecycle_events_are_heard,
        a_stuck_listener_never_slows_requests
    );
}

fn capped<B: Backend>(
    fixture: &conformance_tests::Fixture<B, Auth>,
    events: Option<axum_typed_session::SessionEvents>,
) -> B::Store<Auth> {
    capped_at(fixture, events, 2)
}

fn capped_at<B: Backend>(
    fixture: &conformance_tests::Fixture<B, Auth>,
    events: Option<axum_typed_session::SessionEvents>,
    max: u32,
) -> B::Store<Auth> {
    fixture.tuned_store(conformance_tests::Tuning {
        events,
        cap: Some((&Auth::USER_ID, max)),
    })
}

/// With at most 2 sessions per user, a third sign-in destroys the oldest;
/// the written one is always kept; the listener hears it.
async fn the_cap_keeps_the_newest_sessions<B: Backend>() {
    use axum_typed_session::{EventKind, SessionEvents};
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let (events, mut heard) = SessionEvents::channel(64);
    let store = capped(&fixture, Some(events));
    let app = app(store.clone(), Hold::default());
    let mut first = login(&app, 42).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut second = login(&app, 42).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut third = login(&app, 42).await;
    let mut left: Vec<_> = store
        .sessions_by(&Auth::USER_ID, &42)
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.id)
        .collect();
    left.sort();
    let mut expected = vec![id_of(&second), id_of(&third)];
    expected.sort();
    assert_eq!(left, expected, "the two newest");
    assert_eq!(first.get("/whoami").await.body, "anonymous");
    assert_eq!(second.get("/whoami").await.body, "42");
    assert_eq!(third.get("/whoami").await.body, "42");
    // Other users are not touched.
    let mut other = login(&app, 7).await;
    assert_eq!(other.get("/whoami").await.body, "7");
    let capped: Vec<_> = std::iter::from_fn(|| heard.try_recv())
        .filter(|event| matches!(event.kind, EventKind::Capped { .. }))
        .collect();
    assert_eq!(capped.len(), 1, "{capped:?}");
    assert_eq!(capped[0].kind, EventKind::Capped { count: 1, max: 2 });
    assert_eq!(capped[0].id, Some(id_of(&third)));
    fixture.cleanup().await;
}

/// Concurrent sign-ins of one user end with at most the cap — through two
/// app instances on separate pools as well.
async fn concurrent_sign_ins_end_within_the_cap<B: Backend>() {
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    let left = concurrent_sign_ins(&fixture, 2).await;
    assert!(
        (1..=2).contains(&left),
        "{left} sessions of user 42 on {}",
        B::NAME
    );
    fixture.cleanup().await;
}

/// With a cap of one, concurrent sign-ins take turns: each destroys the one
/// before it, so exactly one is left — not none (two that each destroyed
/// the other) and not two (one that missed the other).
async fn concurrent_sign_ins_take_turns<B: Backend>() {
    let Some(fixture) = B::open::<Auth>().await else {
        return;
    };
    for round in 0..3 {
        let left = concurrent_sign_ins(&fixture, 1).await;
        assert_eq!(left, 1, "round {round}: sessions of user 42 on {}", B::NAME);
    }
    fixture.cleanup().await;
}

/// 16 concurrent sign-ins of user 42 through two app instances (separate
/// pools), each capped at `max`; every one answers 200. Answers how many
/// sessions of user 42 are left.
async fn concurrent_sign_ins<B: Backend>(
    fixture: &conformance_tests::Fixture<B, Auth>,
    max: u32,
) -> usize {
    const SIGN_INS: usize = 16;
    let one = app(capped_at(fixture, None, max), Hold::default());
    // A second app instance: its own pool on the same database.
    let other = fixture
        .independent_tuned_store(conformance_tests::Tuning {
            events: None,
            cap: Some((&Auth::USER_ID, max)),
        })
        .await;
    let two = app(other, Hold::default());
    let requests: Vec<_> = (0..SIGN_INS)
        .map(|index| {
            let app = if index % 2 == 0 {
                one.clone()
            } else {
                two.clone()
            };
            tokio::spawn(async move { send(&app, "POST", "/login/42", None).await })
        })
        .collect();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    fixture
        .store
        .sessions_by(&Auth::USER_ID, &42)
        .await
        .unwrap()
        .len()
}

mod cap {
    use super::*;

    conformance_tests::conformance!(
        the_cap_keeps_the_newest_sessions,
        concurrent_sign_ins_end_within_the_cap,
        concurrent_sign_ins_take_turns
    );
}
