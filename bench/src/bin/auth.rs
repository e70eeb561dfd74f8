//! What sign-in costs on a protected route, over loopback, in one run: the
//! same `GET /me` served bare, with the session alone (the row read, no
//! user), with `AuthSession` and the user cache on, and with it off (one
//! `get_user` query per request). Reported as req/s, p50 and p99, as ratios
//! to bare and to the session alone (median of the per-round ratios), and
//! the extra round trip of the cache-off server as the p50 difference.
//!
//! ```sh
//! cargo run --release -p bench --bin auth
//! BENCH_DBS=sqlite,postgres BENCH_SECONDS=3 BENCH_ROUNDS=3 cargo run --release -p bench --bin auth
//! ```
//!
//! 64 signed-in users, 32 requests in flight; every answer must be the
//! user's own name, or the run fails. Databases: `TEST_POSTGRES_URL` /
//! `TEST_MYSQL_URL` (defaults: the local servers); the users table is on the
//! same database as the sessions, as an app's usually is.

#[path = "../common.rs"]
mod common;

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::Query,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use axum_typed_session::{
    MySqlStore, PgStore, Session, SessionConfig, SessionLayer, SessionStore, SqliteStore,
    auth::{AuthData, AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId},
    login_required,
};
use common::{HttpClient, median, percentile, request, serve, server_runtime, settle};
use serde::Deserialize;

const USERS: i64 = 64;
const IN_FLIGHT: usize = 32;

#[derive(Clone, Debug)]
struct User {
    id: i64,
    name: String,
    hash: String,
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        self.hash.as_bytes()
    }
}

/// The users table, on the bench's database.
#[derive(Clone)]
enum Users {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

#[derive(Debug)]
struct UsersError(sqlx::Error);

impl std::fmt::Display for UsersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "users table: {}", self.0)
    }
}

impl std::error::Error for UsersError {}

type Row = (i64, String, String);

impl AuthnBackend for Users {
    type User = User;
    /// The bench signs users in by id: password hashing is not what is measured.
    type Credentials = i64;
    type Error = UsersError;

