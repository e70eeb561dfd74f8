//! Sign-in on every store: the axum-login-shaped backend traits, the
//! `AuthSession` extractor, route protection, revocation by user, the user
//! cache, the cross-site guard on sign-in, and what reaches a log.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::Query,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_typed_session::{
    Session, SessionConfig, SessionLayer, SessionQueries, SessionStore,
    auth::{
        AuthData, AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, AuthzBackend,
        UserId, next_path,
    },
    login_required, permission_required, predicate_required,
};
use conformance_tests::{Backend, Client, Reply, conformance, send_with};
use http::StatusCode;
use serde::Deserialize;

const COOKIE: &str = "auth";
const ADA: &str = "ada-lovelace-7f3";
const ADA_PASSWORD: &str = "correct-horse-battery-staple";
const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
const SAME_ORIGIN: (&str, &str) = ("sec-fetch-site", "same-origin");
const CROSS_SITE: (&str, &str) = ("sec-fetch-site", "cross-site");

#[derive(Clone)]
struct User {
    id: i64,
    name: String,
    password: String,
}

// Never the password, as a real app would write it.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        // A stand-in for a password hash: changes when the password does.
        self.password.as_bytes()
    }
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

/// The users, in this process: the sessions are in the real databases.
#[derive(Clone, Default)]
struct Users {
    users: Arc<Mutex<HashMap<i64, User>>>,
    admins: Arc<Mutex<HashSet<i64>>>,
    get_user_calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Users {
    fn new() -> Self {
        let users = Self::default();
        users.add(1, ADA, ADA_PASSWORD);
        users.add(2, "bob", "hunter2");
        users.admins.lock().unwrap().insert(2);
        users
    }

    fn add(&self, id: i64, name: &str, password: &str) {
        self.users.lock().unwrap().insert(
            id,
            User {
                id,
                name: name.to_owned(),
                password: password.to_owned(),
            },
        );
    }

    fn set_password(&self, id: i64, password: &str) -> User {
        let mut users = self.users.lock().unwrap();
        let user = users.get_mut(&id).expect("a user");
        user.password = password.to_owned();
        user.clone()
    }

    fn check(&self) -> Result<(), BackendDown> {
        if self.down.load(Ordering::SeqCst) {
            Err(BackendDown)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
struct BackendDown;

impl std::fmt::Display for BackendDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the users database is down")
    }
}

impl std::error::Error for BackendDown {}

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = BackendDown;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, BackendDown> {
        self.check()?;
        Ok(self
            .users
            .lock()
            .unwrap()
            .values()
            .find(|user| user.name == creds.name && user.password == creds.password)
            .cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, BackendDown> {
        self.check()?;
        self.get_user_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.users.lock().unwrap().get(id).cloned())
    }
}

impl AuthzBackend for Users {
    type Permission = String;

    async fn get_user_permissions(&self, user: &User) -> Result<HashSet<String>, BackendDown> {
        self.check()?;
        Ok(if self.admins.lock().unwrap().contains(&user.id) {
            HashSet::from(["admin".to_owned()])
        } else {
            HashSet::new()
        })
    }
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
    #[serde(default)]
    remember: bool,
}

async fn login(
    mut auth: AuthSession<Users>,
    Query(creds): Query<Credentials>,
    Query(next): Query<Next>,
) -> Response {
    let user = match auth.authenticate(creds).await {
        Ok(Some(user)) => user,
        Ok(None) => return "wrong name or password".into_response(),
        Err(error) => return error.into_response(),
    };
    // Remember-me rides along in login's one write.
    auth.session().set_remember(next.remember);
    if let Err(error) = auth.login(&user).await {
        return error.into_response();
    }
    Redirect::to(next_path(next.next.as_deref())).into_response()
}

async fn whoami(auth: AuthSession<Users>) -> String {
    auth.user()
        .await
        .map_or_else(|| "anonymous".to_owned(), |user| user.name)
}

#[derive(Deserialize)]
struct NewPassword {
    new: String,
}

async fn is_bob(auth: AuthSession<Users>) -> bool {
    auth.user().await.is_some_and(|user| user.name == "bob")
}

fn app<S: SessionStore<AuthData>>(store: S, users: Users, cache: Option<Duration>) -> Router {
    let sessions = SessionLayer::new(store, SessionConfig::default().with_cookie_name(COOKIE));
    let mut auth = AuthManagerLayerBuilder::new(users.clone(), sessions);
    if let Some(ttl) = cache {
        auth = auth.with_user_cache(ttl);
    }
    let password_users = users.clone();
    Router::new()
        .route(
            "/account",
            get(|auth: AuthSession<Users>| async move {
                format!("account of {}", auth.user().await.expect("signed in").name)
            }),
        )
        .route_layer(login_required!(Users, login_url = "/login"))
        .merge(
            Router::new()
                .route("/api/me", get(whoami))
                .route_layer(login_required!(Users)),
        )
        .merge(
            Router::new()
                .route("/admin", get(|| async { "admin area" }))
                .route_layer(permission_required!(Users, login_url = "/login", "admin")),
        )
        .merge(
            Router::new()
                .route("/bob", get(|| async { "bob's page" }))
                .route_layer(predicate_required!(is_bob, StatusCode::NOT_FOUND)),
        )
        .route("/login", post(login))
        .route(
            "/logout",
            post(|mut auth: AuthSession<Users>| async move {
                match auth.logout().await {
                    Ok(user) => format!("signed out: {}", user.is_some()).into_response(),
                    Err(error) => error.into_response(),
                }
            }),
        )
        .route("/whoami", get(whoami))
        .route(
            "/remembered",
            get(|auth: AuthSession<Users>| async move { auth.session().is_remembered().to_string() }),
        )
        .route(
            "/devices",
            get(|auth: AuthSession<Users>| async move {
                match auth.sessions().await {
                    Ok(sessions) => sessions.len().to_string().into_response(),
                    Err(error) => error.into_response(),
                }
            }),
        )
        .route(
            "/password",
            post(
                move |mut auth: AuthSession<Users>, Query(new): Query<NewPassword>| {
                    let users = password_users.clone();
                    async move {
                        let Some(user) = auth.user().await else {
                            return StatusCode::UNAUTHORIZED.into_response();
                        };
                        let user = users.set_password(user.id, &new.new);
                        match auth.password_changed(&user).await {
                            Ok(count) => format!("signed out elsewhere: {count}").into_response(),
                            Err(error) => error.into_response(),
                        }
                    }
                },
            ),
        )
        .route(
            "/everywhere",
            post(|mut auth: AuthSession<Users>| async move {
                let Some(user) = auth.user().await else {
                    return StatusCode::UNAUTHORIZED.into_response();
                };
                match auth.sign_out_everywhere(&user.id).await {
                    Ok(count) => count.to_string().into_response(),
                    Err(error) => error.into_response(),
                }
            }),
        )
        .route(
            "/others",
            post(|auth: AuthSession<Users>| async move {
                let Some(user) = auth.user().await else {
                    return StatusCode::UNAUTHORIZED.into_response();
                };
                match auth.sign_out_others(&user.id).await {
                    Ok(count) => count.to_string().into_response(),
                    Err(error) => error.into_response(),
                }
            }),
        )
        .route(
            // Plants a session as an older app version could have left it.
            "/plant",
            post(|session: Session<AuthData>| async move {
                session.set_user_id(Some("\"not an i64\"".to_owned()));
                session.set_auth_hash(Some(b"x".to_vec()));
            }),
        )
        .layer(auth.build())
}

fn login_path(name: &str, password: &str) -> String {
    format!("/login?name={name}&password={password}")
}

async fn sign_in(client: &mut Client, name: &str, password: &str) -> Reply {
    client
        .send_with("POST", &login_path(name, password), &[SAME_ORIGIN])
        .await
}

async fn user_sessions<S: SessionStore<AuthData>>(store: &S, id: i64) -> usize {
    store
        .sessions_by(&AuthData::USER_ID, &id.to_string())
        .await
        .expect("list")
        .len()
}

async fn sign_in_and_out<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let mut client = Client::new(app(fixture.store.clone(), Users::new(), None), COOKIE);

    let wrong = sign_in(&mut client, ADA, "wrong").await;
    assert_eq!(wrong.status, StatusCode::OK);
    assert_eq!(wrong.body, "wrong name or password");
    assert!(wrong.cookies.is_empty(), "no session for a failed sign-in");
    assert_eq!(fixture.count_rows().await, 0);

    let right = sign_in(&mut client, ADA, ADA_PASSWORD).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.headers["location"], "/");
    let cookie = right.cookies.first().expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure"),
        "{cookie}"
    );
    assert_eq!(client.get("/whoami").await.body, ADA);
    assert_eq!(
        user_sessions(&fixture.store, 1).await,
        1,
        "indexed under the user's id"
    );

    let out = client.send_with("POST", "/logout", &[SAME_ORIGIN]).await;
    assert_eq!(out.body, "signed out: true");
    assert_eq!(
        out.cookie(COOKIE).as_deref(),
        Some(""),
        "the removal cookie"
    );
    assert_eq!(fixture.count_rows().await, 0, "logout deletes the row");
    assert_eq!(client.get("/whoami").await.body, "anonymous");
    fixture.cleanup().await;
}

