//! Load bench over loopback: the same routes served bare, with hand-written
//! sqlx, and with the session layer on each store, all in one run, reported
//! as req/s, p50, p99 and ratios to the baselines.
//!
//! ```sh
//! cargo run --release -p bench --bin loadbench            # 5 s per scenario
//! BENCH_SECONDS=2 cargo run --release -p bench --bin loadbench
//! ```
//!
//! 64 virtual users, each with its own cookie, 32 requests in flight (32
//! workers, two users each, so a user's requests never overlap). While it
//! loads, it checks that every counter answer is the user's previous count
//! plus one, and at the end that each user's stored count equals its
//! successful increments; any mismatch makes it exit non-zero.
//!
//! Each round runs one route on every server back to back, then the next
//! route; a ratio is the median over rounds of the ratio within a round, so
//! that two figures compared were measured seconds apart. Every other round
//! runs the servers in reverse order, so that the machine's drift during a
//! round does not always favour the ones run first. Before each run
//! the bench waits (at most 2 s) for the machine to go quiet.
//!
//! To iterate on one part, `BENCH_DBS=sqlite,postgres,mysql` picks the
//! stores and `BENCH_ROUTES=counter,read,untouched,first` the routes (both
//! default to all; bare and the memory store always run, as references),
//! and `BENCH_TARGETS=bare,raw redis-rs/Redis,client cache` keeps only the
//! servers whose name contains one of those parts (for profiling one).
//! `BENCH_WAIT=1` adds the Redis Cluster store with `wait_for_replicas(1)`.
//!
//! Databases: `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` (defaults: the local
//! servers); a store whose database is unreachable is reported as skipped.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use axum_typed_session::{
    CachedStore, MySqlStore, PgStore, RedisStore, Session, SessionConfig, SessionData,
    SessionLayer, SessionStore, SqliteStore,
};
use rand::RngCore;

mod common;

use common::{HttpClient, median, percentile, request, serve, server_runtime, settle};

const USERS: usize = 64;
const IN_FLIGHT: usize = 32;

#[derive(Session, Default)]
#[session(table = "bench_sessions")]
struct Visit {
    count: i64,
}

/// The same session for the server behind the cache, in its own table: each
/// table grows only with its own server's first visits, as the raw one does.
#[derive(Session, Default)]
#[session(table = "bench_cached_sessions")]
struct CachedVisit {
    count: i64,
}

/// The same session on Redis with the client cache, under its own keys.
#[derive(Session, Default)]
#[session(table = "bench_tracked_sessions")]
struct TrackedVisit {
    count: i64,
}

/// The same session on Redis Cluster with `wait_for_replicas(1)`, under
/// its own keys (`BENCH_WAIT=1`): what waiting for a replica costs.
#[derive(Session, Default)]
#[session(table = "bench_waited_sessions")]
struct WaitedVisit {
    count: i64,
}

/// The same session with a user column, without and with an index on it:
/// what an indexed field costs (`BENCH_INDEX_COST=1`).
#[derive(Session, Default)]
#[session(table = "bench_user_sessions")]
struct UserVisit {
    count: i64,
    user: Option<i64>,
}

#[derive(Session, Default)]
#[session(table = "bench_indexed_sessions")]
struct IndexedVisit {
    count: i64,
    #[session(index)]
    user: Option<i64>,
}

/// What the routes do with either session struct.
trait Counter: SessionData + Default {
    fn get(session: &Session<Self>) -> i64;
    fn increment(session: &Session<Self>);
    /// A first visit: the increment, and for the structs with a user
    /// column, the user (so an index has an entry to write).
    fn first(session: &Session<Self>);
    /// The increment written before the answer, answering the stored count.
    fn increment_now(
        session: &Session<Self>,
    ) -> impl std::future::Future<Output = Result<i64, axum_typed_session::SessionError>> + Send;
}

