//! Memory per idle session in Redis, for the load bench's struct (one
//! `count` field): `MEMORY USAGE` of a session's keys (its hash), and the
//! server's `used_memory` growth per session over 10,000 sessions.
//!
//! ```sh
//! cargo run --release -p bench --bin redis_memory
//! ```
//!
//! `TEST_REDIS_URL` (default: the local server).

use axum_typed_session::{Record, RedisStore, Session, SessionStore, SessionToken};
use chrono::Utc;

#[derive(Session, Default)]
#[session(table = "bench_sessions")]
struct Visit {
    count: i64,
}

/// The same with an indexed user, as a signed-in session: its hash plus its
/// entry in the user's sorted set.
#[derive(Session, Default)]
#[session(table = "bench_user_sessions")]
struct UserVisit {
    count: i64,
    #[session(index)]
    user: Option<i64>,
}

const SESSIONS: usize = 10_000;

async fn used_memory(connection: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(connection)
        .await?;
    let line = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO"))?;
    Ok(line.trim().parse()?)
}

async fn measure<T: axum_typed_session::SessionData>(
    url: &str,
    label: &str,
    data: impl Fn(usize) -> T,
) -> anyhow::Result<()> {
    let prefix = format!("memory_{}_{}", T::SCHEMA.table, std::process::id());
    let store = RedisStore::<T>::builder()
        .prefix(&prefix)
        .connect(url)
        .await?;
    let mut connection = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let before = used_memory(&mut connection).await?;
    let now = Utc::now();
    let mut ids = Vec::with_capacity(SESSIONS);
    for n in 0..SESSIONS {
        let id = SessionToken::generate().id();
        store
            .insert(&Record {
                id,
                data: data(n),
                version: 1,
                expires_at: now + chrono::Duration::minutes(10),
                created_at: now,
                remember: false,
            })
            .await?;
        ids.push(id);
    }
    let after = used_memory(&mut connection).await?;
    let mut usage = 0i64;
    for id in ids.iter().take(100) {
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(store.key_of(id))
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut connection)
            .await?;
        usage += bytes;
    }
    println!(
        "| {label} | {} | {:.0} |",
        usage / 100,
        (after - before) as f64 / SESSIONS as f64
    );
    for id in &ids {
        store.delete(id).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    println!(
        "| session | MEMORY USAGE of its hash, bytes | used_memory growth per session, bytes |"
    );
    println!("|---|---:|---:|");
    measure(&url, "`count: i64` (the load bench's)", |n| Visit {
        count: n as i64,
    })
    .await?;
    measure(&url, "`count: i64` + indexed `user` (1,000 users)", |n| {
        UserVisit {
            count: n as i64,
            user: Some((n % 1000) as i64),
        }
    })
    .await?;
    Ok(())
}