fn max_age(reply: &Reply) -> u64 {
    reply.cookies[0]
        .split("; ")
        .find_map(|attribute| attribute.strip_prefix("Max-Age="))
        .expect("a Max-Age")
        .parse()
        .expect("seconds")
}

async fn remember_me_at_sign_in<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let app = app(fixture.store.clone(), Users::new(), None);
    let mut plain = Client::new(app.clone(), COOKIE);
    let reply = sign_in(&mut plain, ADA, ADA_PASSWORD).await;
    let plain_age = max_age(&reply);
    assert_eq!(plain.get("/remembered").await.body, "false");
    let mut remembered = Client::new(app, COOKIE);
    let reply = remembered
        .send_with(
            "POST",
            &format!("{}&remember=true", login_path(ADA, ADA_PASSWORD)),
            &[SAME_ORIGIN],
        )
        .await;
    assert!(
        max_age(&reply) > plain_age,
        "the remember-me lifetime, not the idle timeout: {:?}",
        reply.cookies
    );
    assert_eq!(remembered.get("/remembered").await.body, "true");
    fixture.cleanup().await;
}

async fn login_renews_the_token<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let mut client = Client::new(app(fixture.store.clone(), Users::new(), None), COOKIE);
    sign_in(&mut client, ADA, ADA_PASSWORD).await;
    let before = client.token.clone().expect("a token");
    let again = sign_in(&mut client, "bob", "hunter2").await;
    let after = again
        .cookie(COOKIE)
        .unwrap_or_else(|| panic!("a new cookie at sign-in: {again:?}"));
    assert_ne!(before, after, "a sign-in issues a new token");
    assert_eq!(client.get("/whoami").await.body, "bob");
    let mut planted = Client::new(client.app.clone(), COOKIE);
    planted.token = Some(before);
    assert_eq!(
        planted.get("/whoami").await.body,
        "anonymous",
        "the old token is dead"
    );
    assert_eq!(fixture.count_rows().await, 1);
    fixture.cleanup().await;
}