/// The routes' work, the same for every struct: the count, a
/// read-modify-write of it, and the awaited one; `user` structs also set a
/// user on the first visit.
macro_rules! counter {
    ($t:ty) => {
        counter!($t, |_session| {});
    };
    ($t:ty, user) => {
        counter!($t, |session: &Session<$t>| {
            session.set_user(Some(rand::random::<i64>() & 0xffff))
        });
    };
    ($t:ty, $on_first:expr) => {
        impl Counter for $t {
            fn get(session: &Session<Self>) -> i64 {
                session.count()
            }
            fn increment(session: &Session<Self>) {
                session.update_count(|count| *count += 1);
            }
            fn first(session: &Session<Self>) {
                ($on_first)(session);
                Self::increment(session);
            }
            async fn increment_now(
                session: &Session<Self>,
            ) -> Result<i64, axum_typed_session::SessionError> {
                session
                    .update_count(|count| {
                        *count += 1;
                        *count
                    })
                    .await
            }
        }
    };
}
counter!(Visit);
counter!(CachedVisit);
counter!(TrackedVisit);
counter!(WaitedVisit);
counter!(UserVisit, user);
counter!(IndexedVisit, user);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Untouched,
    Read,
    Counter,
    /// The counter with the awaited increment, answering the stored count.
    CounterAwait,
    First,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Untouched,
        Route::Read,
        Route::Counter,
        Route::CounterAwait,
        Route::First,
    ];

    /// Whether each answer is the user's previous count plus one.
    fn counts(self) -> bool {
        matches!(self, Route::Counter | Route::CounterAwait)
    }

    fn path(self) -> &'static str {
        match self {
            Route::Untouched => "/untouched",
            Route::Read => "/read",
            Route::Counter => "/counter",
            Route::CounterAwait => "/counter_await",
            Route::First => "/first",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
    MySql,
    Redis,
    RedisCluster,
}

impl Db {
    fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "SQLite",
            Db::Postgres => "PostgreSQL",
            Db::MySql => "MariaDB",
            Db::Redis => "Redis",
            Db::RedisCluster => "Redis Cluster",
        }
    }

    /// The spelling `BENCH_DBS` uses.
    fn key(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
            Db::MySql => "mysql",
            Db::Redis => "redis",
            Db::RedisCluster => "redis_cluster",
        }
    }
}

// ---------------------------------------------------------------- servers

fn bare() -> Router {
    Router::new()
        .route(Route::Untouched.path(), get(|| async { "ok" }))
        .route(Route::Read.path(), get(|| async { "0" }))
        .route(Route::Counter.path(), get(|| async { "1" }))
        .route(Route::CounterAwait.path(), get(|| async { "1" }))
        .route(Route::First.path(), get(|| async { "1" }))
}

fn with_sessions<T: Counter, S: SessionStore<T>>(store: S) -> Router {
    // Ten minutes: long past a run, short enough that the bench's sessions
    // leave the shared Redis by themselves.
    let config = SessionConfig::default()
        .with_secure(false)
        .with_idle_timeout(Duration::from_secs(600))
        .with_purge_interval(None);
    Router::new()
        .route(Route::Untouched.path(), get(|| async { "ok" }))
        .route(
            Route::Read.path(),
            get(|visit: Session<T>| async move { T::get(&visit).to_string() }),
        )
        .route(Route::Counter.path(), get(increment::<T>))
        .route(Route::CounterAwait.path(), get(increment_now::<T>))
        .route(Route::First.path(), get(first::<T>))
        .layer(SessionLayer::new(store, config))
}

async fn increment_now<T: Counter>(
    visit: Session<T>,
) -> Result<String, axum_typed_session::SessionError> {
    Ok(T::increment_now(&visit).await?.to_string())
}

async fn first<T: Counter>(visit: Session<T>) -> String {
    T::first(&visit);
    T::get(&visit).to_string()
}

async fn increment<T: Counter>(visit: Session<T>) -> String {
    T::increment(&visit);
    T::get(&visit).to_string()
}

/// What a careful user writes by hand: the token is the key, one SELECT to
/// read, SELECT + UPDATE to change, one INSERT for a new visitor. On Redis:
/// HGETALL to read, HGETALL + HSET to change, HSET + PEXPIREAT (one
/// pipeline) for a new visitor, on the client's multiplexed connection.
#[derive(Clone)]
enum RawPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Redis(redis::aio::ConnectionManager),
    RedisCluster(redis::cluster_async::ClusterConnection),
    /// The other way people write it: a pool of connections, each serving
    /// one request at a time (as bb8/deadpool hand them out), no
    /// pipelining across requests.
    RedisPooled(std::sync::Arc<RedisPool>),
}

/// A pool as bb8 and deadpool keep one: `BENCH_REDIS_POOL` connections
/// (default 10, bb8's default size), a request takes an idle one or waits
/// for the first to come back, and serves on it alone.
struct RedisPool {
    idle: std::sync::Mutex<Vec<RedisConnection>>,
    permits: tokio::sync::Semaphore,
}

enum RedisConnection {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// A connection out of the pool; it goes back when dropped.
struct Pooled<'a> {
    pool: &'a RedisPool,
    connection: Option<RedisConnection>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.idle.lock().expect("pool").push(connection);
        }
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = RedisConnection;
    fn deref(&self) -> &RedisConnection {
        self.connection.as_ref().expect("taken")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut RedisConnection {
        self.connection.as_mut().expect("taken")
    }
}

