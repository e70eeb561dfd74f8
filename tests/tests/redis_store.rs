//! What only the Redis store has to show, on a standalone server and on the
//! Cluster: the layout a person sees with `HGETALL`, expiry by Redis itself,
//! index sets that leave nothing behind, hashes that do not decode or were
//! written by an older struct, scripts the server forgot, and Redis that is
//! down at start or goes away mid-request.

use std::time::{Duration, Instant};

use axum::{Router, routing::get};
use axum_typed_session::{
    RedisStore, Session, SessionConfig, SessionLayer, SessionQueries, SessionStore, StoreError,
};
use conformance_tests::{
    Backend, Client, OwnCluster, OwnUnix, Raw, RedisRaw, ask,
    proxy::{Mode, Proxy},
    redis_conformance, redis_url,
};
use http::StatusCode;

#[derive(Session, Default, Debug)]
#[session(table = "redis_visits")]
struct Visit {
    count: i64,
    #[session(index)]
    user_id: Option<i64>,
    name: Option<String>,
    #[session(json)]
    tags: Vec<String>,
}

/// The same table, as a newer version of the app declares it: two more fields.
#[derive(Session, Debug)]
#[session(table = "redis_visits")]
struct NewerVisit {
    count: i64,
    #[session(index)]
    user_id: Option<i64>,
    name: Option<String>,
    #[session(json)]
    tags: Vec<String>,
    theme: String,
    nickname: Option<String>,
}

impl Default for NewerVisit {
    fn default() -> Self {
        Self {
            count: 0,
            user_id: None,
            name: None,
            tags: Vec::new(),
            theme: "light".into(),
            nickname: None,
        }
    }
}

const COOKIE: &str = "session";

fn app<S: SessionStore<Visit>>(store: S, config: SessionConfig) -> Router {
    Router::new()
        .route(
            "/visit",
            get(|visit: Session<Visit>| async move {
                let count = visit.update_count(|count| { *count += 1; *count }).await?;
                Ok::<_, axum_typed_session::SessionError>(count.to_string())
            }),
        )
        .route(
            "/login/{user}",
            get(|visit: Session<Visit>, axum::extract::Path(user): axum::extract::Path<i64>| async move {
                visit.set_user_id(Some(user));
                visit.set_name(Some(format!("user {user}")));
                visit.set_tags(vec!["a".into(), "b".into()]);
                visit.renew();
                "in"
            }),
        )
        .route("/logout", get(|visit: Session<Visit>| async move { visit.destroy(); "out" }))
        .route("/plain", get(|| async { "plain" }))
        .layer(SessionLayer::new(store, config))
}

fn raw<B: Backend>(fixture: &conformance_tests::Fixture<B, Visit>) -> &RedisRaw {
    match fixture.raw() {
        Raw::Redis(raw) => raw,
        _ => unreachable!("a Redis fixture"),
    }
}

fn id_of(client: &Client) -> axum_typed_session::SessionId {
    axum_typed_session::SessionToken::parse(client.token.as_deref().expect("a token"))
        .expect("a plain token")
        .id()
}

