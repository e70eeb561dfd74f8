//! Session lifecycle and cookie security, on every store: renew, destroy,
//! expiry, touch throttling, absolute lifetime, remember-me, keys, modes,
//! purge, header tokens.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use axum_typed_session::{
    Key, Session, SessionConfig, SessionLayer, SessionMode, SessionStore, SessionToken,
};
use chrono::Utc;
use conformance_tests::{Backend, Client, Reply, conformance, send};
use http::{HeaderName, StatusCode};
use tokio::sync::Barrier;

#[derive(Session, Default)]
#[session(table = "lifecycle_sessions")]
struct Account {
    visits: i64,
    user: Option<String>,
}

const COOKIE: &str = "session";

fn base() -> SessionConfig {
    SessionConfig::default().with_secure(false)
}

fn app<S: SessionStore<Account>>(store: S, config: SessionConfig) -> Router {
    Router::new()
        .route(
            "/visit",
            get(|session: Session<Account>| async move {
                session.update_visits(|visits| *visits += 1);
                session.visits().to_string()
            }),
        )
        .route(
            "/peek",
            get(|session: Session<Account>| async move { session.visits().to_string() }),
        )
        .route(
            "/login",
            post(|session: Session<Account>| async move {
                session.set_user(Some("ada".into()));
                session.renew();
            }),
        )
        .route(
            "/logout",
            post(|session: Session<Account>| async move { session.destroy() }),
        )
        .route(
            "/remember",
            post(|session: Session<Account>| async move { session.set_remember(true) }),
        )
        .route(
            "/consent",
            post(|session: Session<Account>| async move { session.set_store(true) }),
        )
        .route(
            "/withdraw",
            post(|session: Session<Account>| async move { session.set_store(false) }),
        )
        .layer(SessionLayer::new(store, config))
}

fn id_of(token: &str) -> axum_typed_session::SessionId {
    SessionToken::parse(token).expect("plain token").id()
}

fn max_age(reply: &Reply) -> Option<u64> {
    let cookie = reply.cookies.iter().find(|c| c.starts_with(COOKIE))?;
    cookie
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Max-Age="))
        .map(|age| age.parse().expect("numeric Max-Age"))
}

/// renew(): a new token for the same data; the old one stops working.
async fn renew_issues_a_new_token_and_retires_the_old<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let mut client = Client::new(app(fixture.store.clone(), base()), COOKIE);
    client.get("/visit").await;
    client.get("/visit").await;
    let old = client.token.clone().unwrap();

    let reply = client.post("/login").await;
    assert_eq!(reply.status, StatusCode::OK);
    let new = client.token.clone().unwrap();
    assert_ne!(new, old, "renew issues a new token");
    assert_eq!(client.get("/peek").await.body, "2", "data kept");
    let stored = fixture
        .store
        .load(&id_of(&new), Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.data.user.as_deref(),
        Some("ada"),
        "the change and the renew in one UPDATE"
    );

    let reply = send(
        &client.app,
        "GET",
        "/peek",
        Some(&format!("{COOKIE}={old}")),
    )
    .await;
    assert_eq!(reply.body, "0", "the old token is a fresh session");
    assert!(
        fixture
            .store
            .load(&id_of(&old), Utc::now())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        fixture.count_rows().await,
        1,
        "renew moved the row, it did not copy it"
    );
    fixture.cleanup().await;
}

/// A write with the old token that races a renew does not bring it back.
async fn renewed_session_is_not_resurrected_by_a_late_write<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let gate = Arc::new(Barrier::new(2));
    let inside = gate.clone();
    let slow_app = Router::new()
        .route(
            "/slow",
            post(move |session: Session<Account>| {
                let inside = inside.clone();
                async move {
                    session.set_visits(99);
                    inside.wait().await;
                    inside.wait().await;
                }
            }),
        )
        .layer(SessionLayer::new(fixture.store.clone(), base()));
    let mut client = Client::new(app(fixture.store.clone(), base()), COOKIE);
    client.get("/visit").await;
    let old = client.cookie_header();
    let slow = tokio::spawn(async move { send(&slow_app, "POST", "/slow", old.as_deref()).await });
    gate.wait().await;
    client.post("/login").await;
    gate.wait().await;
    slow.await.unwrap();
    assert_eq!(
        fixture.count_rows().await,
        1,
        "no second row under the old id"
    );
    assert_eq!(
        client.get("/peek").await.body,
        "1",
        "the late write did not land anywhere"
    );
    fixture.cleanup().await;
}

