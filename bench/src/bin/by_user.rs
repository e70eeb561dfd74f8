//! Listing a user's sessions at 10,000 and at 100,000 rows (10 sessions per
//! user): the time should be flat, because the query is one statement on
//! the column's index, not a scan.
//!
//! ```sh
//! cargo run --release -p bench --bin by_user
//! ```
//!
//! Databases: `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` (defaults: the local
//! servers); an SQLite file in the temporary directory.

use std::time::{Duration, Instant};

use axum_typed_session::{MySqlStore, PgStore, Session, SessionQueries, SessionStore, SqliteStore};
use sqlx::Executor as _;

#[derive(Session, Default)]
#[session(table = "bench_by_user")]
struct Listed {
    #[session(index)]
    user_id: Option<i64>,
    count: i64,
}

const SESSIONS_PER_USER: i64 = 10;
const LOOKUPS: usize = 1000;

/// The INSERT that fills the table to `rows` rows, in one statement.
fn fill(dialect: &str, rows: i64) -> String {
    let users = rows / SESSIONS_PER_USER;
    match dialect {
        "postgres" => format!(
            "INSERT INTO \"bench_by_user\" (\"id\", \"expires_at\", \"version\", \"created_at\", \"remember\", \"user_id\", \"count\") \
             SELECT decode(lpad(to_hex(g), 64, '0'), 'hex'), now() + interval '1 day', 1, now(), false, g % {users}, 0 \
             FROM generate_series(1, {rows}) g"
        ),
        "sqlite" => format!(
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {rows}) \
             INSERT INTO \"bench_by_user\" (\"id\", \"expires_at\", \"version\", \"created_at\", \"remember\", \"user_id\", \"count\") \
             SELECT randomblob(32), 9999999999999, 1, 0, 0, g % {users}, 0 FROM s"
        ),
        // MariaDB stops a recursive CTE at 1000 rows: 1000 times `rows / 1000`.
        _ => format!(
            "INSERT INTO `bench_by_user` (`id`, `expires_at`, `version`, `created_at`, `remember`, `user_id`, `count`) \
             WITH RECURSIVE a(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM a WHERE g < 999), \
             b(h) AS (SELECT 0 UNION ALL SELECT h + 1 FROM b WHERE h < {} - 1) \
             SELECT UNHEX(SHA2(g + 1000 * h, 256)), NOW() + INTERVAL 1 DAY, 1, NOW(), FALSE, (g + 1000 * h) % {users}, 0 \
             FROM a, b",
            rows / 1000
        ),
    }
}

/// Median and 99th percentile of listing a random user's sessions.
async fn measure<S: SessionStore<Listed>>(store: &S, users: i64) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(LOOKUPS);
    for lookup in 0..LOOKUPS {
        let user = (lookup as i64 * 7919) % users;
        let started = Instant::now();
        let found = store
            .sessions_by(&Listed::USER_ID, &user)
            .await
            .expect("list");
        times.push(started.elapsed());
        assert_eq!(found.len() as i64, SESSIONS_PER_USER, "user {user}");
    }
    times.sort();
    (times[LOOKUPS / 2], times[LOOKUPS * 99 / 100])
}

async fn run<S: SessionStore<Listed>>(
    name: &str,
    dialect: &str,
    store: S,
    execute: impl AsyncFn(&str),
) {
    let mut figures = Vec::new();
    for rows in [10_000, 100_000] {
        execute("DELETE FROM bench_by_user").await;
        execute(&fill(dialect, rows)).await;
        if dialect == "postgres" {
            execute("ANALYZE bench_by_user").await;
        }
        // Warm the statement cache and the pages.
        measure(&store, rows / SESSIONS_PER_USER).await;
        let (median, p99) = measure(&store, rows / SESSIONS_PER_USER).await;
        println!(
            "| {name} | {rows} | {:.0} | {:.0} |",
            micros(median),
            micros(p99)
        );
        figures.push(median);
    }
    println!(
        "| {name} | 100k / 10k median | {:.2} | |",
        figures[1].as_secs_f64() / figures[0].as_secs_f64()
    );
    // What the index buys: the same lookups at 100,000 rows without it.
    execute(if dialect == "mysql" {
        "DROP INDEX bench_by_user_user_id_idx ON bench_by_user"
    } else {
        "DROP INDEX bench_by_user_user_id_idx"
    })
    .await;
    let (median, p99) = measure(&store, 100_000 / SESSIONS_PER_USER).await;
    println!(
        "| {name} | 100000, no index (a scan) | {:.0} | {:.0} |",
        micros(median),
        micros(p99)
    );
    println!(
        "| {name} | scan / index at 100k, median | {:.1} | |",
        median.as_secs_f64() / figures[1].as_secs_f64()
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("| store | rows | median µs | p99 µs |\n|---|---:|---:|---:|");
    let path = std::env::temp_dir().join(format!("bench_by_user_{}.db", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = SqliteStore::<Listed>::connect(&url).await?;
    store.migrate().await?;
    let pool = store.pool().clone();
    run("SQLite", "sqlite", store, async |sql: &str| {
        pool.execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .expect(sql);
    })
    .await;
    let _ = std::fs::remove_file(&path);

    let url = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match PgStore::<Listed>::connect(&url).await {
        Ok(store) => {
            let pool = store.pool().clone();
            pool.execute("DROP TABLE IF EXISTS bench_by_user").await?;
            store.migrate().await?;
            run("PostgreSQL", "postgres", store, async |sql: &str| {
                pool.execute(sqlx::AssertSqlSafe(sql.to_owned()))
                    .await
                    .expect(sql);
            })
            .await;
            pool.execute("DROP TABLE bench_by_user").await?;
        }
        Err(error) => println!("PostgreSQL skipped: {error}"),
    }
    let url = std::env::var("TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    match MySqlStore::<Listed>::connect(&url).await {
        Ok(store) => {
            let pool = store.pool().clone();
            pool.execute("DROP TABLE IF EXISTS bench_by_user").await?;
            store.migrate().await?;
            run("MariaDB", "mysql", store, async |sql: &str| {
                pool.execute(sqlx::AssertSqlSafe(sql.to_owned()))
                    .await
                    .expect(sql);
            })
            .await;
            pool.execute("DROP TABLE bench_by_user").await?;
        }
        Err(error) => println!("MariaDB skipped: {error}"),
    }
    Ok(())
}