async fn hgetall(raw: &RedisRaw, key: &str) -> std::collections::HashMap<String, String> {
    let mut cmd = ::redis::cmd("HGETALL");
    cmd.arg(key);
    let hash: std::collections::HashMap<String, Vec<u8>> = raw.command(&cmd).await;
    hash.into_iter()
        .map(|(field, value)| (field, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

/// One hash per session, readable; Redis's expiry is the session's.
async fn the_hash_is_the_session<B: Backend<Store<Visit> = RedisStore<Visit>>>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let raw = raw(&fixture);
    let mut client = Client::new(app(fixture.store.clone(), SessionConfig::default()), COOKIE);
    client.get("/visit").await;
    client.get("/login/42").await;
    let id = id_of(&client);
    let key = fixture.store.key_of(&id);
    assert_eq!(
        key,
        format!("{}:{{{id}}}", raw.prefix_of("redis_visits")),
        "the id is the hash tag"
    );
    let hash = hgetall(raw, &key).await;
    assert_eq!(hash["count"], "1");
    assert_eq!(hash["user_id"], "42");
    assert_eq!(hash["name"], "user 42");
    assert_eq!(hash["tags"], r#"["a","b"]"#);
    assert_eq!(hash["version"], "2", "the visit, then the login");
    assert_eq!(hash["remember"], "0");
    let record = fixture
        .store
        .load(&id, chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hash["expires_at"],
        record.expires_at.timestamp_micros().to_string()
    );
    assert_eq!(
        hash["created_at"],
        record.created_at.timestamp_micros().to_string()
    );
    assert_eq!(hash.len(), 8, "nothing else: {hash:?}");
    let mut pexpiretime = ::redis::cmd("PEXPIRETIME");
    pexpiretime.arg(&key);
    let expires_ms: i64 = raw.command(&pexpiretime).await;
    assert_eq!(
        expires_ms,
        (record.expires_at.timestamp_micros() + 999) / 1000,
        "PEXPIREAT = expires_at"
    );
    // Anonymous NULLs are absent fields, not empty strings.
    let mut fresh = Client::new(client.app.clone(), COOKIE);
    fresh.get("/visit").await;
    let hash = hgetall(raw, &fixture.store.key_of(&id_of(&fresh))).await;
    assert!(
        !hash.contains_key("user_id") && !hash.contains_key("name"),
        "{hash:?}"
    );
    assert_eq!(
        fixture
            .store
            .purge_expired(chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
    fixture.cleanup().await;
}

/// After every session of a user expired or was destroyed, no key of that
/// user is left.
async fn index_sets_leave_nothing_behind<B: Backend<Store<Visit> = RedisStore<Visit>>>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let raw = raw(&fixture);
    let short = SessionConfig::default().with_idle_timeout(Duration::from_millis(300));
    let app = app(fixture.store.clone(), short);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::new(app.clone(), COOKIE);
        client.get("/login/42").await;
        clients.push(client);
    }
    let set = fixture
        .store
        .index_key_of("user_id", &axum_typed_session::value::Value::I64(42))
        .unwrap();
    let mut card = ::redis::cmd("ZCARD");
    card.arg(&set);
    assert_eq!(raw.command::<i64>(&card).await, 3);
    // One destroyed, the others left to expire.
    clients[0].get("/logout").await;
    assert_eq!(raw.command::<i64>(&card).await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let user_keys = raw
        .keys(&format!("{}*", raw.prefix_of("redis_visits")))
        .await;
    assert!(
        user_keys.is_empty(),
        "left behind: {:?}",
        user_keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(
        fixture
            .store
            .sessions_by(&Visit::USER_ID, &42)
            .await
            .unwrap()
            .is_empty()
    );
    fixture.cleanup().await;
}

/// A field that does not decode is a decode error naming the field; one
/// written by an older struct loads with the field's default.
async fn bad_and_old_hashes<B: Backend<Store<Visit> = RedisStore<Visit>>>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let raw = raw(&fixture);
    let mut client = Client::new(app(fixture.store.clone(), SessionConfig::default()), COOKIE);
    client.get("/login/7").await;
    let id = id_of(&client);
    let key = fixture.store.key_of(&id);

    // Written by the older struct: the newer one reads its defaults.
    let newer: RedisStore<NewerVisit> = raw.store();
    let record = newer
        .load(&id, chrono::Utc::now())
        .await
        .unwrap()
        .expect("live");
    assert_eq!(
        record.data.theme, "light",
        "the struct's Default for a new field"
    );
    assert_eq!(record.data.nickname, None);
    assert_eq!(record.data.user_id, Some(7));

    let mut corrupt = ::redis::cmd("HSET");
    corrupt.arg(&key).arg("count").arg("twelve");
    let _: i64 = raw.command(&corrupt).await;
    match fixture.store.load(&id, chrono::Utc::now()).await {
        Err(StoreError::Decode(error)) => {
            assert_eq!((error.field, error.column), ("count", "count"));
            assert!(error.to_string().contains("twelve"), "{error}");
        }
        other => panic!("expected a decode error naming `count`, got {other:?}"),
    }
    let reply = client.get("/visit").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Others are not affected.
    let mut other = Client::new(client.app.clone(), COOKIE);
    assert_eq!(other.get("/visit").await.body, "1");
    let mut bad_json = ::redis::cmd("HSET");
    bad_json
        .arg(&key)
        .arg("count")
        .arg("3")
        .arg("tags")
        .arg("{not json");
    let _: i64 = raw.command(&bad_json).await;
    assert!(matches!(
        fixture.store.load(&id, chrono::Utc::now()).await,
        Err(StoreError::Decode(error)) if error.field == "tags"
    ));
    fixture.cleanup().await;
}

/// A server that forgot the scripts (restart, failover, SCRIPT FLUSH) gets
/// them again.
async fn forgotten_scripts_are_loaded_again<B: Backend<Store<Visit> = RedisStore<Visit>>>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let raw = raw(&fixture);
    let mut client = Client::new(app(fixture.store.clone(), SessionConfig::default()), COOKIE);
    assert_eq!(client.get("/visit").await.body, "1");
    raw.flush_scripts().await;
    assert_eq!(client.get("/visit").await.body, "2");
    client.get("/login/3").await;
    assert_eq!(client.get("/visit").await.body, "3");
    fixture.cleanup().await;
}

/// Concurrent requests share a pipeline (on a standalone server, one group
/// of commands): a session whose key holds something else than a hash
/// fails alone, and every other request in its group answers.
async fn one_bad_key_fails_alone<B: Backend<Store<Visit> = RedisStore<Visit>>>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let raw = raw(&fixture);
    let app = app(fixture.store.clone(), SessionConfig::default());
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = Client::new(app.clone(), COOKIE);
        assert_eq!(client.get("/visit").await.body, "1");
        clients.push(client);
    }
    let bad = fixture.store.key_of(&id_of(&clients[0]));
    let mut replace = ::redis::cmd("SET");
    replace.arg(&bad).arg("not a hash");
    let () = raw.command(&replace).await;
    let mut requests = tokio::task::JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        requests.spawn(async move { (i, client.get("/visit").await) });
    }
    let mut answered = 0;
    while let Some(joined) = requests.join_next().await {
        let (i, reply) = joined.expect("a request task");
        if i == 0 {
            assert_eq!(
                reply.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "a key of the wrong type is the store's error: {}",
                reply.body
            );
        } else {
            assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "2"));
            answered += 1;
        }
    }
    assert_eq!(answered, 19);
    let mut delete = ::redis::cmd("DEL");
    delete.arg(&bad);
    let _: i64 = raw.command(&delete).await;
    fixture.cleanup().await;
}

