//! One Redis store call against the hand-written command it replaces, on
//! the same server: latency one at a time, and throughput with 32 at once.
//! Isolates the store's own cost from the HTTP stack's.
//!
//! ```sh
//! cargo run --release -p bench --bin redis_ops
//! ```

use std::time::{Duration, Instant};

use axum_typed_session::{
    DirtyFields, Record, RedisStore, Session, SessionStore, SessionToken, Update,
};
use chrono::Utc;

#[derive(Session, Default)]
#[session(table = "ops_sessions")]
struct Visit {
    count: i64,
}

const OPS: usize = 20_000;

async fn timed<F, Fut>(label: &str, concurrency: usize, op: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let per_task = OPS / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                for n in 0..per_task {
                    op(task * per_task + n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let took = started.elapsed();
    println!(
        "| {label} | {concurrency} | {:.1} µs | {:.0} ops/s |",
        took.as_secs_f64() * 1e6 / OPS as f64 * concurrency as f64,
        OPS as f64 / took.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = RedisStore::<Visit>::builder()
        .prefix(format!("ops_{}", std::process::id()))
        .connect(&url)
        .await?;
    let raw = redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
    let now = Utc::now();
    let ids: Vec<_> = (0..64).map(|_| SessionToken::generate().id()).collect();
    for id in &ids {
        store
            .insert(&Record {
                id: *id,
                data: Visit { count: 0 },
                version: 1,
                expires_at: now + chrono::Duration::minutes(10),
                created_at: now,
                remember: false,
            })
            .await?;
    }
    println!("| call | at once | latency | throughput |");
    println!("|---|---:|---:|---:|");
    for concurrency in [1, 32] {
        let (s, i) = (store.clone(), ids.clone());
        timed("store.load", concurrency, move |n| {
            let (s, id) = (s.clone(), i[n % 64]);
            async move {
                s.load(&id, Utc::now()).await.unwrap();
            }
        })
        .await;
        let (r, s, i) = (raw.clone(), store.clone(), ids.clone());
        timed("raw HGETALL", concurrency, move |n| {
            let (mut r, key) = (r.clone(), s.key_of(&i[n % 64]));
            async move {
                let _: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(&mut r)
                    .await
                    .unwrap();
            }
        })
        .await;
        let (s, i) = (store.clone(), ids.clone());
        timed("store.update (one field)", concurrency, move |n| {
            let (s, id) = (s.clone(), i[n % 64]);
            async move {
                let mut dirty = DirtyFields::NONE;
                dirty.insert(0);
                let update = Update {
                    dirty,
                    expected_version: None,
                    expires_at: None,
                    new_id: None,
                    remember: None,
                    now: Utc::now(),
                };
                assert!(
                    s.update(&id, &Visit { count: n as i64 }, update)
                        .await
                        .unwrap()
                );
            }
        })
        .await;
        let (r, s, i) = (raw.clone(), store.clone(), ids.clone());
        timed("raw HSET", concurrency, move |n| {
            let (mut r, key) = (r.clone(), s.key_of(&i[n % 64]));
            async move {
                let _: i64 = redis::cmd("HSET")
                    .arg(key)
                    .arg("count")
                    .arg(n)
                    .query_async(&mut r)
                    .await
                    .unwrap();
            }
        })
        .await;
    }
    for id in &ids {
        store.delete(id).await?;
    }
    let _ = Duration::ZERO;
    Ok(())
}
