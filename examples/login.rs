//! Login with a private (encrypted) session cookie and a renewed token.
//!
//! ```sh
//! SESSION_KEY=$(head -c 64 /dev/urandom | base64 -w0) cargo run --example login
//! curl -c jar -b jar http://localhost:3000/me                      # anonymous
//! curl -c jar -b jar -X POST 'http://localhost:3000/login?user=ada'
//! curl -c jar -b jar http://localhost:3000/me                      # ada
//! curl -c jar -b jar -X POST http://localhost:3000/logout
//! ```
//!
//! Login needs no session, so `SameSite` cannot stop a cross-site form
//! from logging a visitor into the attacker's account (login CSRF): the
//! [`CrossSiteGuard`] refuses state-changing requests a browser sent from
//! another site, with a 403. Same-origin forms and curl pass.
//!
//! `SESSION_KEY` is base64 of 64 random bytes; without it a key is generated
//! at start, so sessions do not survive a restart. `PORT` and `DATABASE_URL`
//! work as in the counter example.

#[path = "common.rs"]
mod common;

use axum::{
    Router,
    extract::Query,
    http::StatusCode,
    routing::{get, post},
};
use std::sync::OnceLock;

use axum_typed_session::{CrossSiteGuard, Key, Session, SessionConfig, SessionLayer, SessionStore};
use base64::Engine;
use serde::Deserialize;

#[derive(Session, Default)]
#[session(table = "login_sessions")]
struct Login {
    /// Indexed by nobody but queryable by everybody: `WHERE user_name = 'ada'`.
    user_name: Option<String>,
}

#[derive(Deserialize)]
struct Credentials {
    user: String,
}

async fn login(
    session: Session<Login>,
    Query(credentials): Query<Credentials>,
) -> Result<String, StatusCode> {
    let user = credentials.user.trim();
    if user.is_empty() {
        return Err(StatusCode::BAD_REQUEST);
    }
    session.set_user_name(Some(user.to_owned()));
    // A new token at login, so a token planted before it (session fixation)
    // is worth nothing after it.
    session.renew();
    Ok(format!("logged in as {user}"))
}

async fn me(session: Session<Login>) -> String {
    session
        .user_name()
        .unwrap_or_else(|| "anonymous".to_owned())
}

async fn logout(session: Session<Login>) -> &'static str {
    session.destroy();
    "logged out"
}

fn key() -> anyhow::Result<Key> {
    match std::env::var("SESSION_KEY") {
        Ok(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim())?;
            Key::try_from(bytes.as_slice()).map_err(|error| anyhow::anyhow!("SESSION_KEY: {error}"))
        }
        Err(_) => {
            tracing::warn!(
                "SESSION_KEY is not set: using a generated key, sessions end with the process"
            );
            Ok(Key::generate())
        }
    }
}

/// Read once at start, before the store is opened.
static KEY: OnceLock<Key> = OnceLock::new();

struct LoginApp;

impl common::App<Login> for LoginApp {
    fn router<S: SessionStore<Login>>(&self, store: S) -> Router {
        let key = KEY.get_or_init(Key::generate).clone();
        // Secure stays on: browsers send it back on http://localhost.
        let config = SessionConfig::default().with_private_key(key);
        Router::new()
            .route("/login", post(login))
            .route("/me", get(me))
            .route("/logout", post(logout))
            .layer(SessionLayer::new(store, config))
            .layer(CrossSiteGuard::new())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = KEY.set(key()?);
    common::run(LoginApp).await
}