/// `clients` concurrent clients, each visiting three times and checking
/// every answer; each task gives its client back.
fn visiting_three_times(app: &Router, clients: usize) -> Vec<tokio::task::JoinHandle<Client>> {
    (0..clients)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut client = Client::new(app, COOKIE);
                for visit in 1..=3 {
                    let reply = client.get("/visit").await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                    assert_eq!(reply.body, visit.to_string());
                }
                client
            })
        })
        .collect()
}

/// `clients` visitors, three visits each, all in groups on `store`'s own
/// connections (per master on Cluster), none on its own; the visitors.
async fn visits_go_in_groups(store: &RedisStore<Visit>, clients: usize) -> Vec<Client> {
    let before = store.pipeline_stats();
    let app = app(store.clone(), SessionConfig::default());
    let mut visitors = Vec::with_capacity(clients);
    for client in visiting_three_times(&app, clients) {
        visitors.push(client.await.unwrap());
    }
    let after = store.pipeline_stats();
    let (groups, grouped) = (after.groups - before.groups, after.grouped - before.grouped);
    // Per client: an insert, then a load (with the client cache, a sync
    // point and no command) and an update, twice.
    assert!(grouped >= 3 * clients as u64, "{after:?} after {before:?}");
    assert!(
        groups < grouped,
        "some group carried several commands: {groups} groups of {grouped}"
    );
    assert_eq!(after.alone, before.alone, "none on its own: {after:?}");
    visitors
}

