//! A database that goes away, or hangs, under a running app: requests that
//! need it fail fast with a 503 and `Retry-After`, routes that do not touch
//! the session keep working, service resumes by itself, and no write is
//! applied after its request was told it failed. Through a real TCP proxy
//! on loopback that the test cuts, pauses and restores; the shared servers
//! are never touched.
//!
//! Bounds are asserted only where they are the library's own (the
//! breaker's: a request answered without touching the database, recovery
//! by the probe); the other figures are printed.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use axum_typed_session::{
    MySqlStore, PgStore, Session, SessionConfig, SessionLayer, SessionStore,
    store::sql::{Backend, SqlStore},
};
use conformance_tests::{
    Client, Reply, mysql_pool, postgres_pool,
    proxy::{Mode, Proxy},
    send,
};
use http::StatusCode;

#[derive(Session, Default)]
#[session(table = "outage_sessions")]
struct Visit {
    count: i64,
}

/// How long a request waits for its turn before the database counts as
/// unavailable, in these tests (the default is 2 s).
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

fn app<S: SessionStore<Visit>>(store: S) -> Router {
    Router::new()
        .route(
            "/count",
            get(|visit: Session<Visit>| async move {
                visit.update_count(|count| *count += 1);
                visit.count().to_string()
            }),
        )
        .route("/untouched", get(|| async { "no session here" }))
        .layer(SessionLayer::new(store, SessionConfig::default()))
}

/// What the test saw of each client: the count it was last told.
struct Clients {
    app: Router,
    clients: Vec<Client>,
    /// Successful increments per client, as answered.
    acknowledged: HashMap<usize, i64>,
}

impl Clients {
    async fn new(app: Router, count: usize) -> Clients {
        let mut clients = Vec::new();
        let mut acknowledged = HashMap::new();
        for index in 0..count {
            let mut client = Client::new(app.clone(), "session");
            let reply = client.get("/count").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            acknowledged.insert(index, 1);
            clients.push(client);
        }
        Clients {
            app,
            clients,
            acknowledged,
        }
    }

    /// One request of client `index`; what it answered, and how long it took.
    async fn count(&mut self, index: usize) -> (Reply, Duration) {
        let started = Instant::now();
        let reply =
            tokio::time::timeout(Duration::from_secs(30), self.clients[index].get("/count"))
                .await
                .expect("an answer within 30 s");
        let took = started.elapsed();
        match reply.status {
            StatusCode::OK => {
                let told: i64 = reply.body.parse().expect("a count");
                let before = self.acknowledged.insert(index, told).unwrap_or(0);
                assert_eq!(told, before + 1, "client {index}: every answer one more");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let retry_after = reply
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok());
                assert_eq!(retry_after, Some("1"), "a 503 says when to retry");
            }
            other => panic!("client {index}: {other} {}", reply.body),
        }
        (reply, took)
    }
}

/// Takes the database away (`mode`), measures, gives it back, measures.
async fn outage<B: Backend>(label: &str, store: SqlStore<B, Visit>, proxy: &Proxy, mode: Mode)
where
    SqlStore<B, Visit>: SessionStore<Visit>,
{
    let mut clients = Clients::new(app(store.clone()), 4).await;
    proxy.set(mode);
    let outage_began = Instant::now();

    // Until the store has seen the failure: a request may wait up to the
    // acquire timeout (a cut fails at once; a hang waits for it).
    let (first, first_took) = clients.count(0).await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{label}: {}",
        first.body
    );

    // While down: every request that needs the database fails at once,
    // without touching it.
    let mut slowest = Duration::ZERO;
    let mut total = Duration::ZERO;
    const DOWN_REQUESTS: usize = 40;
    for request in 0..DOWN_REQUESTS {
        let (reply, took) = clients.count(request % 4).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{label}");
        slowest = slowest.max(took);
        total += took;
    }
    assert!(
        slowest < ACQUIRE_TIMEOUT,
        "{label}: while the store knows the database is down, no request waits for it (slowest {slowest:?})"
    );
    // Under load too: a burst of concurrent requests all fail fast.
    let burst_started = Instant::now();
    let burst: Vec<_> = (0..32)
        .map(|_| {
            let app = clients.app.clone();
            let cookie = clients.clients[2].cookie_header();
            tokio::spawn(async move { send(&app, "GET", "/count", cookie.as_deref()).await })
        })
        .collect();
    for reply in burst {
        let reply = reply.await.expect("request task");
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{label}: burst"
        );
    }
    let burst_took = burst_started.elapsed();
    assert!(
        burst_took < ACQUIRE_TIMEOUT,
        "{label}: a burst while down waits for nothing ({burst_took:?})"
    );
    let untouched = send(&clients.app, "GET", "/untouched", None).await;
    assert_eq!(
        untouched.status,
        StatusCode::OK,
        "routes without a session keep working"
    );

    // Back: the probe finds it and requests succeed again by themselves.
    proxy.set(Mode::Forward);
    let restored = Instant::now();
    let recovered = loop {
        let (reply, _) = clients.count(1).await;
        if reply.status == StatusCode::OK {
            break restored.elapsed();
        }
        assert!(
            restored.elapsed() < Duration::from_secs(5),
            "{label}: serving again within 5 s of the database's return"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for index in 0..4 {
        let (reply, _) = clients.count(index).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{label}: client {index} after recovery"
        );
    }
    // Nothing lost, nothing applied that was reported failed: each stored
    // count is what its client was last told (checked answer by answer).
    eprintln!(
        "{label}: first error after {first_took:?}; {DOWN_REQUESTS} requests while down, mean {:?}, slowest {slowest:?}; 32 concurrent in {burst_took:?}; serving again {recovered:?} after the database returned (outage lasted {:?})",
        total / DOWN_REQUESTS as u32,
        restored - outage_began,
    );
}

