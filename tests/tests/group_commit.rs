//! Concurrent writes of many sessions share commits, and every one lands.

use axum::{Router, routing::get};
use axum_typed_session::{
    Session, SessionConfig, SessionLayer, SessionStore,
    store::sql::{Backend as SqlBackend, SqlStore},
};
use conformance_tests::{Backend, Client, remove_sqlite_files, send, sql_conformance, sqlite_path};
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
        .route(
            "/logout",
            get(|visit: Session<Visit>| async move { visit.destroy() }),
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
        let stats = self.write_stats();
        (stats.writes, stats.commits)
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

/// With a pool of one connection, the grouped loads and writes give the
/// connection back between groups, so deletes, purges and the app's own
/// queries still get it under constant load, and nothing waits forever.
async fn one_connection_serves_everyone<B: SqlBackend>(pool: sqlx::Pool<B::Database>)
where
    SqlStore<B, Visit>: SessionStore<Visit>,
{
    const CLIENTS: usize = 64;
    let store = SqlStore::<B, Visit>::new(pool.clone());
    store.migrate().await.expect("migrate");
    let app = app(store.clone());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = Client::new(app.clone(), "session");
        client.get("/count").await;
        clients.push(client);
    }
    // Visitors keep the store busy until the purge and the logouts are done
    // (or a cap is reached, which fails the test: they starved).
    const CAP: usize = 40;
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut counters = Vec::new();
    for client in &clients[1..] {
        let (app, cookie, busy) = (client.app.clone(), client.cookie_header(), busy.clone());
        counters.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while busy.load(std::sync::atomic::Ordering::Relaxed) && answers.len() < CAP {
                let reply = send(&app, "GET", "/count", cookie.as_deref()).await;
                assert_eq!(reply.status, StatusCode::OK);
                answers.push(reply.body);
            }
            answers
        }));
    }
    let others = async {
        // Let the visitors get going first.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let purged = store.purge_expired(chrono::Utc::now()).await;
        let logout = send(
            &app,
            "GET",
            "/logout",
            clients[0].cookie_header().as_deref(),
        )
        .await;
        (purged, logout)
    };
    // A guard against a hang, not a measurement.
    let (purged, logout) = tokio::time::timeout(std::time::Duration::from_secs(120), others)
        .await
        .expect("a pool of one connection must not stall the store");
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(purged.expect("the purge got the connection"), 0);
    assert_eq!(logout.status, StatusCode::OK);
    for counter in counters {
        let answers = counter.await.unwrap();
        assert!(
            answers.len() < CAP,
            "the purge and the logout waited for the visitors to stop"
        );
        for (number, answer) in answers.iter().enumerate() {
            assert_eq!(*answer, (number + 2).to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pool_of_one_connection() {
    let path = sqlite_path("ats_one_connection");
    let options: sqlx::sqlite::SqliteConnectOptions =
        format!("sqlite://{}?mode=rwc", path.display())
            .parse()
            .unwrap();
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal))
        .await
        .unwrap();
    one_connection_serves_everyone::<axum_typed_session::store::sql::Sqlite>(pool).await;
    remove_sqlite_files(&path);
}

/// A pool of one connection to `pool`'s database and test schema.
async fn one_connection(pool: &sqlx::PgPool) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap()
}

