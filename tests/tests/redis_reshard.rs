//! Slots move between Cluster masters under a steady load of counter
//! requests (`redis-cli --cluster reshard`), so the store's per-master
//! groups meet `ASK` while a slot migrates and `MOVED` once it has moved,
//! with a slot map that is stale until read again. On a Cluster of the
//! test's own (ports 7200–7205, started and stopped here).
//!
//! First the slots of the sessions on one master move to another, one by
//! one, the way `redis-cli --cluster reshard` moves them (`SETSLOT
//! IMPORTING` / `MIGRATING`, `MIGRATE` of each key, `SETSLOT NODE`), with
//! a pause while each migrates; then 2000 more slots move by `redis-cli
//! --cluster reshard` itself. Asserted: every request succeeds, every
//! answer is the client's previous count plus one, every stored count is
//! the last one answered, and the sessions of the first master moved.

use std::{
    collections::HashMap,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum_typed_session::{RedisStore, SessionStore, SessionToken};
use conformance_tests::{
    Client, OwnCluster,
    counter::{Visit, app},
};
use http::StatusCode;

const BASE: u16 = 7200;
const CLUSTER: OwnCluster = OwnCluster {
    base: BASE,
    tls: false,
    password: None,
};
const CLIENTS: usize = 16;
/// Of a master's 5461 slots.
const MOVED_SLOTS: usize = 2000;

/// A master: its node id and port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Master {
    id: String,
    port: u16,
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("a node")
}

/// The master of each slot, from `CLUSTER SLOTS`.
async fn owners() -> HashMap<u16, Master> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut node(BASE).await)
        .await
        .expect("CLUSTER SLOTS");
    let mut owners = HashMap::new();
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
            (parts.first(), parts.get(1))
        else {
            continue;
        };
        let Some(redis::Value::Array(master)) = parts.get(2) else {
            continue;
        };
        let (Some(redis::Value::Int(port)), Some(redis::Value::BulkString(id))) =
            (master.get(1), master.get(2))
        else {
            continue;
        };
        let master = Master {
            id: String::from_utf8_lossy(id).into_owned(),
            port: *port as u16,
        };
        for slot in *start..=*end {
            owners.insert(slot as u16, master.clone());
        }
    }
    owners
}

/// Moves `slot` from `from` to `to` as `redis-cli --cluster reshard` does,
/// pausing while it migrates so that requests meet `ASK`.
async fn migrate(slot: u16, from: &Master, to: &Master, masters: &[Master]) {
    let setslot = |state: &str, id: &str| {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
        cmd
    };
    let (mut source, mut target) = (node(from.port).await, node(to.port).await);
    let () = setslot("IMPORTING", &from.id)
        .query_async(&mut target)
        .await
        .expect("IMPORTING");
    let () = setslot("MIGRATING", &to.id)
        .query_async(&mut source)
        .await
        .expect("MIGRATING");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query_async(&mut source)
        .await
        .expect("GETKEYSINSLOT");
    for key in keys {
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to.port)
            .arg(key)
            .arg(0)
            .arg(5000)
            .query_async(&mut source)
            .await
            .expect("MIGRATE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for master in masters {
        let () = setslot("NODE", &to.id)
            .query_async(&mut node(master.port).await)
            .await
            .expect("SETSLOT NODE");
    }
}

async fn key_slot(key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut node(BASE).await)
        .await
        .expect("CLUSTER KEYSLOT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_move_under_load() {
    if !CLUSTER.start_for("slots_move_under_load") {
        return;
    }
    let store = RedisStore::<Visit>::connect_cluster(CLUSTER.nodes())
        .await
        .expect("connect");
    let app = app(store.clone());
    let before = owners().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (keys, mut keyed) = tokio::sync::mpsc::unbounded_channel();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (app, stop, keys) = (app.clone(), stop.clone(), keys.clone());
            let store = store.clone();
            tokio::spawn(async move {
                let mut client = Client::new(app, "session");
                let (mut count, mut failures, mut reported) = (0i64, Vec::new(), false);
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.get("/visit").await;
                    match (reply.status, reply.body.parse::<i64>()) {
                        (StatusCode::OK, Ok(answer)) if answer == count + 1 => count = answer,
                        _ => failures
                            .push(format!("{} {:?} after {count}", reply.status, reply.body)),
                    }
                    if count > 0 && !reported {
                        reported = true;
                        let token = client.token.as_deref().expect("a session");
                        let id = SessionToken::parse(token).expect("a token").id();
                        let _ = keys.send(store.key_of(&id));
                    }
                }
                (client, count, failures)
            })
        })
        .collect();
    let mut slots = Vec::new();
    for _ in 0..CLIENTS {
        slots.push(key_slot(&keyed.recv().await.expect("a session key")).await);
    }
    // The sessions on the first one's master move to another master.
    let from = before[&slots[0]].clone();
    let masters: Vec<Master> = {
        let mut masters: Vec<Master> = before.values().cloned().collect();
        masters.sort_by_key(|master| master.port);
        masters.dedup();
        masters
    };
    let to = masters
        .iter()
        .find(|master| **master != from)
        .unwrap()
        .clone();
    let mut theirs: Vec<u16> = slots
        .iter()
        .copied()
        .filter(|slot| before[slot] == from)
        .collect();
    theirs.sort_unstable();
    theirs.dedup();
    for slot in &theirs {
        migrate(*slot, &from, &to, &masters).await;
    }
    let middle = owners().await;
    assert!(
        theirs.iter().all(|slot| middle[slot] == to),
        "the sessions' slots are on the other master"
    );
    // Then many slots at once, from the master of slot 0 to that of the last.
    let (from, to) = (before[&0].id.clone(), before[&16383].id.clone());
    let resharded = tokio::task::spawn_blocking(move || {
        Command::new("redis-cli")
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{BASE}"),
                "--cluster-from",
                &from,
                "--cluster-to",
                &to,
                "--cluster-slots",
                &MOVED_SLOTS.to_string(),
                "--cluster-yes",
            ])
            .output()
            .expect("redis-cli --cluster reshard")
    })
    .await
    .unwrap();
    assert!(
        resharded.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&resharded.stderr)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let after = owners().await;
    let mut requests = 0;
    for worker in workers {
        let (client, count, failures) = worker.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        requests += count;
        let id = SessionToken::parse(client.token.as_deref().expect("a session"))
            .expect("a token")
            .id();
        let stored = store
            .load(&id, chrono::Utc::now())
            .await
            .expect("load")
            .expect("the session");
        assert_eq!(
            stored.data.count, count,
            "the stored count is the last answered"
        );
    }
    let moved = slots
        .iter()
        .filter(|slot| before[slot] != after[slot])
        .count();
    let _ = CLUSTER.run("stop");
    let stats = store.pipeline_stats();
    eprintln!(
        "reshard: {} slots of sessions moved one by one, then {MOVED_SLOTS} by redis-cli, under load; {requests} requests, none failed; {moved} of {CLIENTS} sessions are on another master now; {stats:?}",
        theirs.len()
    );
    assert!(
        stats.grouped > stats.alone,
        "the requests went in groups, the redirected ones on their own: {stats:?}"
    );
}
