//! The Redis store's client cache (`RedisStoreBuilder::client_cache`) with
//! two app instances on one server, each with its own connection and cache,
//! as two processes would be: a browser's requests alternate between them,
//! and every answer must show every write that finished before it, from
//! either instance. The conformance cases also run with the cache on
//! (`redis_cached`); this file covers what takes two instances.

use std::time::Duration;

use axum::{Router, routing::get};
use axum_typed_session::{RedisStore, Session, SessionConfig, SessionLayer};
use conformance_tests::{Client, redis_cluster_nodes, redis_url};
use http::StatusCode;

#[derive(Session, Default, Debug)]
#[session(table = "cache_visits")]
struct Visit {
    count: i64,
    #[session(index)]
    user_id: Option<i64>,
}

const COOKIE: &str = "session";

fn app(store: RedisStore<Visit>) -> Router {
    Router::new()
        .route(
            "/visit",
            get(|visit: Session<Visit>| async move {
                let count = visit
                    .update_count(|count| {
                        *count += 1;
                        *count
                    })
                    .await?;
                Ok::<_, axum_typed_session::SessionError>(count.to_string())
            }),
        )
        .route(
            "/set/{count}",
            get(
                |visit: Session<Visit>, axum::extract::Path(count): axum::extract::Path<i64>| async move {
                    visit.set_count(count);
                    "set"
                },
            ),
        )
        .route(
            "/count",
            get(|visit: Session<Visit>| async move { visit.count().to_string() }),
        )
        .route(
            "/login/{user}",
            get(
                |visit: Session<Visit>, axum::extract::Path(user): axum::extract::Path<i64>| async move {
                    visit.set_user_id(Some(user));
                    "in"
                },
            ),
        )
        .route(
            "/logout",
            get(|visit: Session<Visit>| async move {
                visit.destroy();
                "out"
            }),
        )
        .layer(SessionLayer::new(
            store,
            SessionConfig::default()
                .with_cookie_name(COOKIE)
                .with_secure(false),
        ))
}

/// One instance's store: its own connection and cache.
async fn instance(prefix: &str) -> Result<RedisStore<Visit>, axum_typed_session::StoreError> {
    RedisStore::<Visit>::builder()
        .prefix(prefix)
        .client_cache(1_000)
        .timeout(Duration::from_secs(2))
        .connect(&redis_url())
        .await
}

/// Two instances on the same keys.
async fn two_instances(prefix: &str) -> Option<(RedisStore<Visit>, RedisStore<Visit>)> {
    match (instance(prefix).await, instance(prefix).await) {
        (Ok(a), Ok(b)) => Some((a, b)),
        _ => {
            // Reported (or failed, under CI) by the conformance fixture.
            let _ = <conformance_tests::Redis as conformance_tests::Backend>::open::<Visit>().await;
            None
        }
    }
}

fn prefix(test: &str) -> String {
    format!("{test}_{}_{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Requests alternate between the instances; each read-modify-write and
/// each read answers the latest value, though both instances cache it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_instances_never_answer_a_stale_value() {
    let Some((a, b)) = two_instances(&prefix("alternate")).await else {
        return;
    };
    let (app_a, app_b) = (app(a.clone()), app(b.clone()));
    let mut client = Client::new(app_a.clone(), COOKIE);
    assert_eq!(client.get("/visit").await.body, "1");
    let mut expected = 1;
    for round in 0..200 {
        let (writer, reader) = if round % 2 == 0 {
            (&app_b, &app_a)
        } else {
            (&app_a, &app_b)
        };
        // Both instances have the session cached by now.
        client.app = reader.clone();
        assert_eq!(
            client.get("/count").await.body,
            expected.to_string(),
            "round {round}"
        );
        client.app = writer.clone();
        expected += 1;
        let reply = client.get("/visit").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            reply.body,
            expected.to_string(),
            "round {round}: a stale count"
        );
        // A last-writer-wins set from the other instance, read back at once.
        if round % 10 == 0 {
            client.app = reader.clone();
            expected += 100;
            assert_eq!(client.get(&format!("/set/{expected}")).await.body, "set");
            client.app = writer.clone();
            assert_eq!(
                client.get("/count").await.body,
                expected.to_string(),
                "round {round}"
            );
        }
    }
    // Reads only: both keep it (a write on one evicts it from the other).
    for reader in [&app_a, &app_b] {
        client.app = reader.clone();
        assert_eq!(client.get("/count").await.body, expected.to_string());
    }
    assert!(
        a.cached() >= 1 && b.cached() >= 1,
        "both instances cache the session"
    );
}

/// Sign-out on one instance, or revocation by user, ends the session on
/// the other at once, though it had it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_elsewhere_is_gone_at_once() {
    let Some((a, b)) = two_instances(&prefix("ended")).await else {
        return;
    };
    let (app_a, app_b) = (app(a.clone()), app(b.clone()));
    let mut client = Client::new(app_a.clone(), COOKIE);
    assert_eq!(client.get("/visit").await.body, "1");
    assert_eq!(client.get("/visit").await.body, "2");
    assert_eq!(a.cached(), 1);
    client.app = app_b.clone();
    assert_eq!(client.get("/logout").await.body, "out");
    client.app = app_a.clone();
    assert_eq!(client.get("/count").await.body, "0", "a fresh session on A");

    // Revoked by user on B (the store query), while A has it cached.
    let mut client = Client::new(app_a.clone(), COOKIE);
    assert_eq!(client.get("/login/42").await.body, "in");
    assert_eq!(client.get("/visit").await.body, "1");
    use axum_typed_session::SessionQueries;
    let revoked = b.destroy_by(&Visit::USER_ID, &42).await.expect("revoke");
    assert_eq!(revoked, 1);
    assert_eq!(
        client.get("/count").await.body,
        "0",
        "revoked on B, gone on A"
    );
}

/// A cached session is served without touching its key: Redis's idle
/// time of the key (`OBJECT IDLETIME`, which any read or write resets)
/// keeps growing while the instance answers reads of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_do_not_touch_the_key() {
    let Some((a, _)) = two_instances(&prefix("hits")).await else {
        return;
    };
    let mut client = Client::new(app(a.clone()), COOKIE);
    assert_eq!(client.get("/visit").await.body, "1");
    let id = axum_typed_session::SessionToken::parse(client.token.as_deref().expect("a token"))
        .expect("a plain token")
        .id();
    let raw = redis::Client::open(redis_url()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();
    let started = std::time::Instant::now();
    let mut reads = 0;
    while started.elapsed() < Duration::from_millis(2_200) {
        assert_eq!(client.get("/count").await.body, "1");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let idle: i64 = redis::cmd("OBJECT")
        .arg("IDLETIME")
        .arg(a.key_of(&id))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        idle >= 2,
        "the key was touched {idle} s ago, during {reads} reads"
    );
}

/// The cache needs invalidations on the connection it reads from, which a
/// Cluster client's per-node connections do not give here: refused, with
/// the fix in the message.
#[tokio::test]
async fn a_client_cache_on_cluster_is_refused() {
    let error = RedisStore::<Visit>::builder()
        .client_cache(10)
        .connect_cluster(redis_cluster_nodes())
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("client_cache"), "{message}");
}