/// A proxy on loopback in front of the database at `host:port`.
async fn proxy_to(host: &str, port: u16) -> Proxy {
    let target = tokio::net::lookup_host((host, port))
        .await
        .expect("database address")
        .next()
        .expect("an address");
    Proxy::start(target).await
}

/// One outage test per server: a store through a proxy on a fresh schema or
/// database, cut and then hung; `$drop` removes the schema afterwards.
macro_rules! outage_test {
    ($name:ident, $label:literal, $pool:ident, $store:ident, $drop:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let Some((pool, schema)) = $pool().await else {
                return;
            };
            let options = (*pool.connect_options()).clone();
            let proxy = proxy_to(options.get_host(), options.get_port()).await;
            let options = options.host("127.0.0.1").port(proxy.port());
            let store = $store::<Visit>::builder()
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .max_connections(4)
                .connect_with(options)
                .await
                .expect("store through the proxy");
            store.migrate().await.expect("migrate");
            outage(concat!($label, ", cut"), store.clone(), &proxy, Mode::Cut).await;
            outage(concat!($label, ", hung"), store, &proxy, Mode::Paused).await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!($drop, schema)))
                .execute(&pool)
                .await;
        }
    };
}

outage_test!(
    postgres_outages_fail_fast_and_recover,
    "PostgreSQL",
    postgres_pool,
    PgStore,
    "DROP SCHEMA \"{}\" CASCADE"
);
outage_test!(
    mariadb_outages_fail_fast_and_recover,
    "MariaDB",
    mysql_pool,
    MySqlStore,
    "DROP DATABASE `{}`"
);

/// A database that cannot be reached at start: the constructor says why
/// (the connection was refused), as `Unavailable`, instead of the pool's
/// "timed out" after its acquire timeout. A refused login and a file that
/// cannot be opened are errors of their own, not outages.
#[tokio::test]
async fn a_database_down_at_start_is_said_as_such() {
    use axum_typed_session::{SqliteStore, StoreError};
    // Port 1: nothing listens there, so the connection is refused.
    let refused = [
        PgStore::<Visit>::builder()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect("postgres://postgres@127.0.0.1:1/test")
            .await
            .map(|_| ()),
        MySqlStore::<Visit>::builder()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect("mysql://root@127.0.0.1:1/test")
            .await
            .map(|_| ()),
    ];
    for started in refused {
        match started {
            Err(error @ StoreError::Unavailable { .. }) => {
                let message = format!("{error:#}");
                assert!(message.contains("refused"), "{message}");
            }
            other => panic!("expected Unavailable, refused: {other:?}"),
        }
    }
    match SqliteStore::<Visit>::connect("sqlite:///no-such-directory/sessions.db").await {
        Err(StoreError::Database(error)) => {
            assert!(error.to_string().contains("unable to open"), "{error}");
        }
        other => panic!("expected the file's own error: {other:?}"),
    }
}