async fn protected_routes<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let mut client = Client::new(app(fixture.store.clone(), Users::new(), None), COOKIE);

    let browser = client.send_with("GET", "/account?tab=2", &[BROWSER]).await;
    assert_eq!(browser.status, StatusCode::SEE_OTHER);
    assert_eq!(
        browser.headers["location"],
        "/login?next=%2Faccount%3Ftab%3D2"
    );
    let api = client
        .send_with("GET", "/account", &[("accept", "*/*")])
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        client.send_with("GET", "/api/me", &[BROWSER]).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Sign in from the page the redirect named, and land where asked.
    let signed_in = client
        .send_with(
            "POST",
            &format!(
                "{}&next=%2Faccount%3Ftab%3D2",
                login_path(ADA, ADA_PASSWORD)
            ),
            &[SAME_ORIGIN],
        )
        .await;
    assert_eq!(signed_in.headers["location"], "/account?tab=2");
    let account = client.send_with("GET", "/account?tab=2", &[BROWSER]).await;
    assert_eq!(account.status, StatusCode::OK);
    assert_eq!(account.body, format!("account of {ADA}"));
    assert_eq!(client.get("/api/me").await.body, ADA);

    // `next` is the visitor's input: never a way off the site.
    let evil = client
        .send_with(
            "POST",
            &format!("{}&next=%2F%2Fevil.example", login_path(ADA, ADA_PASSWORD)),
            &[SAME_ORIGIN],
        )
        .await;
    assert_eq!(evil.headers["location"], "/");
    fixture.cleanup().await;
}