/// Concurrent requests share round trips: their loads and writes go in
/// groups of several commands (per master on Cluster), none on its own.
async fn concurrent_requests_share_groups<B: Backend<Store<Visit> = RedisStore<Visit>>>() {
    const CLIENTS: usize = 32;
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    // A connection of its own: its counts are this test's alone.
    let store = fixture.independent_store().await;
    visits_go_in_groups(&store, CLIENTS).await;
    fixture.cleanup().await;
}

/// A turn on a capped value left by a writer that died (its key still
/// set): the value's sign-ins wait for it, answer 503 with `Retry-After`
/// after the store's timeout if it stays, and go through once it expires;
/// other users are not held up, and a turn given back leaves no key.
async fn a_dead_writers_turn_expires<B: Backend<Store<Visit> = RedisStore<Visit>>>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let raw = raw(&fixture);
    let store = fixture.store.clone().with_max_sessions(&Visit::USER_ID, 2);
    let app = app(store.clone(), SessionConfig::default());
    let turn = format!("{}:cap:user_id:42", raw.prefix_of("redis_visits"));
    let hold = |ms: u64| {
        let mut set = ::redis::cmd("SET");
        set.arg(&turn).arg("a writer that died").arg("PX").arg(ms);
        set
    };
    let mut exists = ::redis::cmd("EXISTS");
    exists.arg(&turn);

    // Held past the store's timeout: a 503 within it, nothing written.
    let () = raw.command(&hold(60_000)).await;
    let mut client = Client::new(app.clone(), COOKIE);
    let started = Instant::now();
    let reply = client.get("/login/42").await;
    let waited = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(reply.headers.contains_key("retry-after"));
    assert!(
        waited >= axum_typed_session::store::redis::DEFAULT_TIMEOUT / 2
            && waited < axum_typed_session::store::redis::DEFAULT_TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(
        store
            .sessions_by(&Visit::USER_ID, &42)
            .await
            .unwrap()
            .is_empty()
    );
    // Another user's sign-in does not wait.
    let mut other = Client::new(app.clone(), COOKIE);
    assert_eq!(other.get("/login/7").await.status, StatusCode::OK);

    // Held for a moment: the sign-in waits, then goes through.
    let () = raw.command(&hold(300)).await;
    let started = Instant::now();
    let reply = client.get("/login/42").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        store.sessions_by(&Visit::USER_ID, &42).await.unwrap().len(),
        1
    );
    assert_eq!(
        raw.command::<i64>(&exists).await,
        0,
        "the turn was given back"
    );
    fixture.cleanup().await;
}

redis_conformance!(
    the_hash_is_the_session,
    index_sets_leave_nothing_behind,
    bad_and_old_hashes,
    forgotten_scripts_are_loaded_again,
    one_bad_key_fails_alone,
    a_dead_writers_turn_expires,
    concurrent_requests_share_groups,
);

#[tokio::test]
async fn redis_down_at_start_is_a_clear_error() {
    // With the client cache the store makes its connection itself: the
    // same error, as fast.
    for cached in [false, true] {
        let started = Instant::now();
        let mut builder = RedisStore::<Visit>::builder().timeout(Duration::from_millis(500));
        if cached {
            builder = builder.client_cache(10);
        }
        let error = builder
            .connect("redis://127.0.0.1:1")
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "cached {cached}: {:?}",
            started.elapsed()
        );
        assert!(error.is_unavailable(), "cached {cached}");
        let message = error.to_string();
        assert!(
            message.contains("cannot connect to Redis at redis://127.0.0.1:1"),
            "cached {cached}: {message}"
        );
    }
    let cluster = RedisStore::<Visit>::builder()
        .timeout(Duration::from_millis(500))
        .connect_cluster(["redis://127.0.0.1:1", "redis://127.0.0.1:2"])
        .await
        .expect_err("no cluster there");
    assert!(
        cluster
            .to_string()
            .contains("127.0.0.1:1, redis://127.0.0.1:2"),
        "{cluster}"
    );
}

