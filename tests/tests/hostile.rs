//! 10,000 generated cookie values thrown at the layer on every store: no
//! panic, no 5xx, each a fresh session; and no token ever reaches the logs.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, routing::get};
use axum_typed_session::{Key, Session, SessionConfig, SessionLayer, SessionStore, SessionToken};
use base64::Engine;
use conformance_tests::{Backend, conformance, send};
use http::StatusCode;
use rand::{Rng, SeedableRng, rngs::StdRng};

#[derive(Session, Default)]
#[session(table = "hostile_sessions")]
struct Visit {
    count: i64,
}

#[derive(Session, Default)]
#[session(table = "other_sessions")]
struct Other {
    seen: bool,
}

const VALUES: usize = 10_000;

fn app<S: SessionStore<Visit>>(store: S, config: SessionConfig) -> Router {
    Router::new()
        .route(
            "/peek",
            get(|visit: Session<Visit>| async move { visit.count().to_string() }),
        )
        .route(
            "/visit",
            get(|visit: Session<Visit>| async move {
                visit.update_count(|count| *count += 1);
                visit.count().to_string()
            }),
        )
        .layer(SessionLayer::new(store, config))
}

/// Captured log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One hostile `Cookie` header value, of one of the listed kinds.
fn hostile(rng: &mut StdRng, index: usize, known: &Known) -> Vec<u8> {
    let token = || SessionToken::generate().encode();
    let text = match index % 12 {
        0 => String::new(),
        1 => "session=".into(),
        2 => format!("session={}", "A".repeat(rng.random_range(44..20_000))),
        3 => {
            // Arbitrary bytes, non-ASCII included (headers allow obs-text).
            let mut bytes = b"session=".to_vec();
            let len = rng.random_range(1..200);
            bytes.extend((0..len).map(|_| {
                let byte: u8 = rng.random_range(0x20..=0xff);
                if byte == 0x7f { b'x' } else { byte }
            }));
            return bytes;
        }
        4 => {
            let mut bad: Vec<char> = token().chars().collect();
            let at = rng.random_range(0..bad.len());
            bad[at] = ['!', '=', '+', '/', '.', '%', ' '][rng.random_range(0..7)];
            format!("session={}", bad.into_iter().collect::<String>())
        }
        5 => {
            let token = token();
            format!("session={}", &token[..rng.random_range(1..token.len())])
        }
        6 => {
            // A well-formed signature or ciphertext shape with random content.
            let mut bytes = vec![0u8; rng.random_range(40..120)];
            rng.fill(&mut bytes[..]);
            format!(
                "session={}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        }
        7 => format!("session={}", known.other_struct.clone()),
        8 => format!("session={}", known.expired.clone()),
        9 => format!("session={}", token()),
        10 => format!(
            "session={}; session={}; session=; other=1",
            token(),
            "x".repeat(5)
        ),
        _ => format!(
            "session=\"{}\"; Path=/; session={}",
            token(),
            known.other_key.clone()
        ),
    };
    text.into_bytes()
}

/// Cookie values that are real somewhere, but not here.
struct Known {
    /// A live token of another session struct (another table).
    other_struct: String,
    /// A token whose session expired.
    expired: String,
    /// A cookie sealed with another key.
    other_key: String,
}

async fn ten_thousand_hostile_cookies<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let key = Key::generate();
    let config = SessionConfig::default()
        .with_secure(false)
        .with_private_key(key.clone());
    let app = app(fixture.store.clone(), config.clone());

    // Real values from elsewhere: another struct's session, an expired one,
    // one sealed under another key.
    let other_fixture = fixture.other::<Other>();
    other_fixture
        .migrate()
        .await
        .expect("migrate the other struct");
    let other_app = Router::new()
        .route(
            "/",
            get(|other: Session<Other>| async move { other.set_seen(true) }),
        )
        .layer(SessionLayer::new(
            other_fixture.store.clone(),
            config.clone(),
        ));
    let cookie_value =
        |reply: &conformance_tests::Reply| reply.cookie("session").expect("a cookie");
    let other_struct = cookie_value(&send(&other_app, "GET", "/", None).await);
    let short = app_with(
        &fixture.store,
        config.clone().with_idle_timeout(Duration::from_millis(50)),
    );
    let expired = cookie_value(&send(&short, "GET", "/visit", None).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other_key_app = app_with(
        &fixture.store,
        SessionConfig::default().with_private_key(Key::generate()),
    );
    let other_key = cookie_value(&send(&other_key_app, "GET", "/visit", None).await);
    let known = Known {
        other_struct,
        expired,
        other_key,
    };

    // The visitor whose session must survive all this.
    let owner = send(&app, "GET", "/visit", None).await;
    let owner_cookie = format!("session={}", cookie_value(&owner));
    send(&app, "GET", "/visit", Some(&owner_cookie)).await;

    let mut rng = StdRng::seed_from_u64(0x5e55_10e5);
    let mut issued = Vec::new();
    for index in 0..VALUES {
        let header = hostile(&mut rng, index, &known);
        // Every 25th request writes, so a fresh session must get a new token.
        let path = if index % 25 == 0 { "/visit" } else { "/peek" };
        let request = http::Request::get(path)
            .header(
                http::header::COOKIE,
                http::HeaderValue::from_bytes(&header).expect("header bytes"),
            )
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.clone(), request)
            .await
            .expect("infallible");
        let status = response.status();
        let set_cookie: Vec<String> = response
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let shown = String::from_utf8_lossy(&header[..header.len().min(80)]).into_owned();
        assert_eq!(status, StatusCode::OK, "value #{index}: {shown}");
        let expected = if path == "/visit" { "1" } else { "0" };
        assert_eq!(
            &body[..],
            expected.as_bytes(),
            "value #{index} is a fresh session: {shown}"
        );
        if path == "/visit" {
            let value = set_cookie
                .first()
                .and_then(|c| c.split(';').next())
                .and_then(|pair| pair.strip_prefix("session="))
                .expect("a fresh session that was written gets a cookie")
                .to_owned();
            assert!(
                !String::from_utf8_lossy(&header).contains(&value),
                "never adopted"
            );
            issued.push(value);
        } else {
            assert!(
                set_cookie.is_empty(),
                "a read-only fresh session sets nothing"
            );
        }
    }
    assert_eq!(
        send(&app, "GET", "/peek", Some(&owner_cookie)).await.body,
        "2",
        "the owner's session is intact"
    );

    drop(_logging);
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("new session"),
        "the check below needs session events in the logs"
    );
    for value in issued.iter().chain([&owner_cookie]) {
        let token = value.trim_start_matches("session=");
        assert!(!logs.contains(token), "a cookie value reached the logs");
    }
    other_fixture.cleanup().await;
    fixture.cleanup().await;
}

fn app_with<S: SessionStore<Visit>>(store: &S, config: SessionConfig) -> Router {
    app(store.clone(), config.with_secure(false))
}

/// With plain cookies the token is the cookie value: check the logs for it.
async fn tokens_never_reach_the_logs<B: Backend>() {
    let Some(fixture) = B::open::<Visit>().await else {
        return;
    };
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let app = app(
        fixture.store.clone(),
        SessionConfig::default().with_secure(false),
    );
    let first = send(&app, "GET", "/visit", None).await;
    let token = first.cookie("session").unwrap();
    let id = SessionToken::parse(&token).unwrap().id().to_string();
    send(&app, "GET", "/visit", Some(&format!("session={token}"))).await;
    drop(_logging);
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains(&id),
        "sessions are logged by id (a hash): {logs}"
    );
    assert!(!logs.contains(&token), "the token is never logged");
    fixture.cleanup().await;
}

conformance!(ten_thousand_hostile_cookies, tokens_never_reach_the_logs);