async fn permissions_and_predicates<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let app = app(fixture.store.clone(), Users::new(), None);
    let mut anonymous = Client::new(app.clone(), COOKIE);
    let admin = anonymous.send_with("GET", "/admin", &[BROWSER]).await;
    assert_eq!(
        admin.status,
        StatusCode::SEE_OTHER,
        "signed out: to the sign-in page"
    );
    assert_eq!(admin.headers["location"], "/login?next=%2Fadmin");
    assert_eq!(anonymous.get("/bob").await.status, StatusCode::NOT_FOUND);

    let mut ada = Client::new(app.clone(), COOKIE);
    sign_in(&mut ada, ADA, ADA_PASSWORD).await;
    assert_eq!(
        ada.send_with("GET", "/admin", &[BROWSER]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(ada.get("/bob").await.status, StatusCode::NOT_FOUND);

    let mut bob = Client::new(app, COOKIE);
    sign_in(&mut bob, "bob", "hunter2").await;
    let admin = bob.get("/admin").await;
    assert_eq!(
        (admin.status, admin.body.as_str()),
        (StatusCode::OK, "admin area")
    );
    assert_eq!(bob.get("/bob").await.body, "bob's page");
    fixture.cleanup().await;
}

async fn password_change_signs_out_the_other_clients<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    // With the user cache on: the revocation must not wait for its TTL.
    let users = Users::new();
    let app = app(
        fixture.store.clone(),
        users.clone(),
        Some(Duration::from_secs(3600)),
    );
    let mut phone = Client::new(app.clone(), COOKIE);
    let mut laptop = Client::new(app.clone(), COOKIE);
    let mut bob = Client::new(app, COOKIE);
    sign_in(&mut phone, ADA, ADA_PASSWORD).await;
    sign_in(&mut laptop, ADA, ADA_PASSWORD).await;
    sign_in(&mut bob, "bob", "hunter2").await;
    assert_eq!(laptop.get("/devices").await.body, "2");

    let before = laptop.token.clone();
    let changed = laptop
        .send_with("POST", "/password?new=tr0ub4dor", &[SAME_ORIGIN])
        .await;
    assert_eq!(changed.body, "signed out elsewhere: 1");
    assert_ne!(
        laptop.token, before,
        "the changing session gets a new token"
    );
    assert_eq!(laptop.get("/whoami").await.body, ADA, "and stays signed in");
    assert_eq!(phone.get("/whoami").await.body, "anonymous");
    assert_eq!(
        bob.get("/whoami").await.body,
        "bob",
        "other users are untouched"
    );
    assert_eq!(user_sessions(&fixture.store, 1).await, 1);
    fixture.cleanup().await;
}

async fn a_changed_hash_signs_the_session_out<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let users = Users::new();
    let mut client = Client::new(app(fixture.store.clone(), users.clone(), None), COOKIE);
    sign_in(&mut client, ADA, ADA_PASSWORD).await;
    // Changed in the backend alone (another service, a reset script).
    users.set_password(1, "changed-elsewhere");
    let reply = client.get("/whoami").await;
    assert_eq!(reply.body, "anonymous");
    assert_eq!(
        reply.cookie(COOKIE).as_deref(),
        Some(""),
        "the cookie is removed"
    );
    assert_eq!(fixture.count_rows().await, 0, "the session is deleted");
    // Signing in again in one request after being signed out works.
    let again = sign_in(&mut client, ADA, "changed-elsewhere").await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(client.get("/whoami").await.body, ADA);

    // A user that was deleted is signed out the same way.
    users.users.lock().unwrap().remove(&1);
    assert_eq!(client.get("/whoami").await.body, "anonymous");
    assert_eq!(fixture.count_rows().await, 0);
    fixture.cleanup().await;
}