/// destroy(): the row is gone and the removal cookie matches the session cookie.
async fn destroy_deletes_and_clears_the_cookie<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let config = base()
        .with_cookie_path("/")
        .with_cookie_domain("example.test");
    let mut client = Client::new(app(fixture.store.clone(), config), COOKIE);
    client.get("/visit").await;
    let token = client.token.clone().unwrap();
    let reply = client.post("/logout").await;
    let removal = reply.cookies.first().expect("removal cookie");
    for part in [
        "session=;",
        "Max-Age=0",
        "Path=/",
        "Domain=example.test",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(removal.contains(part), "{part} missing in {removal}");
    }
    assert_eq!(fixture.count_rows().await, 0);
    let reply = send(
        &client.app,
        "GET",
        "/peek",
        Some(&format!("{COOKIE}={token}")),
    )
    .await;
    assert_eq!(reply.body, "0");
    fixture.cleanup().await;
}

/// An expired session is never loaded: the visitor starts over.
async fn expired_sessions_are_never_loaded<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let config = base().with_idle_timeout(Duration::from_millis(600));
    let mut client = Client::new(app(fixture.store.clone(), config), COOKIE);
    client.get("/visit").await;
    assert_eq!(client.get("/visit").await.body, "2");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let reply = client.get("/visit").await;
    assert_eq!(reply.body, "1", "expired: a fresh session");
    fixture.cleanup().await;
}

/// Reads and writes alike move the expiry only once per touch fraction: a
/// write in between changes its data and version but leaves the expiry and
/// the cookie alone; a touch does not bump the version; the cookie follows
/// each move of the expiry.
async fn requests_move_the_expiry_at_most_once_per_fraction<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let config = base()
        .with_idle_timeout(Duration::from_secs(4))
        .with_touch_fraction(0.25);
    let mut client = Client::new(app(fixture.store.clone(), config), COOKIE);
    client.get("/visit").await;
    let id = id_of(client.token.as_deref().unwrap());
    let before = fixture.store.load(&id, Utc::now()).await.unwrap().unwrap();

    let early = client.get("/peek").await;
    assert!(
        early.cookies.is_empty(),
        "no touch before a quarter of the timeout"
    );
    let early_write = client.get("/visit").await;
    assert_eq!(early_write.body, "2");
    assert!(
        early_write.cookies.is_empty(),
        "nor a new cookie for a write: {early_write:?}"
    );
    let after_early = fixture.store.load(&id, Utc::now()).await.unwrap().unwrap();
    assert_eq!(after_early.expires_at, before.expires_at, "expiry kept");
    assert_eq!(after_early.version, before.version + 1, "the write landed");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = client.get("/peek").await;
    assert_eq!(
        max_age(&late),
        Some(4),
        "the cookie follows the extended expiry: {late:?}"
    );
    let touched = fixture.store.load(&id, Utc::now()).await.unwrap().unwrap();
    assert!(touched.expires_at > before.expires_at, "expiry extended");
    assert_eq!(
        touched.version, after_early.version,
        "a touch is not a data write"
    );
    assert!(
        client.get("/peek").await.cookies.is_empty(),
        "and not again right after"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late_write = client.get("/visit").await;
    assert_eq!(late_write.body, "3");
    assert_eq!(
        max_age(&late_write),
        Some(4),
        "a write past the fraction moves the expiry too: {late_write:?}"
    );
    let written = fixture.store.load(&id, Utc::now()).await.unwrap().unwrap();
    assert!(written.expires_at > touched.expires_at, "expiry extended");
    assert_eq!(written.version, touched.version + 1);
    fixture.cleanup().await;
}

/// The absolute lifetime is never extended by use.
async fn absolute_lifetime_ends_a_session_in_use<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let config = base()
        .with_idle_timeout(Duration::from_secs(60))
        .with_absolute_lifetime(Duration::from_millis(1200));
    let mut client = Client::new(app(fixture.store.clone(), config), COOKIE);
    let first = client.get("/visit").await;
    assert!(
        max_age(&first).unwrap() <= 2,
        "the cookie ends with the absolute lifetime: {first:?}"
    );
    for expected in 2..=3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(client.get("/visit").await.body, expected.to_string());
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(client.get("/visit").await.body, "1", "over, however active");
    fixture.cleanup().await;
}

