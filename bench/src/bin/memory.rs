//! Resident memory of idle sessions in the memory store.
//!
//! ```sh
//! cargo run --release -p bench --bin memory
//! ```
//!
//! Inserts 100,000 sessions of a small struct (an i64, an optional i64 and a
//! 16-byte string) and of an empty-ish one, and reports the growth of the
//! process's resident set (`/proc/self/statm`) per session.

use axum_typed_session::{MemoryStore, Record, Session, SessionStore, SessionToken};
use chrono::Utc;

#[derive(Session, Default)]
struct Small {
    count: i64,
    user_id: Option<i64>,
    name: String,
}

#[derive(Session, Default)]
struct Tiny {
    flag: bool,
}

const SESSIONS: usize = 100_000;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

async fn fill<T: axum_typed_session::SessionData>(
    make: impl Fn(usize) -> T,
) -> (MemoryStore<T>, u64) {
    let store = MemoryStore::<T>::new();
    let before = resident_bytes();
    let now = Utc::now();
    for index in 0..SESSIONS {
        store
            .insert(&Record {
                id: SessionToken::generate().id(),
                data: make(index),
                version: 1,
                expires_at: now + chrono::Duration::hours(1),
                created_at: now,
                remember: false,
            })
            .await
            .expect("memory insert");
    }
    (store, resident_bytes().saturating_sub(before))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (small_store, small) = fill(|index| Small {
        count: index as i64,
        user_id: Some(42),
        name: format!("user-{index:011}"),
    })
    .await;
    let (tiny_store, tiny) = fill(|_| Tiny { flag: true }).await;
    println!("| struct | sessions | resident growth | per session |");
    println!("|---|---:|---:|---:|");
    for (name, bytes) in [
        ("Small (i64, Option<i64>, 16-byte String)", small),
        ("Tiny (bool)", tiny),
    ] {
        println!(
            "| {name} | {SESSIONS} | {:.1} MiB | {} B |",
            bytes as f64 / (1024.0 * 1024.0),
            bytes / SESSIONS as u64
        );
    }
    assert_eq!(small_store.len() + tiny_store.len(), 2 * SESSIONS);
}