async fn sign_out_everywhere_and_others<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let app = app(fixture.store.clone(), Users::new(), None);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::new(app.clone(), COOKIE);
        sign_in(&mut client, ADA, ADA_PASSWORD).await;
        clients.push(client);
    }
    let mut bob = Client::new(app, COOKIE);
    sign_in(&mut bob, "bob", "hunter2").await;

    assert_eq!(
        clients[0]
            .send_with("POST", "/others", &[SAME_ORIGIN])
            .await
            .body,
        "2"
    );
    assert_eq!(clients[0].get("/whoami").await.body, ADA);
    assert_eq!(clients[1].get("/whoami").await.body, "anonymous");
    assert_eq!(clients[2].get("/whoami").await.body, "anonymous");

    sign_in(&mut clients[1], ADA, ADA_PASSWORD).await;
    let everywhere = clients[1]
        .send_with("POST", "/everywhere", &[SAME_ORIGIN])
        .await;
    assert_eq!(everywhere.body, "2");
    assert_eq!(everywhere.cookie(COOKIE).as_deref(), Some(""));
    assert_eq!(clients[0].get("/whoami").await.body, "anonymous");
    assert_eq!(clients[1].get("/whoami").await.body, "anonymous");
    assert_eq!(
        user_sessions(&fixture.store, 1).await,
        0,
        "no session of the user is left"
    );
    assert_eq!(bob.get("/whoami").await.body, "bob");
    fixture.cleanup().await;
}

async fn cross_site_sign_in_is_refused<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let mut client = Client::new(app(fixture.store.clone(), Users::new(), None), COOKIE);
    // An attacker's page auto-submitting its own credentials (login CSRF).
    let forged = client
        .send_with(
            "POST",
            &login_path("bob", "hunter2"),
            &[CROSS_SITE, BROWSER],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.body.contains("cross-site"), "{}", forged.body);
    assert!(forged.cookies.is_empty());
    assert_eq!(fixture.count_rows().await, 0);
    let older_browser = client
        .send_with(
            "POST",
            &login_path("bob", "hunter2"),
            &[("origin", "https://evil.example"), ("host", "app.example")],
        )
        .await;
    assert_eq!(older_browser.status, StatusCode::FORBIDDEN);

    sign_in(&mut client, ADA, ADA_PASSWORD).await;
    let logout = client.send_with("POST", "/logout", &[CROSS_SITE]).await;
    assert_eq!(
        logout.status,
        StatusCode::FORBIDDEN,
        "a cross-site sign-out too"
    );
    assert_eq!(client.get("/whoami").await.body, ADA);
    // Reading who is signed in is not refused.
    assert_eq!(
        client.send_with("GET", "/whoami", &[CROSS_SITE]).await.body,
        ADA
    );
    fixture.cleanup().await;
}

async fn the_user_cache<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    for (cache, expected) in [(None, 5), (Some(Duration::from_secs(3600)), 0)] {
        let users = Users::new();
        let mut client = Client::new(app(fixture.store.clone(), users.clone(), cache), COOKIE);
        sign_in(&mut client, ADA, ADA_PASSWORD).await;
        for _ in 0..5 {
            assert_eq!(client.get("/whoami").await.body, ADA);
        }
        assert_eq!(
            users.get_user_calls.load(Ordering::SeqCst),
            expected,
            "cache {cache:?}"
        );
    }

    let users = Users::new();
    let mut client = Client::new(
        app(
            fixture.store.clone(),
            users.clone(),
            Some(Duration::from_millis(100)),
        ),
        COOKIE,
    );
    sign_in(&mut client, ADA, ADA_PASSWORD).await;
    // The documented trade-off: within the TTL a change behind the cache's
    // back is not seen...
    users.set_password(1, "changed-elsewhere");
    assert_eq!(client.get("/whoami").await.body, ADA);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ...after it, it is.
    assert_eq!(client.get("/whoami").await.body, "anonymous");

    // A stale cached user never signs out a session newer than it.
    let users = Users::new();
    let app = app(
        fixture.store.clone(),
        users.clone(),
        Some(Duration::from_secs(3600)),
    );
    let mut first = Client::new(app.clone(), COOKIE);
    sign_in(&mut first, ADA, ADA_PASSWORD).await;
    assert_eq!(first.get("/whoami").await.body, ADA);
    // Changed elsewhere, then signed in with the new password: the cache
    // still holds the user with the old hash.
    users.set_password(1, "new-password");
    let mut second = Client::new(app, COOKIE);
    sign_in(&mut second, ADA, "new-password").await;
    assert_eq!(second.get("/whoami").await.body, ADA);
    fixture.cleanup().await;
}

