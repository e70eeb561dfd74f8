//! Sign-in with a username and password: axum-login's SQLite example,
//! ported. A users table with Argon2 password hashes (`password-auth`),
//! HTML forms, a protected page, "your devices", a password change that
//! signs out your other devices, and sign-out.
//!
//! ```sh
//! cargo run --example auth     # users in users.db, sessions in sessions.db
//! # open http://localhost:3000 and sign in as ferris / hunter42
//! ```
//!
//! `USERS_DATABASE_URL` picks the users' SQLite file; `DATABASE_URL`,
//! `DATABASE_MAX_CONNECTIONS` and `PORT` work as in the counter example.
//! Sign-in and sign-out refuse cross-site requests (login CSRF) by default;
//! the protected forms are behind a `CrossSiteGuard` too.

#[path = "common.rs"]
mod common;

use axum::{
    Form, Router,
    extract::Query,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_typed_session::{
    CrossSiteGuard, SessionConfig, SessionLayer, SessionStore,
    auth::{
        AuthData, AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId, next_path,
    },
    login_required,
};
use serde::Deserialize;
use sqlx::SqlitePool;

/// A row of the users table.
#[derive(Clone)]
struct User {
    id: i64,
    username: String,
    /// The PHC string of the password's Argon2 hash.
    password: String,
}

// By hand, so that no log line can print the password's hash.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

type UserRow = (i64, String, String);

impl From<UserRow> for User {
    fn from((id, username, password): UserRow) -> Self {
        Self {
            id,
            username,
            password,
        }
    }
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    // The hash changes with the password: sessions signed in with the old
    // one are signed out on their next request.
    fn session_auth_hash(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

/// What the sign-in form sends.
#[derive(Clone, Deserialize)]
struct Credentials {
    username: String,
    password: String,
    next: Option<String>,
}

#[derive(Debug)]
enum BackendError {
    Database(sqlx::Error),
    Hashing(tokio::task::JoinError),
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Database(error) => write!(f, "users database: {error}"),
            Self::Hashing(error) => write!(f, "password hashing task: {error}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// The users, in SQLite.
#[derive(Clone)]
struct Backend {
    db: SqlitePool,
}

impl Backend {
    async fn open(url: &str) -> anyhow::Result<Self> {
        let db = SqlitePool::connect(url).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS users (
                id INTEGER PRIMARY KEY,
                username TEXT NOT NULL UNIQUE,
                password TEXT NOT NULL
            )",
        )
        .execute(&db)
        .await?;
        let backend = Self { db };
        backend.add_user("ferris", "hunter42").await?;
        Ok(backend)
    }

    /// Adds a user unless the name is taken.
    async fn add_user(&self, username: &str, password: &str) -> anyhow::Result<()> {
        let hash = hash(password.to_owned()).await?;
        sqlx::query("INSERT INTO users (username, password) VALUES (?, ?) ON CONFLICT (username) DO NOTHING")
            .bind(username)
            .bind(hash)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    async fn set_password(&self, id: i64, password: String) -> Result<User, BackendError> {
        let hash = hash(password).await?;
        sqlx::query_as::<_, UserRow>(
            "UPDATE users SET password = ? WHERE id = ? RETURNING id, username, password",
        )
        .bind(hash)
        .bind(id)
        .fetch_one(&self.db)
        .await
        .map(User::from)
        .map_err(BackendError::Database)
    }
}

/// Argon2 is slow on purpose: off the async threads.
async fn hash(password: String) -> Result<String, BackendError> {
    tokio::task::spawn_blocking(move || password_auth::generate_hash(password))
        .await
        .map_err(BackendError::Hashing)
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = BackendError;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, BackendError> {
        let user = sqlx::query_as::<_, UserRow>(
            "SELECT id, username, password FROM users WHERE username = ?",
        )
        .bind(&creds.username)
        .fetch_optional(&self.db)
        .await
        .map_err(BackendError::Database)?;
        let Some(user) = user.map(User::from) else {
            return Ok(None);
        };
        let hash = user.password.clone();
        let verified = tokio::task::spawn_blocking(move || {
            password_auth::verify_password(creds.password, &hash).is_ok()
        })
        .await
        .map_err(BackendError::Hashing)?;
        Ok(verified.then_some(user))
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, BackendError> {
        sqlx::query_as::<_, UserRow>("SELECT id, username, password FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .map(|row| row.map(User::from))
            .map_err(BackendError::Database)
    }
}

type Auth = AuthSession<Backend>;

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"#
    ))
}

fn login_form(message: &str, next: Option<&str>) -> Html<String> {
    let next = next
        .map(|next| {
            format!(
                r#"<input type="hidden" name="next" value="{}">"#,
                common::escape(next)
            )
        })
        .unwrap_or_default();
    page(
        "Sign in",
        &format!(
            r#"<p class="message">{message}</p>
<form method="post" action="/login">
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
{next}<button>Sign in</button></form>"#
        ),
    )
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

async fn login_page(Query(Next { next }): Query<Next>) -> Html<String> {
    login_form("", next.as_deref())
}

async fn login(mut auth: Auth, Form(creds): Form<Credentials>) -> Response {
    let next = creds.next.clone();
    let user = match auth.authenticate(creds).await {
        Ok(Some(user)) => user,
        Ok(None) => return login_form("Invalid credentials.", next.as_deref()).into_response(),
        Err(error) => return error.into_response(),
    };
    if let Err(error) = auth.login(&user).await {
        return error.into_response();
    }
    Redirect::to(next_path(next.as_deref())).into_response()
}

async fn logout(mut auth: Auth) -> Response {
    match auth.logout().await {
        Ok(_) => Redirect::to("/login").into_response(),
        Err(error) => error.into_response(),
    }
}

async fn home(auth: Auth) -> Html<String> {
    let user = auth.user().await.expect("behind login_required");
    page(
        "Protected",
        &format!(
            r#"<p>Logged in as {name}.</p>
<p><a href="/devices">Your devices</a> · <a href="/password">Change password</a></p>
<form method="post" action="/logout"><button>Sign out</button></form>"#,
            name = common::escape(&user.username)
        ),
    )
}

async fn devices(auth: Auth) -> Response {
    let sessions = match auth.sessions().await {
        Ok(sessions) => sessions,
        Err(error) => return error.into_response(),
    };
    let config = SessionConfig::default();
    let this = auth.session().id();
    let rows: String = sessions
        .iter()
        .map(|session| {
            format!(
                "<li>signed in {created}, last active {active}{mark}</li>",
                created = session.created_at.format("%Y-%m-%d %H:%M UTC"),
                active = session.last_active(&config).format("%Y-%m-%d %H:%M UTC"),
                mark = if Some(session.id) == this {
                    " (this device)"
                } else {
                    ""
                },
            )
        })
        .collect();
    page(
        "Your devices",
        &format!(
            r#"<ul>{rows}</ul>
<form method="post" action="/devices/others"><button>Sign out other devices</button></form>
<p><a href="/">Back</a></p>"#
        ),
    )
    .into_response()
}

async fn sign_out_others(auth: Auth) -> Response {
    let user = auth.user().await.expect("behind login_required");
    match auth.sign_out_others(&user.id).await {
        Ok(_) => Redirect::to("/devices").into_response(),
        Err(error) => error.into_response(),
    }
}

async fn password_page() -> Html<String> {
    page(
        "Change password",
        r#"<form method="post" action="/password">
<label>Current <input name="current" type="password" autocomplete="current-password"></label>
<label>New <input name="new" type="password" autocomplete="new-password"></label>
<button>Change</button></form>"#,
    )
}

#[derive(Deserialize)]
struct PasswordChange {
    current: String,
    new: String,
}

async fn change_password(mut auth: Auth, Form(change): Form<PasswordChange>) -> Response {
    let user = auth.user().await.expect("behind login_required");
    let creds = Credentials {
        username: user.username.clone(),
        password: change.current,
        next: None,
    };
    match auth.authenticate(creds).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return page("Change password", "<p>The current password is wrong.</p>")
                .into_response();
        }
        Err(error) => return error.into_response(),
    }
    if change.new.len() < 8 {
        return page(
            "Change password",
            "<p>Eight characters at least, please.</p>",
        )
        .into_response();
    }
    let user = match auth.backend().set_password(user.id, change.new).await {
        Ok(user) => user,
        Err(error) => {
            return axum_typed_session::auth::Error::<Backend>::Backend(error).into_response();
        }
    };
    // This browser stays signed in (with a new token); every other is out.
    match auth.password_changed(&user).await {
        Ok(others) => page(
            "Password changed",
            &format!(r#"<p>Signed out {others} other session(s).</p><p><a href="/">Back</a></p>"#),
        )
        .into_response(),
        Err(error) => error.into_response(),
    }
}

struct AuthApp {
    backend: Backend,
}

impl common::App<AuthData> for AuthApp {
    fn router<S: SessionStore<AuthData>>(&self, store: S) -> Router {
        let sessions = SessionLayer::new(store, SessionConfig::default());
        let auth = AuthManagerLayerBuilder::new(self.backend.clone(), sessions).build();
        let protected = Router::new()
            .route("/", get(home))
            .route("/devices", get(devices))
            .route("/devices/others", post(sign_out_others))
            .route("/password", get(password_page).post(change_password))
            .route_layer(login_required!(Backend, login_url = "/login"))
            // Forms that change state, beyond sign-in and sign-out (which
            // the auth layer guards itself).
            .layer(CrossSiteGuard::new());
        Router::new()
            .merge(protected)
            .route("/login", get(login_page).post(login))
            .route("/logout", post(logout))
            .layer(auth)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users =
        std::env::var("USERS_DATABASE_URL").unwrap_or_else(|_| "sqlite://users.db?mode=rwc".into());
    let backend = Backend::open(&users).await?;
    common::run(AuthApp { backend }).await
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum_typed_session::MemoryStore;

    use super::*;
    use crate::common::{App as _, testing::Browser};

    const FERRIS: &str = "username=ferris&password=hunter42";

    async fn app() -> Router {
        // A real SQLite database, in memory, one connection so that it is one.
        let db = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let backend = Backend { db: db.clone() };
        sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE, password TEXT NOT NULL)")
            .execute(&db)
            .await
            .unwrap();
        backend.add_user("ferris", "hunter42").await.unwrap();
        AuthApp { backend }.router(MemoryStore::<AuthData>::new())
    }

    #[tokio::test]
    async fn wrong_and_right_passwords() {
        let mut browser = Browser::new(app().await, "Laptop");
        let (status, body) = browser
            .send("POST", "/login", "username=ferris&password=wrong")
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("Invalid credentials."), "{body}");
        assert!(browser.cookie.is_none(), "no session for a failed sign-in");

        let page = browser
            .request(
                "POST",
                "/login",
                FERRIS,
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(page.location.as_deref(), Some("/"));
        let (status, body) = browser.send("GET", "/", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("Logged in as ferris."), "{body}");

        browser.send("POST", "/logout", "").await;
        let page = browser.request("GET", "/", "", &[]).await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "signed out: protected again"
        );
    }

    #[tokio::test]
    async fn the_protected_page_sends_browsers_to_sign_in_and_back() {
        let mut browser = Browser::new(app().await, "Laptop");
        let page = browser.request("GET", "/devices", "", &[]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(page.location.as_deref(), Some("/login?next=%2Fdevices"));

        // The sign-in page carries `next` in its form...
        let form = browser
            .request("GET", "/login?next=%2Fdevices", "", &[])
            .await;
        assert!(
            form.body.contains(r#"name="next" value="/devices""#),
            "{}",
            form.body
        );
        // ...and the sign-in lands there.
        let page = browser
            .request(
                "POST",
                "/login",
                &format!("{FERRIS}&next=%2Fdevices"),
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(page.location.as_deref(), Some("/devices"));
        let (_, body) = browser.send("GET", "/devices", "").await;
        assert!(body.contains("(this device)"), "{body}");

        // An API client gets a 401, not a redirect.
        let mut api = Browser::new(browser.app.clone(), "curl");
        let page = api
            .request("GET", "/", "", &[("accept", "application/json")])
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_password_change_signs_out_the_other_browser() {
        let app = app().await;
        let mut laptop = Browser::new(app.clone(), "Laptop");
        let mut phone = Browser::new(app, "Phone");
        laptop.send("POST", "/login", FERRIS).await;
        phone.send("POST", "/login", FERRIS).await;
        let (_, devices) = laptop.send("GET", "/devices", "").await;
        assert_eq!(devices.matches("<li>").count(), 2, "{devices}");

        let (status, body) = laptop
            .send("POST", "/password", "current=hunter42&new=correct-horse")
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("Signed out 1 other session(s)."), "{body}");
        let (_, home) = laptop.send("GET", "/", "").await;
        assert!(
            home.contains("Logged in as ferris."),
            "the laptop stays in: {home}"
        );
        let page = phone.request("GET", "/", "", &[]).await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "the phone is signed out"
        );

        // The new password works and the old one does not.
        let (_, body) = phone.send("POST", "/login", FERRIS).await;
        assert!(body.contains("Invalid credentials."));
        let page = phone
            .request(
                "POST",
                "/login",
                "username=ferris&password=correct-horse",
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
    }

    #[tokio::test]
    async fn a_cross_site_form_is_refused() {
        let app = app().await;
        // An attacker's page auto-submitting its own credentials.
        let mut victim = Browser::new(app.clone(), "Laptop");
        let page = victim
            .request(
                "POST",
                "/login",
                FERRIS,
                &[("sec-fetch-site", "cross-site")],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(victim.cookie.is_none());

        // Signed in, a cross-site password change and sign-out are refused.
        victim.send("POST", "/login", FERRIS).await;
        let page = victim
            .request(
                "POST",
                "/password",
                "current=hunter42&new=attacker-chose",
                &[("sec-fetch-site", "cross-site")],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        let page = victim
            .request("POST", "/logout", "", &[("sec-fetch-site", "cross-site")])
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        let (_, home) = victim.send("GET", "/", "").await;
        assert!(home.contains("Logged in as ferris."));
    }
}