async fn drop_schema(pool: &sqlx::PgPool, schema: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_of_one_connection() {
    let Some((pool, schema)) = conformance_tests::postgres_pool().await else {
        return;
    };
    let one = one_connection(&pool).await;
    one_connection_serves_everyone::<axum_typed_session::store::sql::Postgres>(one).await;
    drop_schema(&pool, &schema).await;
}

/// `SqliteStore::connect` turns SQLite's automatic checkpoint off and
/// checkpoints in the background: after enough commits, the database file
/// itself (read while ignoring the log) holds the sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_in_the_background() {
    let path = sqlite_path("ats_checkpoint");
    let store = axum_typed_session::SqliteStore::<Visit>::connect(&format!(
        "sqlite://{}?mode=rwc",
        path.display()
    ))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let mut connection = store.pool().acquire().await.unwrap();
    let cache_size: i64 = sqlx::query_scalar("PRAGMA cache_size")
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    drop(connection);
    assert_eq!(
        (cache_size, autocheckpoint),
        (
            -i64::from(axum_typed_session::__internals::SQLITE_PAGE_CACHE_KIB),
            0
        ),
        "the connection's page cache (KiB, negative) and automatic checkpoints (off)"
    );
    let mut client = Client::new(app(store.clone()), "session");
    // About one log frame per request (the row's page; the expiry and its
    // index entry move only once per touch fraction): without a restart,
    // ~3000 frames, well past the 1000 that trigger one.
    const REQUESTS: i64 = 3000;
    for count in 1..=REQUESTS {
        assert_eq!(client.get("/count").await.body, count.to_string());
    }
    // `immutable=1` reads the database file alone, without the log: only
    // what a checkpoint copied is there. The checkpoint runs in its own
    // task, so poll for it (a guard against a hang, not a measurement).
    let file_only = format!("sqlite://{}?mode=ro&immutable=1", path.display());
    let mut found = None;
    for _ in 0..100 {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&file_only)
            .await
            .unwrap();
        found = sqlx::query_scalar::<_, i64>("SELECT count FROM grouped_sessions")
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten();
        pool.close().await;
        if found.is_some_and(|count| count > 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let count = found.expect("no checkpoint copied the session into the database file");
    assert!(count > 1, "the file holds only the first write: {count}");
    // And the log was started over along the way instead of growing for ever.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(
        frames < REQUESTS,
        "{frames} frames in the log after {REQUESTS} writes: it was never started over"
    );
    drop(store);
    remove_sqlite_files(&path);
}

/// A new session holding `count`, as the layer would store it.
fn record(count: i64) -> axum_typed_session::Record<Visit> {
    let now = chrono::Utc::now();
    axum_typed_session::Record {
        id: axum_typed_session::SessionToken::generate().id(),
        data: Visit { count },
        version: 1,
        expires_at: now + chrono::Duration::hours(1),
        created_at: now,
        remember: false,
    }
}

/// A compare-and-swap write of `count` from `version` that leaves the expiry.
fn count_write(version: i64) -> axum_typed_session::Update {
    let mut dirty = axum_typed_session::DirtyFields::NONE;
    dirty.insert(0);
    axum_typed_session::Update {
        dirty,
        expected_version: Some(version),
        expires_at: None,
        new_id: None,
        remember: None,
        now: chrono::Utc::now(),
    }
}

/// A write the database refuses (here: a second INSERT of an existing id)
/// fails only its own request. It shares its group's statements with the
/// others, so the group is rolled back; every write then runs again alone.
async fn a_refused_write_fails_only_its_own_request<B: Backend>() {
    use axum_typed_session::Record;
    use chrono::Utc;

    const SESSIONS: usize = 8;
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let existing: Vec<Record<Visit>> = (0..SESSIONS).map(|_| record(1)).collect();
    for stored in &existing {
        fixture.store.insert(stored).await.unwrap();
    }
    let fresh: Vec<Record<Visit>> = (0..SESSIONS).map(|_| record(7)).collect();
    let duplicate = Record {
        id: existing[0].id,
        ..record(99)
    };

    // Spawned on this test's one-thread runtime, all of them queue before
    // the group task first runs: one group.
    let mut updates = Vec::new();
    for stored in &existing {
        let store = fixture.store.clone();
        let id = stored.id;
        updates.push(tokio::spawn(async move {
            store.update(&id, &Visit { count: 2 }, count_write(1)).await
        }));
    }
    let mut inserts = Vec::new();
    for new in fresh.iter().map(Record::duplicate).chain([duplicate]) {
        let store = fixture.store.clone();
        inserts.push(tokio::spawn(async move { store.insert(&new).await }));
    }
    for update in updates {
        assert!(
            update.await.unwrap().expect("an innocent update"),
            "updated"
        );
    }
    let refused = inserts.pop().unwrap().await.unwrap();
    assert!(refused.is_err(), "the duplicate id is refused");
    for insert in inserts {
        insert.await.unwrap().expect("an innocent insert");
    }

    for stored in &existing {
        let loaded = fixture.store.load(&stored.id, Utc::now()).await.unwrap();
        let loaded = loaded.expect("still there");
        assert_eq!((loaded.data.count, loaded.version), (2, 2));
    }
    for new in &fresh {
        let loaded = fixture.store.load(&new.id, Utc::now()).await.unwrap();
        assert_eq!(loaded.expect("inserted").data.count, 7);
    }
    fixture.cleanup().await;
}