/// Remember-me: a long server-side lifetime, kept with the session, and a
/// persistent cookie even when ordinary sessions get browser-session cookies.
async fn remember_me_switches_the_lifetime<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let config = base().with_persistent_cookie(false);
    let mut client = Client::new(app(fixture.store.clone(), config), COOKIE);
    let first = client.get("/visit").await;
    assert_eq!(max_age(&first), None, "a browser-session cookie");
    let remembered = client.post("/remember").await;
    let age = max_age(&remembered).expect("a remembered session gets a lasting cookie");
    assert!(
        (30 * 24 * 3600 - 5..=30 * 24 * 3600).contains(&age),
        "{age}"
    );
    let stored = fixture
        .store
        .load(&id_of(client.token.as_deref().unwrap()), Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.remember);
    assert!(stored.expires_at > Utc::now() + chrono::Duration::days(29));
    fixture.cleanup().await;
}

/// Private and signed cookies: the token is not readable, forgeries and
/// other keys get a fresh session, old keys verify during a rotation.
async fn keys_protect_the_cookie_and_rotate<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let (old_key, new_key) = (Key::generate(), Key::generate());
    for config in [
        base().with_signed_key(old_key.clone()),
        base().with_private_key(old_key.clone()),
    ] {
        let private = format!("{config:?}").contains("private");
        let mut client = Client::new(app(fixture.store.clone(), config.clone()), COOKIE);
        client.get("/visit").await;
        let value = client.token.clone().unwrap();
        assert!(
            SessionToken::parse(&value).is_none(),
            "the cookie is not the bare token"
        );
        assert_eq!(client.get("/visit").await.body, "2");

        let mut forged = value.clone().into_bytes();
        forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let reply = send(
            &client.app,
            "GET",
            "/peek",
            Some(&format!("{COOKIE}={forged}")),
        )
        .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "0"),
            "forged"
        );

        let other = if private {
            base().with_private_key(Key::generate())
        } else {
            base().with_signed_key(Key::generate())
        };
        let stranger = app(fixture.store.clone(), other);
        assert_eq!(
            send(
                &stranger,
                "GET",
                "/peek",
                Some(&format!("{COOKIE}={value}"))
            )
            .await
            .body,
            "0"
        );

        let rotated = if private {
            base().with_private_key(new_key.clone())
        } else {
            base().with_signed_key(new_key.clone())
        }
        .with_previous_keys([old_key.clone()]);
        let mut rotated_client = Client {
            app: app(fixture.store.clone(), rotated),
            ..client.clone()
        };
        assert_eq!(
            rotated_client.get("/visit").await.body,
            "3",
            "an old key still verifies"
        );
        assert_ne!(
            rotated_client.token.as_deref(),
            Some(value.as_str()),
            "re-issued under the new key"
        );
        assert_eq!(rotated_client.get("/visit").await.body, "4");
    }
    fixture.cleanup().await;
}

/// Storable mode: a session lives in memory (with a cookie) until marked
/// storable, then in the store; taking it back moves it to memory.
async fn storable_mode_keeps_sessions_in_memory_until_marked<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let config = base().with_mode(SessionMode::Storable);
    let mut client = Client::new(app(fixture.store.clone(), config), COOKIE);
    client.get("/visit").await;
    assert!(client.token.is_some(), "a memory session has its cookie");
    assert_eq!(client.get("/visit").await.body, "2");
    let id = id_of(client.token.as_deref().unwrap());
    assert!(
        fixture.store.load(&id, Utc::now()).await.unwrap().is_none(),
        "not in the store yet"
    );

    client.post("/consent").await;
    let stored = fixture
        .store
        .load(&id, Utc::now())
        .await
        .unwrap()
        .expect("now in the store");
    assert_eq!(stored.data.visits, 2);
    assert_eq!(client.get("/visit").await.body, "3");

    client.post("/withdraw").await;
    assert!(
        fixture.store.load(&id, Utc::now()).await.unwrap().is_none(),
        "out of the store"
    );
    assert_eq!(client.get("/visit").await.body, "4", "still in memory");
    fixture.cleanup().await;
}