async fn bad_sessions_and_backend_failures<B: Backend>() {
    let Some(fixture) = B::open::<AuthData>().await else {
        return;
    };
    let users = Users::new();
    let mut client = Client::new(app(fixture.store.clone(), users.clone(), None), COOKIE);
    // A row whose user id does not decode as this backend's id: signed out.
    client.post("/plant").await;
    assert_eq!(fixture.count_rows().await, 1);
    let reply = client.get("/whoami").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "anonymous")
    );
    assert_eq!(fixture.count_rows().await, 0);

    // The backend failing is a 500 with a log line; the session stays.
    sign_in(&mut client, ADA, ADA_PASSWORD).await;
    users.down.store(true, Ordering::SeqCst);
    let reply = client.get("/whoami").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "internal server error");
    let reply = client
        .send_with("POST", &login_path(ADA, ADA_PASSWORD), &[SAME_ORIGIN])
        .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    users.down.store(false, Ordering::SeqCst);
    assert_eq!(client.get("/whoami").await.body, ADA, "nothing was lost");
    fixture.cleanup().await;
}

conformance!(
    sign_in_and_out,
    remember_me_at_sign_in,
    login_renews_the_token,
    protected_routes,
    permissions_and_predicates,
    password_change_signs_out_the_other_clients,
    a_changed_hash_signs_the_session_out,
    sign_out_everywhere_and_others,
    cross_site_sign_in_is_refused,
    the_user_cache,
    bad_sessions_and_backend_failures,
);

/// Every log line of a whole sign-in flow, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn nothing_about_the_user_or_the_password_reaches_a_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = axum_typed_session::MemoryStore::<AuthData>::new();
    let users = Users::new();
    let mut client = Client::new(app(store, users.clone(), None), COOKIE);
    sign_in(&mut client, ADA, "a-wrong-password-9c1").await;
    sign_in(&mut client, ADA, ADA_PASSWORD).await;
    client.get("/account").await;
    users.down.store(true, Ordering::SeqCst);
    client.get("/whoami").await;
    users.down.store(false, Ordering::SeqCst);
    users.set_password(1, "the-new-password-4d2");
    client.get("/whoami").await;
    client
        .send_with(
            "POST",
            &login_path(ADA, "the-new-password-4d2"),
            &[CROSS_SITE],
        )
        .await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("the users database is down"),
        "the backend error is logged:\n{logs}"
    );
    for secret in [
        ADA,
        ADA_PASSWORD,
        "a-wrong-password-9c1",
        "the-new-password-4d2",
    ] {
        assert!(!logs.contains(secret), "{secret} reached the log:\n{logs}");
    }
}

/// The layers answer without a store round trip where no session is named.
#[tokio::test]
async fn routes_without_auth_pay_nothing() {
    let store =
        conformance_tests::Counting::new(axum_typed_session::MemoryStore::<AuthData>::new());
    let calls = store.calls.clone();
    let sessions = SessionLayer::new(store, SessionConfig::default().with_cookie_name(COOKIE));
    let app = Router::new()
        .route("/plain", get(|| async { "plain" }))
        .layer(AuthManagerLayerBuilder::new(Users::new(), sessions).build());
    let reply = send_with(&app, "GET", "/plain", Some("auth=whatever"), &[]).await;
    assert_eq!(reply.body, "plain");
    assert_eq!(calls.take(), (0, 0, 0, 0));
}

/// `AuthSession` without its layer: a 500 that says what to add, logged.
#[tokio::test]
async fn a_missing_layer_is_a_clear_500() {
    let app = Router::new().route("/whoami", get(whoami));
    let reply = send_with(&app, "GET", "/whoami", None, &[]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.body, "internal server error",
        "details go to the log, not the visitor"
    );
    let error = axum_typed_session::auth::Error::<Users>::MissingLayer.to_string();
    assert!(
        error.contains("AuthManagerLayerBuilder::new(backend, session_layer)"),
        "{error}"
    );
}