/// Redis going away mid-request (cut, or hung) fails fast within the
/// store's timeout, writes nothing over the real data, and service resumes
/// by itself. Through a real TCP proxy in front of the test server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_going_away_fails_fast_and_recovers() {
    let url = redis_url();
    let target: std::net::SocketAddr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("TEST_REDIS_URL as redis://host:port");
    if ::redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .is_err()
    {
        // Reported (or failed, under CI) by the conformance cases' fixture.
        let _ = conformance_tests::Redis::open::<Visit>().await;
        return;
    }
    for cached in [false, true] {
        going_away(target, cached).await;
    }
}

/// With Redis gone (`how`), a session request answers 503 with
/// `Retry-After` within a few times the store's `timeout`, and a route
/// without a session still works. Returns how long the 503 took.
async fn fails_fast(client: &mut Client, timeout: Duration, how: &str) -> Duration {
    let started = Instant::now();
    let reply = client.get("/visit").await;
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{how}: {}",
        reply.body
    );
    assert!(reply.headers.contains_key("retry-after"));
    assert!(took < timeout * 3, "{how}: answered in {took:?}");
    assert_eq!(
        client.get("/plain").await.body,
        "plain",
        "routes without a session work"
    );
    took
}

/// Visits until one is served (within 5 s of Redis coming back): the
/// first served reply, and how long it took.
async fn served_again(client: &mut Client) -> (conformance_tests::Reply, Duration) {
    let back = Instant::now();
    let mut reply = client.get("/visit").await;
    while reply.status != StatusCode::OK {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "service did not resume: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply = client.get("/visit").await;
    }
    (reply, back.elapsed())
}