impl RedisPool {
    async fn open(cluster: bool) -> anyhow::Result<Self> {
        // An empty pool would never hand out a connection.
        let size = match common::setting("BENCH_REDIS_POOL", 10) {
            0 => 10,
            size => size,
        };
        let mut connections = Vec::with_capacity(size);
        for _ in 0..size {
            connections.push(if cluster {
                RedisConnection::Cluster(
                    redis::cluster::ClusterClient::new(redis_cluster_nodes())?
                        .get_async_connection()
                        .await?,
                )
            } else {
                RedisConnection::Single(
                    redis::Client::open(redis_url())?
                        .get_multiplexed_async_connection()
                        .await?,
                )
            });
        }
        Ok(Self {
            idle: std::sync::Mutex::new(connections),
            permits: tokio::sync::Semaphore::new(size),
        })
    }

    /// A connection of its own for one request: an idle one, or the first
    /// to come back.
    async fn get(&self) -> Pooled<'_> {
        let permit = self.permits.acquire().await.expect("never closed");
        let connection = self.idle.lock().expect("pool").pop();
        Pooled {
            pool: self,
            connection: Some(connection.expect("a permit holds a connection")),
            _permit: permit,
        }
    }
}

/// Runs `$body` with `$connection` bound to whichever connection the pool gave.
macro_rules! pooled {
    ($pool:expr, |$connection:ident| $body:expr) => {{
        let mut guard = $pool.get().await;
        match &mut *guard {
            RedisConnection::Single($connection) => $body,
            RedisConnection::Cluster($connection) => $body,
        }
    }};
}

/// The hand-written Redis baseline's key of a visitor.
fn raw_redis_key(id: &str) -> String {
    format!("raw_sessions_{}:{{{id}}}", std::process::id())
}

async fn raw_redis_select<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    id: &str,
) -> anyhow::Result<Option<i64>> {
    let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(raw_redis_key(id))
        .query_async(connection)
        .await?;
    Ok(match hash.get("count") {
        Some(count) => Some(count.parse()?),
        None => None,
    })
}

async fn raw_redis_update<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    id: &str,
    count: i64,
) -> anyhow::Result<()> {
    let _: i64 = redis::cmd("HSET")
        .arg(raw_redis_key(id))
        .arg("count")
        .arg(count)
        .query_async(connection)
        .await?;
    Ok(())
}

async fn raw_redis_insert<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    id: &str,
) -> anyhow::Result<()> {
    let key = raw_redis_key(id);
    let expires = chrono::Utc::now().timestamp_millis() + 600_000;
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&key)
        .arg("count")
        .arg(1)
        .ignore()
        .cmd("PEXPIREAT")
        .arg(&key)
        .arg(expires)
        .ignore()
        .query_async(connection)
        .await?;
    Ok(())
}

fn raw_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::COOKIE)?
        .to_str()
        .ok()?
        .split(';')
        .find_map(|pair| pair.trim().strip_prefix("sid="))
        .map(str::to_owned)
}