/// Consent required: no cookie and nothing kept until consent.
async fn consent_required_sets_no_cookie_before_consent<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let config = base().with_consent_required(true);
    let mut client = Client::new(app(fixture.store.clone(), config), COOKIE);
    let reply = client.get("/visit").await;
    assert!(
        reply.cookies.is_empty(),
        "no cookie before consent: {:?}",
        reply.cookies
    );
    assert_eq!(client.get("/visit").await.body, "1", "nothing kept");
    assert_eq!(fixture.count_rows().await, 0);
    let reply = client.post("/consent").await;
    assert!(!reply.cookies.is_empty(), "consent gives a cookie");
    assert_eq!(fixture.count_rows().await, 1);
    assert_eq!(client.get("/visit").await.body, "1");
    assert_eq!(client.get("/visit").await.body, "2");
    let reply = client.post("/withdraw").await;
    assert!(
        reply.cookies.iter().any(|c| c.contains("Max-Age=0")),
        "withdrawal clears the cookie"
    );
    assert_eq!(fixture.count_rows().await, 0);
    fixture.cleanup().await;
}

/// Expired rows are deleted by the purge, which survives database errors
/// and stops with the layer.
async fn purge_deletes_expired_rows_and_survives_errors<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let short = base()
        .with_idle_timeout(Duration::from_millis(200))
        .with_purge_interval(None);
    let layer_app = app(fixture.store.clone(), short.clone());
    for _ in 0..5 {
        send(&layer_app, "GET", "/visit", None).await;
    }
    let mut keeper = Client::new(app(fixture.store.clone(), base()), COOKIE);
    keeper.get("/visit").await;
    assert_eq!(fixture.count_rows().await, 6);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let layer = SessionLayer::new(fixture.store.clone(), short.clone());
    if fixture.break_table().await.is_some() {
        assert!(
            layer.purge_expired().await.is_err(),
            "a purge against a missing table fails"
        );
        fixture.restore_table().await;
    }
    // Redis expires sessions by itself: nothing is left to purge.
    let expired = if B::EXPIRES_BY_ITSELF { 0 } else { 5 };
    assert_eq!(
        layer.purge_expired().await.unwrap(),
        expired,
        "expired rows purged"
    );
    assert_eq!(fixture.count_rows().await, 1, "the live session stays");
    assert_eq!(keeper.get("/peek").await.body, "1");

    // The background task: keeps going after an error, purges once the
    // table is back, and ends with stop_purge.
    let background = SessionLayer::new(
        fixture.store.clone(),
        short.with_purge_interval(Some(Duration::from_millis(100))),
    );
    let broken = fixture.break_table().await.is_some();
    tokio::time::sleep(Duration::from_millis(250)).await;
    if broken {
        fixture.restore_table().await;
    }
    for _ in 0..3 {
        send(&layer_app, "GET", "/visit", None).await;
    }
    assert_eq!(fixture.count_rows().await, 4);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        fixture.count_rows().await,
        1,
        "the background purge ran after the error"
    );
    background.stop_purge();
    fixture.cleanup().await;
}

/// A token header for API clients works alongside the cookie.
async fn header_tokens_work_alongside_cookies<B: Backend>() {
    let Some(fixture) = B::open::<Account>().await else {
        return;
    };
    let header = HeaderName::from_static("x-session-token");
    let config = base().with_token_header(header.clone());
    let app = app(fixture.store.clone(), config);
    let response = tower::ServiceExt::oneshot(
        app.clone(),
        http::Request::get("/visit")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let token = response
        .headers()
        .get(&header)
        .expect("the token header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        response.headers().get(http::header::SET_COOKIE).is_some(),
        "and the cookie"
    );
    let again = tower::ServiceExt::oneshot(
        app,
        http::Request::get("/visit")
            .header(&header, &token)
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let body = http_body_util::BodyExt::collect(again.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"2", "the header alone carries the session");
    fixture.cleanup().await;
}

conformance!(
    renew_issues_a_new_token_and_retires_the_old,
    renewed_session_is_not_resurrected_by_a_late_write,
    destroy_deletes_and_clears_the_cookie,
    expired_sessions_are_never_loaded,
    requests_move_the_expiry_at_most_once_per_fraction,
    absolute_lifetime_ends_a_session_in_use,
    remember_me_switches_the_lifetime,
    keys_protect_the_cookie_and_rotate,
    storable_mode_keeps_sessions_in_memory_until_marked,
    consent_required_sets_no_cookie_before_consent,
    purge_deletes_expired_rows_and_survives_errors,
    header_tokens_work_alongside_cookies,
);