    async fn authenticate(&self, id: i64) -> Result<Option<User>, UsersError> {
        self.get_user(&id).await
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, UsersError> {
        // The same query on each driver; PostgreSQL numbers its placeholders.
        macro_rules! fetch {
            ($pool:expr, $sql:literal) => {
                sqlx::query_as($sql).bind(id).fetch_optional($pool).await
            };
        }
        let row: Option<Row> = match self {
            Users::Sqlite(pool) => {
                fetch!(pool, "SELECT id, name, hash FROM bench_users WHERE id = ?")
            }
            Users::Postgres(pool) => {
                fetch!(pool, "SELECT id, name, hash FROM bench_users WHERE id = $1")
            }
            Users::MySql(pool) => {
                fetch!(pool, "SELECT id, name, hash FROM bench_users WHERE id = ?")
            }
        }
        .map_err(UsersError)?;
        Ok(row.map(|(id, name, hash)| User { id, name, hash }))
    }
}

const CREATE_USERS: &str = "CREATE TABLE IF NOT EXISTS bench_users (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, hash VARCHAR(128) NOT NULL)";

/// Connects, creates the users and empties the sessions table.
async fn open(db: String) -> anyhow::Result<Users> {
    let insert = |id: i64| {
        format!(
            "INSERT INTO bench_users (id, name, hash) VALUES ({id}, 'user{id}', '$argon2id$v=19$m=19456,t=2,p=1$bench{id}')"
        )
    };
    let users = match db.as_str() {
        "sqlite" => {
            let path = std::env::temp_dir().join(format!("authbench_{}.db", std::process::id()));
            let pool =
                sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            Users::Sqlite(pool)
        }
        "postgres" => Users::Postgres(
            sqlx::PgPool::connect(
                &std::env::var("TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            )
            .await?,
        ),
        _ => Users::MySql(
            sqlx::MySqlPool::connect(
                &std::env::var("TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
            )
            .await?,
        ),
    };
    macro_rules! setup {
        ($pool:expr, $store:ty) => {{
            let pool = $pool;
            sqlx::query("DROP TABLE IF EXISTS bench_users")
                .execute(pool)
                .await?;
            sqlx::query(CREATE_USERS).execute(pool).await?;
            for id in 1..=USERS {
                sqlx::query(sqlx::AssertSqlSafe(insert(id)))
                    .execute(pool)
                    .await?;
            }
            <$store>::new(pool.clone()).migrate().await?;
            sqlx::query("DELETE FROM auth_sessions")
                .execute(pool)
                .await?;
        }};
    }
    match &users {
        Users::Sqlite(pool) => setup!(pool, SqliteStore<AuthData>),
        Users::Postgres(pool) => setup!(pool, PgStore<AuthData>),
        Users::MySql(pool) => setup!(pool, MySqlStore<AuthData>),
    }
    Ok(users)
}

#[derive(Deserialize)]
struct SignIn {
    id: i64,
}

async fn login(mut auth: AuthSession<Users>, Query(SignIn { id }): Query<SignIn>) -> Response {
    match auth.authenticate(id).await {
        Ok(Some(user)) => match auth.login(&user).await {
            Ok(()) => user.name.into_response(),
            Err(error) => error.into_response(),
        },
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Err(error) => error.into_response(),
    }
}

/// The protected route, with sign-in: the user's name.
fn with_auth<S: SessionStore<AuthData>>(store: S, users: Users, cache: bool) -> Router {
    let config = SessionConfig::default()
        .with_secure(false)
        .with_purge_interval(None);
    let mut auth = AuthManagerLayerBuilder::new(users, SessionLayer::new(store, config));
    if cache {
        auth = auth.with_user_cache(Duration::from_secs(600));
    }
    Router::new()
        .route(
            "/me",
            get(|auth: AuthSession<Users>| async move {
                auth.user().await.map(|user| user.name).unwrap_or_default()
            }),
        )
        .route_layer(login_required!(Users))
        .route("/login", get(login))
        .layer(auth.build())
}

/// The same route reading the session alone: what the row costs without
/// the user. Answers the name from the stored id (`user<id>`).
fn session_only<S: SessionStore<AuthData>>(store: S) -> Router {
    let config = SessionConfig::default()
        .with_secure(false)
        .with_purge_interval(None);
    Router::new()
        .route(
            "/me",
            get(|session: Session<AuthData>| async move {
                session
                    .user_id()
                    .map(|id| format!("user{id}"))
                    .unwrap_or_default()
            }),
        )
        .layer(SessionLayer::new(store, config))
}

fn bare() -> Router {
    // The answer is checked per user, so bare answers it from the cookie's
    // user, which the load generator sends in a header for bare only.
    Router::new().route(
        "/me",
        get(|headers: axum::http::HeaderMap| async move {
            headers
                .get("x-bench-user")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        }),
    )
}

async fn servers(users: Users) -> anyhow::Result<Vec<(&'static str, SocketAddr)>> {
    macro_rules! stores {
        ($pool:expr, $store:ty) => {{
            let store = <$store>::new($pool.clone());
            vec![
                ("session alone", serve(session_only(store.clone())).await?.0),
                (
                    "auth, cache on",
                    serve(with_auth(store.clone(), users.clone(), true))
                        .await?
                        .0,
                ),
                (
                    "auth, cache off",
                    serve(with_auth(store, users.clone(), false)).await?.0,
                ),
            ]
        }};
    }
    let mut all = vec![("bare", serve(bare()).await?.0)];
    all.extend(match &users {
        Users::Sqlite(pool) => stores!(pool, SqliteStore<AuthData>),
        Users::Postgres(pool) => stores!(pool, PgStore<AuthData>),
        Users::MySql(pool) => stores!(pool, MySqlStore<AuthData>),
    });
    Ok(all)
}

/// One signed-in user: its cookie and the name the route must answer.
struct Visitor {
    cookie: String,
    name: String,
}

async fn sign_in(client: &HttpClient, address: SocketAddr) -> anyhow::Result<Vec<Visitor>> {
    let mut visitors = Vec::new();
    for id in 1..=USERS {
        let (status, cookie, name) =
            request(client, address, &format!("/login?id={id}"), None).await?;
        anyhow::ensure!(status == StatusCode::OK, "sign-in failed: {status} {name}");
        visitors.push(Visitor {
            cookie: cookie.ok_or_else(|| anyhow::anyhow!("no cookie at sign-in"))?,
            name,
        });
    }
    Ok(visitors)
}

/// Requests `/me` for `duration`: latencies, and answers that were not the
/// user's name (or failed).
async fn load(
    client: &HttpClient,
    address: SocketAddr,
    visitors: &std::sync::Arc<Vec<Visitor>>,
    duration: Duration,
    bare: bool,
) -> (Vec<u32>, u64) {
    let deadline = std::time::Instant::now() + duration;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|worker| {
            let (client, visitors) = (client.clone(), visitors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut wrong = 0;
                let mut turn = worker;
                while std::time::Instant::now() < deadline {
                    let visitor = &visitors[turn % visitors.len()];
                    turn += IN_FLIGHT;
                    let started = std::time::Instant::now();
                    let answer = if bare {
                        common::request_with(
                            &client,
                            address,
                            "/me",
                            None,
                            &[("x-bench-user", &visitor.name)],
                        )
                        .await
                    } else {
                        request(&client, address, "/me", Some(&visitor.cookie)).await
                    };
                    match answer {
                        Ok((StatusCode::OK, _, body)) if body == visitor.name => latencies
                            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        _ => wrong += 1,
                    }
                }
                (latencies, wrong)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut wrong = 0;
    for worker in workers {
        let (latencies, errors) = worker.await.expect("worker");
        all.extend(latencies);
        wrong += errors;
    }
    all.sort_unstable();
    (all, wrong)
}

fn main() -> anyhow::Result<()> {
    common::load_generator(run())
}

async fn run() -> anyhow::Result<()> {
    let seconds: f64 = common::setting("BENCH_SECONDS", 3.0);
    let rounds: usize = common::setting("BENCH_ROUNDS", 3);
    let dbs = std::env::var("BENCH_DBS").unwrap_or_else(|_| "sqlite,postgres,mysql".into());
    let duration = Duration::from_secs_f64(seconds);
    let client = common::client(IN_FLIGHT);
    let mut failures = Vec::new();
    println!("| database | server | req/s | p50 µs | p99 µs | × bare | × session alone |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut extra = Vec::new();
    for db in dbs.split(',').map(str::trim) {
        let users = match server_runtime().spawn(open(db.to_owned())).await? {
            Ok(users) => users,
            Err(error) => {
                eprintln!("SKIPPED {db}: unreachable ({error})");
                continue;
            }
        };
        let servers = server_runtime().spawn(servers(users)).await??;
        // Sign in on the cache-off server; the session-alone server reads the same rows.
        let visitors = std::sync::Arc::new(sign_in(&client, servers[3].1).await?);
        let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); servers.len()];
        for _ in 0..rounds {
            for (index, (name, address)) in servers.iter().enumerate() {
                settle().await;
                let bare = *name == "bare";
                load(
                    &client,
                    *address,
                    &visitors,
                    Duration::from_millis(300),
                    bare,
                )
                .await;
                let (times, wrong) = load(&client, *address, &visitors, duration, bare).await;
                if wrong > 0 {
                    failures.push(format!("{db} {name}: {wrong} wrong or failed answers"));
                }
                eprintln!(
                    "  {db:<8} {name:<16} {:>9.0} req/s",
                    times.len() as f64 / seconds
                );
                per_round[index].push(times.len() as f64 / seconds);
                latencies[index] = times;
            }
        }
        let ratio = |a: usize, b: usize| {
            let mut ratios: Vec<f64> = per_round[a]
                .iter()
                .zip(&per_round[b])
                .map(|(x, y)| x / y.max(1.0))
                .collect();
            median(&mut ratios)
        };
        for (index, (name, _)) in servers.iter().enumerate() {
            let mut rps = per_round[index].clone();
            println!(
                "| {db} | {name} | {:.0} | {} | {} | {:.2} | {} |",
                median(&mut rps),
                percentile(&latencies[index], 0.5),
                percentile(&latencies[index], 0.99),
                ratio(index, 0),
                if index == 0 {
                    "—".to_owned()
                } else {
                    format!("{:.2}", ratio(index, 1))
                },
            );
        }
        extra.push(format!(
            "{db}: cache off − cache on, p50: {} µs; cache off ÷ cache on, req/s: {:.2}",
            i64::from(percentile(&latencies[3], 0.5)) - i64::from(percentile(&latencies[2], 0.5)),
            ratio(3, 2)
        ));
    }
    println!();
    for line in extra {
        println!("{line}");
    }
    if !failures.is_empty() {
        anyhow::bail!("failures:\n{}", failures.join("\n"));
    }
    Ok(())
}