impl RawPool {
    async fn select(&self, id: &str) -> anyhow::Result<Option<i64>> {
        Ok(match self {
            RawPool::Redis(connection) => {
                return raw_redis_select(&mut connection.clone(), id).await;
            }
            RawPool::RedisCluster(connection) => {
                return raw_redis_select(&mut connection.clone(), id).await;
            }
            RawPool::RedisPooled(pool) => return pooled!(pool, |c| raw_redis_select(c, id).await),
            RawPool::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count FROM raw_sessions WHERE id = ?")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
            RawPool::Postgres(pool) => {
                sqlx::query_scalar("SELECT count FROM raw_sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
            RawPool::MySql(pool) => {
                sqlx::query_scalar("SELECT count FROM raw_sessions WHERE id = ?")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
        }?)
    }

    async fn update(&self, id: &str, count: i64) -> anyhow::Result<()> {
        match self {
            RawPool::Redis(connection) => {
                return raw_redis_update(&mut connection.clone(), id, count).await;
            }
            RawPool::RedisPooled(pool) => {
                return pooled!(pool, |c| raw_redis_update(c, id, count).await);
            }
            RawPool::RedisCluster(connection) => {
                return raw_redis_update(&mut connection.clone(), id, count).await;
            }
            RawPool::Sqlite(pool) => {
                sqlx::query("UPDATE raw_sessions SET count = ? WHERE id = ?")
                    .bind(count)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            RawPool::Postgres(pool) => {
                sqlx::query("UPDATE raw_sessions SET count = $1 WHERE id = $2")
                    .bind(count)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            RawPool::MySql(pool) => {
                sqlx::query("UPDATE raw_sessions SET count = ? WHERE id = ?")
                    .bind(count)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn insert(&self, id: &str) -> anyhow::Result<()> {
        match self {
            RawPool::Redis(connection) => {
                return raw_redis_insert(&mut connection.clone(), id).await;
            }
            RawPool::RedisCluster(connection) => {
                return raw_redis_insert(&mut connection.clone(), id).await;
            }
            RawPool::RedisPooled(pool) => return pooled!(pool, |c| raw_redis_insert(c, id).await),
            RawPool::Sqlite(pool) => {
                sqlx::query("INSERT INTO raw_sessions (id, count) VALUES (?, 1)")
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            RawPool::Postgres(pool) => {
                sqlx::query("INSERT INTO raw_sessions (id, count) VALUES ($1, 1)")
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            RawPool::MySql(pool) => {
                sqlx::query("INSERT INTO raw_sessions (id, count) VALUES (?, 1)")
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self) -> anyhow::Result<()> {
        let (create, delete) = (
            "CREATE TABLE IF NOT EXISTS raw_sessions (id VARCHAR(64) NOT NULL PRIMARY KEY, count BIGINT NOT NULL)",
            "DELETE FROM raw_sessions",
        );
        match self {
            RawPool::Sqlite(pool) => {
                sqlx::query(create).execute(pool).await?;
                sqlx::query(delete).execute(pool).await?;
            }
            RawPool::Postgres(pool) => {
                sqlx::query(create).execute(pool).await?;
                sqlx::query(delete).execute(pool).await?;
            }
            RawPool::MySql(pool) => {
                sqlx::query(create).execute(pool).await?;
                sqlx::query(delete).execute(pool).await?;
            }
            // Keys are this run's own (the process id) and expire by themselves.
            RawPool::Redis(_) | RawPool::RedisCluster(_) | RawPool::RedisPooled(_) => {}
        }
        Ok(())
    }
}

fn server_error(error: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
}

async fn raw_read(State(pool): State<RawPool>, headers: HeaderMap) -> Response {
    let Some(id) = raw_token(&headers) else {
        return "0".into_response();
    };
    match pool.select(&id).await {
        Ok(count) => count.unwrap_or(0).to_string().into_response(),
        Err(error) => server_error(error),
    }
}

async fn raw_counter(State(pool): State<RawPool>, headers: HeaderMap) -> Response {
    let Some(id) = raw_token(&headers) else {
        return raw_first(State(pool)).await;
    };
    let result = async {
        let count = pool.select(&id).await?.unwrap_or(0) + 1;
        pool.update(&id, count).await?;
        Ok::<_, anyhow::Error>(count)
    };
    match result.await {
        Ok(count) => count.to_string().into_response(),
        Err(error) => server_error(error),
    }
}

async fn raw_first(State(pool): State<RawPool>) -> Response {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match pool.insert(&id).await {
        Ok(()) => (
            [(header::SET_COOKIE, format!("sid={id}; HttpOnly; Path=/"))],
            "1",
        )
            .into_response(),
        Err(error) => server_error(error),
    }
}

fn raw_sqlx(pool: RawPool) -> Router {
    Router::new()
        .route(Route::Untouched.path(), get(|| async { "ok" }))
        .route(Route::Read.path(), get(raw_read))
        .route(Route::Counter.path(), get(raw_counter))
        .route(Route::CounterAwait.path(), get(raw_counter))
        .route(Route::First.path(), get(raw_first))
        .with_state(pool)
}

// ---------------------------------------------------------------- load

struct User {
    cookie: Option<String>,
    count: i64,
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    errors: u64,
    wrong: u64,
}

/// Gives every user a session with count 1 (not timed).
async fn prepare(client: &HttpClient, address: SocketAddr) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::with_capacity(USERS);
    for _ in 0..USERS {
        let (status, cookie, body) = request(client, address, Route::Counter.path(), None).await?;
        anyhow::ensure!(
            status == StatusCode::OK && body == "1",
            "preparing a user failed: {status} {body}"
        );
        users.push(User { cookie, count: 1 });
    }
    Ok(users)
}

async fn load(
    client: &HttpClient,
    address: SocketAddr,
    route: Route,
    users: &mut Vec<User>,
    duration: Duration,
    check: bool,
) -> Outcome {
    let deadline = Instant::now() + duration;
    let per_worker = USERS / IN_FLIGHT;
    let mut chunks = Vec::new();
    while !users.is_empty() {
        let rest = users.split_off(per_worker.min(users.len()));
        chunks.push(std::mem::replace(users, rest));
    }
    let workers = chunks.into_iter().map(|mut mine| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut turn = 0;
            while Instant::now() < deadline {
                let user = &mut mine[turn % per_worker];
                turn += 1;
                let cookie = if route == Route::First {
                    None
                } else {
                    user.cookie.as_deref()
                };
                let started = Instant::now();
                let result = request(&client, address, route.path(), cookie).await;
                let elapsed = started.elapsed();
                match result {
                    Ok((StatusCode::OK, _, body)) => {
                        outcome
                            .latencies_us
                            .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                        if check && route.counts() {
                            user.count += 1;
                            if body != user.count.to_string() {
                                outcome.wrong += 1;
                                user.count = body.parse().unwrap_or(user.count);
                            }
                        }
                    }
                    _ => outcome.errors += 1,
                }
            }
            (mine, outcome)
        })
    });
    let mut total = Outcome::default();
    for worker in workers.collect::<Vec<_>>() {
        let (mine, outcome) = worker.await.expect("worker");
        users.extend(mine);
        total.latencies_us.extend(outcome.latencies_us);
        total.errors += outcome.errors;
        total.wrong += outcome.wrong;
    }
    total
}

/// Each user's stored count equals its successful increments.
async fn verify(client: &HttpClient, address: SocketAddr, users: &[User]) -> anyhow::Result<u64> {
    let mut wrong = 0;
    for user in users {
        let (_, _, body) =
            request(client, address, Route::Read.path(), user.cookie.as_deref()).await?;
        if body != user.count.to_string() {
            wrong += 1;
        }
    }
    Ok(wrong)
}

struct Row {
    route: Route,
    target: String,
    db: Option<Db>,
    kind: &'static str,
    rps: f64,
    /// Req/s of each round, to pair with the baselines' of the same round.
    rounds: Vec<f64>,
    p50: u32,
    p99: u32,
    errors: u64,
}

impl Row {
    /// The median over rounds of this row's req/s over `base`'s in the same
    /// round: pairs measured within seconds of each other, so that the
    /// machine's drift over a run cancels out.
    fn ratio(&self, base: &Row) -> f64 {
        let mut ratios: Vec<f64> = self
            .rounds
            .iter()
            .zip(&base.rounds)
            .map(|(rps, base)| rps / base.max(1.0))
            .collect();
        median(&mut ratios)
    }
}

/// A running server under test.
struct Target {
    name: String,
    db: Option<Db>,
    kind: &'static str,
    address: SocketAddr,
}

/// One timed run of one route against one server; correctness failures
/// are added to `failures`.
async fn measure_once(
    client: &HttpClient,
    target: &Target,
    route: Route,
    duration: Duration,
    failures: &mut Vec<String>,
) -> anyhow::Result<(f64, Vec<u32>, u64)> {
    let check = target.kind != "bare";
    let address = target.address;
    let waited = settle().await;
    let mut users = prepare(client, address).await?;
    // Warm connections and statement caches.
    load(
        client,
        address,
        route,
        &mut users,
        Duration::from_millis(300),
        check,
    )
    .await;
    let outcome = load(client, address, route, &mut users, duration, check).await;
    let mut latencies = outcome.latencies_us;
    latencies.sort_unstable();
    let rps = latencies.len() as f64 / duration.as_secs_f64();
    let name = &target.name;
    if outcome.wrong > 0 {
        failures.push(format!(
            "{name} {route:?}: {} counter answers were not previous + 1",
            outcome.wrong
        ));
    }
    if check && route.counts() {
        let wrong = verify(client, address, &users).await?;
        if wrong > 0 {
            failures.push(format!(
                "{name}: {wrong} users' stored count differs from their increments"
            ));
        }
    }
    if outcome.errors > 0 {
        failures.push(format!(
            "{name} {route:?}: {} failed requests",
            outcome.errors
        ));
    }
    eprintln!(
        "  {name:<28} {:<10} {rps:>9.0} req/s   (settled in {} ms)",
        route.path(),
        waited.as_millis()
    );
    Ok((rps, latencies, outcome.errors))
}

/// The bench's SQLite database, one per run.
fn sqlite_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("loadbench_{}.db", std::process::id()))
}

fn remove_sqlite_files() {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path().display()));
    }
}

async fn connect(db: Db) -> anyhow::Result<RawPool> {
    Ok(match db {
        Db::Sqlite => {
            let path = sqlite_path();
            let url = format!("sqlite://{}?mode=rwc", path.display());
            // The same durability the session store uses: WAL, synchronous NORMAL.
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let options = options
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            RawPool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .connect_with(options)
                    .await?,
            )
        }
        Db::Postgres => {
            let url = std::env::var("TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            RawPool::Postgres(sqlx::PgPool::connect(&url).await?)
        }
        Db::MySql => {
            let url = std::env::var("TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
            RawPool::MySql(sqlx::MySqlPool::connect(&url).await?)
        }
        Db::Redis => RawPool::Redis(
            redis::aio::ConnectionManager::new(redis::Client::open(redis_url())?).await?,
        ),
        Db::RedisCluster => RawPool::RedisCluster(
            redis::cluster::ClusterClient::new(redis_cluster_nodes())?
                .get_async_connection()
                .await?,
        ),
    })
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis_cluster_nodes() -> Vec<String> {
    std::env::var("TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
        })
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The session app on `pool`'s database (table emptied): `Visit` on the
/// store, `CachedVisit` behind the single-instance cache.
async fn session_app(pool: &RawPool, cache: bool) -> anyhow::Result<Router> {
    if cache {
        session_app_of::<CachedVisit>(pool, true).await
    } else {
        session_app_of::<Visit>(pool, false).await
    }
}

async fn session_app_of<T: Counter>(pool: &RawPool, cache: bool) -> anyhow::Result<Router> {
    fn build<T: Counter, S: SessionStore<T>>(store: S, cache: bool) -> Router {
        if cache {
            with_sessions::<T, _>(CachedStore::new(store, 100_000))
        } else {
            with_sessions::<T, _>(store)
        }
    }
    let delete = || sqlx::AssertSqlSafe(format!("DELETE FROM {}", T::SCHEMA.table));
    Ok(match pool {
        RawPool::Sqlite(pool) => {
            // The store opens its own pool on the same file, as an app would
            // (`SqliteStore::connect`), with the same durability as the raw
            // pool: WAL and synchronous = NORMAL.
            let path = pool.connect_options().get_filename().to_owned();
            let store = SqliteStore::<T>::connect(&format!("sqlite://{}", path.display())).await?;
            store.migrate().await?;
            sqlx::query(delete()).execute(pool).await?;
            build(store, cache)
        }
        RawPool::Postgres(pool) => {
            let store = PgStore::<T>::new(pool.clone());
            store.migrate().await?;
            sqlx::query(delete()).execute(pool).await?;
            build(store, cache)
        }
        RawPool::MySql(pool) => {
            let store = MySqlStore::<T>::new(pool.clone());
            store.migrate().await?;
            sqlx::query(delete()).execute(pool).await?;
            build(store, cache)
        }
        RawPool::Redis(_) => build(
            RedisStore::<T>::builder()
                .prefix(redis_prefix::<T>())
                .connect(&redis_url())
                .await?,
            cache,
        ),
        RawPool::RedisPooled(_) => unreachable!("the pooled baseline has no session app"),
        RawPool::RedisCluster(_) => build(
            RedisStore::<T>::builder()
                .prefix(redis_prefix::<T>())
                .connect_cluster(redis_cluster_nodes())
                .await?,
            cache,
        ),
    })
}

/// Deletes this run's keys (their names end in the process id): a run of
/// the first-visit route alone leaves millions of sessions, which would
/// otherwise stay until they expire.
async fn remove_redis_keys() {
    let pattern = format!("*_{}:*", std::process::id());
    let mut nodes = vec![redis_url()];
    nodes.extend(redis_cluster_nodes());
    for node in nodes {
        let removed = async {
            let mut connection = redis::Client::open(node.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let mut cursor = 0u64;
            let mut removed = 0usize;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(10_000)
                    .query_async(&mut connection)
                    .await?;
                if !keys.is_empty() {
                    removed += keys.len();
                    // One key per command: on a Cluster node, keys of
                    // several slots cannot share one.
                    let mut unlink = redis::pipe();
                    for key in &keys {
                        unlink.cmd("UNLINK").arg(key).ignore();
                    }
                    let () = unlink.query_async(&mut connection).await?;
                }
                if next == 0 {
                    return Ok::<_, anyhow::Error>(removed);
                }
                cursor = next;
            }
        }
        .await;
        match removed {
            Ok(count) if count > 0 => eprintln!("removed {count} keys of this run from {node}"),
            Ok(_) => {}
            Err(error) => eprintln!("could not remove this run's keys from {node}: {error}"),
        }
    }
}

/// This run's keys of a struct's sessions.
fn redis_prefix<T: SessionData>() -> String {
    format!("{}_{}", T::SCHEMA.table, std::process::id())
}

fn main() -> anyhow::Result<()> {
    common::load_generator(run())
}

async fn run() -> anyhow::Result<()> {
    let seconds: f64 = common::setting("BENCH_SECONDS", 5.0);
    let duration = Duration::from_secs_f64(seconds);
    let client = common::client(IN_FLIGHT);
    let rounds: usize = common::setting("BENCH_ROUNDS", 3);
    let mut failures = Vec::new();

    eprintln!(
        "loadbench: {USERS} users, {IN_FLIGHT} in flight, {rounds} rounds of {seconds} s per scenario"
    );
    let mut targets = Vec::new();
    let start = |app: Router, name: String, db: Option<Db>, kind: &'static str| async move {
        let (address, _server) = serve(app).await?;
        Ok::<_, anyhow::Error>(Target {
            name,
            db,
            kind,
            address,
        })
    };
    targets.push(start(bare(), "bare".into(), None, "bare").await?);
    targets.push(
        start(
            with_sessions(axum_typed_session::MemoryStore::<Visit>::new()),
            "session/memory".into(),
            None,
            "session",
        )
        .await?,
    );
    let dbs = std::env::var("BENCH_DBS")
        .unwrap_or_default()
        .to_lowercase();
    let routes_filter = std::env::var("BENCH_ROUTES")
        .unwrap_or_default()
        .to_lowercase();
    let routes: Vec<Route> = Route::ALL
        .into_iter()
        .filter(|route| routes_filter.is_empty() || routes_filter.contains(&route.path()[1..]))
        .collect();
    for db in [
        Db::Sqlite,
        Db::Postgres,
        Db::MySql,
        Db::Redis,
        Db::RedisCluster,
    ] {
        if !dbs.is_empty() && !dbs.split(',').any(|name| name.trim() == db.key()) {
            continue;
        }
        // Pools live on the server's runtime, like the app that uses them.
        let pool = match server_runtime().spawn(connect(db)).await? {
            Ok(pool) => pool,
            Err(error) => {
                eprintln!("SKIPPED {}: unreachable ({error})", db.name());
                continue;
            }
        };
        let (session, cached) = {
            let pool = pool.clone();
            server_runtime()
                .spawn(async move {
                    pool.reset().await?;
                    let session = session_app(&pool, false).await?;
                    let cached = session_app(&pool, true).await?;
                    Ok::<_, anyhow::Error>((session, cached))
                })
                .await??
        };
        targets.push(
            start(
                raw_sqlx(pool.clone()),
                match db {
                    Db::Redis | Db::RedisCluster => format!("raw redis-rs/{}", db.name()),
                    _ => format!("raw sqlx/{}", db.name()),
                },
                Some(db),
                "raw",
            )
            .await?,
        );
        if matches!(db, Db::Redis | Db::RedisCluster) {
            let pool = server_runtime()
                .spawn(RedisPool::open(db == Db::RedisCluster))
                .await??;
            targets.push(
                start(
                    raw_sqlx(RawPool::RedisPooled(std::sync::Arc::new(pool))),
                    format!("raw redis-rs pooled/{}", db.name()),
                    Some(db),
                    "raw_pooled",
                )
                .await?,
            );
        }
        let mut sessions = vec![("session", session), ("session+cache", cached)];
        if db == Db::Redis {
            // The client cache kept exact by Redis's invalidations: safe
            // with several instances, unlike `session+cache`.
            let tracked = server_runtime()
                .spawn(async move {
                    let store = RedisStore::<TrackedVisit>::builder()
                        .prefix(redis_prefix::<TrackedVisit>())
                        .client_cache(100_000)
                        .connect(&redis_url())
                        .await?;
                    Ok::<_, anyhow::Error>(with_sessions::<TrackedVisit, _>(store))
                })
                .await??;
            sessions.push(("session+client cache", tracked));
        }
        if db == Db::RedisCluster && std::env::var("BENCH_WAIT").is_ok_and(|value| value == "1") {
            // The suite's Cluster has a replica per master.
            let waited = server_runtime()
                .spawn(async move {
                    let store = RedisStore::<WaitedVisit>::builder()
                        .prefix(redis_prefix::<WaitedVisit>())
                        .wait_for_replicas(1, Duration::from_secs(1))
                        .connect_cluster(redis_cluster_nodes())
                        .await?;
                    Ok::<_, anyhow::Error>(with_sessions::<WaitedVisit, _>(store))
                })
                .await??;
            sessions.push(("session+wait_for_replicas(1)", waited));
        }
        if std::env::var("BENCH_INDEX_COST").is_ok_and(|value| value == "1") {
            let (plain, indexed) = {
                let pool = pool.clone();
                server_runtime()
                    .spawn(async move {
                        let plain = session_app_of::<UserVisit>(&pool, false).await?;
                        let indexed = session_app_of::<IndexedVisit>(&pool, false).await?;
                        Ok::<_, anyhow::Error>((plain, indexed))
                    })
                    .await??
            };
            sessions.extend([("session+user", plain), ("session+indexed user", indexed)]);
        }
        for (label, app) in sessions {
            let name = format!("{label}/{}", db.name());
            targets.push(start(app, name, Some(db), "session").await?);
        }
    }

    if let Ok(wanted) = std::env::var("BENCH_TARGETS") {
        targets.retain(|target| {
            wanted
                .split(',')
                .any(|part| target.name.contains(part.trim()))
        });
    }
    // Each round measures one route on every server back to back, so a
    // ratio compares runs seconds apart; each figure is the median over the
    // rounds (ratios: of the per-round ratios).
    let mut samples: Vec<Vec<(f64, u32, u32, u64)>> =
        vec![Vec::new(); targets.len() * routes.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (r, &route) in routes.iter().enumerate() {
            // Every other round in reverse, so that a drift of the machine
            // over a round's minute favours neither the servers run first
            // (the baselines) nor those run last.
            for turn in 0..targets.len() {
                let t = if round % 2 == 0 {
                    turn
                } else {
                    targets.len() - 1 - turn
                };
                let target = &targets[t];
                let (rps, latencies, errors) =
                    measure_once(&client, target, route, duration, &mut failures).await?;
                samples[t * routes.len() + r].push((
                    rps,
                    percentile(&latencies, 0.5),
                    percentile(&latencies, 0.99),
                    errors,
                ));
            }
        }
    }
    let mut rows = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        for (r, &route) in routes.iter().enumerate() {
            let runs = &samples[t * routes.len() + r];
            let mut rps: Vec<f64> = runs.iter().map(|s| s.0).collect();
            let mut p50: Vec<f64> = runs.iter().map(|s| s.1 as f64).collect();
            let mut p99: Vec<f64> = runs.iter().map(|s| s.2 as f64).collect();
            rows.push(Row {
                route,
                target: target.name.clone(),
                db: target.db,
                kind: target.kind,
                rounds: runs.iter().map(|s| s.0).collect(),
                rps: median(&mut rps),
                p50: median(&mut p50) as u32,
                p99: median(&mut p99) as u32,
                errors: runs.iter().map(|s| s.3).sum(),
            });
        }
    }

    println!(
        "| route | server | req/s | p50 µs | p99 µs | × bare | × raw | p99 × raw | × raw pooled |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let bare = rows
            .iter()
            .find(|r| r.kind == "bare" && r.route == row.route);
        let raw = rows.iter().find(|r| {
            r.kind == "raw" && r.route == row.route && r.db == row.db && row.db.is_some()
        });
        let ratio = |base: Option<&Row>| {
            base.map_or("—".to_owned(), |base| format!("{:.2}", row.ratio(base)))
        };
        let pooled = rows.iter().find(|r| {
            r.kind == "raw_pooled" && r.route == row.route && r.db == row.db && row.db.is_some()
        });
        let p99_ratio = raw.map_or("—".to_owned(), |raw| {
            format!("{:.2}", row.p99 as f64 / raw.p99.max(1) as f64)
        });
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |{}",
            row.route.path(),
            row.target,
            row.rps,
            row.p50,
            row.p99,
            ratio(bare),
            if row.kind == "session" {
                ratio(raw)
            } else {
                "—".into()
            },
            if row.kind == "session" {
                p99_ratio
            } else {
                "—".into()
            },
            if row.kind == "session" {
                ratio(pooled)
            } else {
                "—".into()
            },
            if row.errors > 0 {
                format!(" {} errors", row.errors)
            } else {
                String::new()
            },
        );
    }
    remove_sqlite_files();
    if dbs.is_empty() || dbs.contains("redis") {
        server_runtime().spawn(remove_redis_keys()).await?;
    }
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("FAILED: {failure}");
        }
        std::process::exit(1);
    }
    eprintln!("correctness: every counter answer and every stored count matched");
    Ok(())
}