mod refused {
    #[tokio::test]
    async fn sqlite() {
        super::a_refused_write_fails_only_its_own_request::<conformance_tests::Sqlite>().await;
    }
    #[tokio::test]
    async fn postgres() {
        super::a_refused_write_fails_only_its_own_request::<conformance_tests::Postgres>().await;
    }
    #[tokio::test]
    async fn mysql() {
        super::a_refused_write_fails_only_its_own_request::<conformance_tests::MySql>().await;
    }
}

/// Multi-row statements come in a few row counts (powers of two), not one
/// per group size, so a connection's statement cache never churns: groups
/// of every size from 1 to 40, of new rows, updates and loads, leave only a
/// handful of prepared statements on the store's one connection.
#[tokio::test]
async fn postgres_groups_prepare_few_statements() {
    use axum_typed_session::{PgStore, Record};
    use chrono::Utc;

    let Some((pool, schema)) = conformance_tests::postgres_pool().await else {
        return;
    };
    let one = one_connection(&pool).await;
    let store = PgStore::<Visit>::new(one.clone());
    store.migrate().await.unwrap();
    for size in 1..=40 {
        let records: Vec<Record<Visit>> = (0..size).map(|_| record(1)).collect();
        // Spawned on this test's one-thread runtime, each batch queues
        // before the group task runs: one group of `size`.
        let inserts: Vec<_> = records
            .iter()
            .map(|record| {
                let (store, record) = (store.clone(), record.duplicate());
                tokio::spawn(async move { store.insert(&record).await })
            })
            .collect();
        for insert in inserts {
            insert.await.unwrap().unwrap();
        }
        let loads: Vec<_> = records
            .iter()
            .map(|record| {
                let (store, id) = (store.clone(), record.id);
                tokio::spawn(async move { store.load(&id, Utc::now()).await })
            })
            .collect();
        for load in loads {
            assert!(load.await.unwrap().unwrap().is_some());
        }
        let updates: Vec<_> = records
            .iter()
            .map(|record| {
                let (store, id) = (store.clone(), record.id);
                tokio::spawn(
                    async move { store.update(&id, &Visit { count: 2 }, count_write(1)).await },
                )
            })
            .collect();
        for update in updates {
            assert!(update.await.unwrap().unwrap());
        }
    }
    drop(store);
    // The store gave its connection back; this is the same one.
    let statements: Vec<String> =
        sqlx::query_scalar("SELECT statement FROM pg_prepared_statements")
            .fetch_all(&one)
            .await
            .unwrap();
    // Per kind, at most the sizes 1, 2, 4, ..., 64: seven, instead of one
    // per group size (forty).
    for (kind, prefix) in [
        ("INSERT", "INSERT INTO"),
        ("load", "SELECT \"version\""),
        ("UPDATE", "WITH v"),
    ] {
        let of_kind = statements
            .iter()
            .filter(|sql| sql.starts_with(prefix))
            .count();
        assert!(
            (1..=7).contains(&of_kind),
            "{of_kind} {kind} statements prepared for groups of 1 to 40: {statements:#?}"
        );
    }
    one.close().await;
    drop_schema(&pool, &schema).await;
}