async fn going_away(target: std::net::SocketAddr, cached: bool) {
    let proxy = Proxy::start(target).await;
    let timeout = Duration::from_millis(300);
    let mut builder = RedisStore::<Visit>::builder()
        .prefix(format!("outage_{}_{cached}", std::process::id()))
        .timeout(timeout);
    if cached {
        builder = builder.client_cache(100);
    }
    let store = builder
        .connect(&format!("redis://127.0.0.1:{}", proxy.port()))
        .await
        .expect("through the proxy");
    let app = app(store.clone(), SessionConfig::default());
    let mut client = Client::new(app.clone(), COOKIE);
    for expected in 1..=3 {
        assert_eq!(client.get("/visit").await.body, expected.to_string());
    }
    for mode in [Mode::Cut, Mode::Paused] {
        proxy.set(mode);
        let took = fails_fast(&mut client, timeout, &format!("{mode:?}")).await;
        eprintln!("redis {mode:?}: first failure answered in {took:?}");
        proxy.set(Mode::Forward);
        let (reply, back) = served_again(&mut client).await;
        eprintln!("redis {mode:?}: serving again {back:?} after Redis came back");
        // The count went on from the last stored value: a failed write was
        // not applied, nothing was written over the session.
        let count: i64 = reply.body.parse().unwrap();
        assert!((4..=5).contains(&count), "{mode:?}: count {count}");
        let stored = store
            .load(&id_of(&client), chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.data.count, count);
    }
    if cached {
        // The reconnected connection tracks again: a change from another
        // client reaches the cache.
        let mut direct = ::redis::Client::open(format!("redis://{target}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = ::redis::cmd("HSET")
            .arg(store.key_of(&id_of(&client)))
            .arg("count")
            .arg("50")
            .query_async(&mut direct)
            .await
            .unwrap();
        assert_eq!(
            client.get("/visit").await.body,
            "51",
            "cached after the outage, and told"
        );
        assert!(store.cached() >= 1);
    }
}

/// A server on a Unix socket (`redis+unix://`): concurrent requests share
/// its groups as on TCP; killed, a request answers 503 within the
/// timeout; started again (empty: no persistence, the scripts forgotten),
/// service resumes by itself and the visitor's unknown token is a fresh
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unix_socket_server_is_served_in_groups_and_survives_a_restart() {
    const CLIENTS: usize = 16;
    let Some(mut server) = OwnUnix::start_for("unix_socket").await else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let store = RedisStore::<Visit>::builder()
        .timeout(timeout)
        .connect(&server.url())
        .await
        .expect("a store on the socket");
    let mut clients = visits_go_in_groups(&store, CLIENTS).await;

    server.kill();
    let client = &mut clients[0];
    let took = fails_fast(client, timeout, "killed").await;
    eprintln!("redis on a socket, killed: answered in {took:?}");
    server.start().await.expect("the server starts again");
    let (reply, back) = served_again(client).await;
    eprintln!("redis on a socket: serving again {back:?} after it restarted");
    // The restarted server holds nothing: the token is unknown, so this is
    // a fresh session, and it counts on from there.
    assert_eq!(reply.body, "1");
    assert_eq!(client.get("/visit").await.body, "2");
}

/// The store's start fails with the password shown as `***`.
async fn refused_without_the_secret(
    started: impl std::future::Future<Output = Result<RedisStore<Visit>, StoreError>>,
    secret: &str,
) {
    let message = match started.await {
        Ok(_) => panic!("a wrong password is refused"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        !message.contains(secret),
        "the password stays out: {message}"
    );
    assert!(message.contains("***"), "{message}");
}

/// Credentials reach every connection the store makes, and never its
/// error messages: a server whose default user has a password and that
/// has an ACL user (on a Unix socket), and a Cluster whose nodes ask for a
/// password, where the groups go on the store's own connections to each
/// master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_reach_every_connection_and_stay_out_of_errors() {
    const CLIENTS: usize = 16;
    let acl = [
        "--requirepass",
        "default-s3cret",
        "--user",
        "app",
        "on",
        ">app-s3cret",
        "~*",
        "&*",
        "+@all",
    ];
    let Some(server) = OwnUnix::start_with("credentials", &acl).await else {
        return;
    };
    let timeout = Duration::from_millis(500);
    let as_app = |password: &str| format!("{}?user=app&pass={password}", server.url());
    refused_without_the_secret(
        RedisStore::<Visit>::builder()
            .timeout(timeout)
            .connect(&as_app("wrong-s3cret")),
        "wrong-s3cret",
    )
    .await;
    let store = RedisStore::<Visit>::builder()
        .timeout(timeout)
        .connect(&as_app("app-s3cret"))
        .await
        .expect("the ACL user connects");
    visits_go_in_groups(&store, CLIENTS).await;
    drop(server);

    let cluster = OwnCluster {
        base: 7500,
        tls: false,
        password: Some("cluster-s3cret"),
    };
    if !cluster.start_for("credentials_reach_every_connection_and_stay_out_of_errors") {
        return;
    }
    let without = RedisStore::<Visit>::builder()
        .timeout(timeout)
        .connect_cluster(["redis://127.0.0.1:7500"])
        .await;
    assert!(without.is_err(), "a client without the password is refused");
    refused_without_the_secret(
        RedisStore::<Visit>::builder()
            .timeout(timeout)
            .connect_cluster(["redis://:wrong-s3cret@127.0.0.1:7500"]),
        "wrong-s3cret",
    )
    .await;
    let store = RedisStore::<Visit>::builder()
        .timeout(timeout)
        .connect_cluster(cluster.nodes())
        .await
        .expect("connects with the password");
    visits_go_in_groups(&store, CLIENTS).await;
    let _ = cluster.run("stop");
}

/// WAIT mode on a server without replicas: every write is refused, clearly,
/// and the request answers 503 rather than pretending it is safe.
#[tokio::test]
async fn waiting_for_a_replica_that_does_not_exist_fails_clearly() {
    let Ok(store) = RedisStore::<Visit>::builder()
        .prefix(format!("wait_{}", std::process::id()))
        .wait_for_replicas(1, Duration::from_millis(50))
        .connect(&redis_url())
        .await
    else {
        let _ = conformance_tests::Redis::open::<Visit>().await;
        return;
    };
    let mut client = Client::new(app(store, SessionConfig::default()), COOKIE);
    let reply = client.get("/visit").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
}

/// How many `WAIT`s the node at `url` has run.
async fn waits_on(url: &str) -> u64 {
    let stats = ask(url, &["INFO", "commandstats"]).await.unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse::<u64>().unwrap())
}

/// How many `WAIT`s the nodes of the test Cluster have run, all together.
async fn waits_on_cluster() -> u64 {
    let seed = &conformance_tests::redis_cluster_nodes()[0];
    let nodes = ask(seed, &["CLUSTER", "NODES"]).await.unwrap();
    let mut waits = 0;
    // `<id> <host:port@bus> ...` per node.
    for address in nodes.lines().filter_map(|line| line.split(' ').nth(1)) {
        let address = address.split('@').next().unwrap();
        waits += waits_on(&format!("redis://{address}")).await;
    }
    waits
}

/// `clients` visiting three times (an insert and two updates each) took
/// `waited` `WAIT`s: some, and fewer than one per write.
fn one_wait_per_group(label: &str, waited: u64, clients: usize) {
    let writes = 3 * clients as u64;
    eprintln!("wait_for_replicas, {label}: {waited} WAITs for {writes} writes");
    assert!(
        (1..writes).contains(&waited),
        "{waited} WAITs for {writes} writes"
    );
}

/// WAIT mode on a server with a replica (started by the test), without
/// and with the client cache: every answer is exact, the writes of one
/// moment share one `WAIT` in their group, and what was acknowledged is
/// on the replica when the answer comes.
#[tokio::test]
async fn waiting_for_a_replica_shares_the_writes_groups() {
    const CLIENTS: usize = 32;
    let test = "waiting_for_a_replica_shares_the_writes_groups";
    let Some(redis) = conformance_tests::OwnReplicated::start_for(test, 7400).await else {
        return;
    };
    for cached in [false, true] {
        let mut builder = RedisStore::<Visit>::builder()
            .prefix(format!("wait_one_{cached}"))
            .wait_for_replicas(1, Duration::from_secs(2));
        if cached {
            builder = builder.client_cache(1_000);
        }
        let store = builder.connect(&redis.url()).await.unwrap();
        let app = app(store.clone(), SessionConfig::default());
        let waits = waits_on(&redis.url()).await;
        let mut ids = Vec::new();
        for client in visiting_three_times(&app, CLIENTS) {
            ids.push(id_of(&client.await.unwrap()));
        }
        let waited = waits_on(&redis.url()).await - waits;
        one_wait_per_group(&format!("cached {cached}"), waited, CLIENTS);
        for id in &ids {
            let key = store.key_of(id);
            let count = ask(&redis.replica_url(), &["HGET", &key, "count"])
                .await
                .unwrap();
            assert_eq!(count, "3", "the replica holds {key}'s last write");
        }
    }
}

/// WAIT mode on the Cluster (each master has a replica): every answer is
/// exact, the writes go in their masters' groups like any other (none on
/// its own), and the concurrent writes of one moment share one `WAIT`.
#[tokio::test]
async fn waiting_for_replicas_shares_the_writes_groups() {
    const CLIENTS: usize = 32;
    let Ok(store) = RedisStore::<Visit>::builder()
        .prefix(format!("wait_cluster_{}", std::process::id()))
        .wait_for_replicas(1, Duration::from_secs(2))
        .connect_cluster(conformance_tests::redis_cluster_nodes())
        .await
    else {
        let _ = conformance_tests::RedisCluster::open::<Visit>().await;
        return;
    };
    let app = app(store.clone(), SessionConfig::default());
    let (stats, waits) = (store.pipeline_stats(), waits_on_cluster().await);
    let mut ids = Vec::new();
    for client in visiting_three_times(&app, CLIENTS) {
        ids.push(id_of(&client.await.unwrap()));
    }
    let (after, waited) = (store.pipeline_stats(), waits_on_cluster().await - waits);
    assert_eq!(after.alone, stats.alone, "no write on its own: {after:?}");
    one_wait_per_group("on Cluster", waited, CLIENTS);
    for id in ids {
        store.delete(&id).await.unwrap();
    }
}
