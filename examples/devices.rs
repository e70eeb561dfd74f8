//! "Your devices": sign in, see every session of your account (created,
//! last active, this device marked), and sign out one, the others, or all.
//!
//! ```sh
//! cargo run --example devices                       # SQLite file sessions.db
//! # open http://localhost:3000 in two browsers (or a private window)
//! ```
//!
//! The page lists the sessions that share the signed-in user's `user`
//! column, on its index: one query, whatever the table holds. A revoked
//! browser is anonymous on its next request. Sign-in takes a name only: the
//! point here is the sessions (see the auth issue for passwords). Forms are
//! protected by the cross-site guard; `PORT` and `DATABASE_URL` work as in
//! the counter example.

#[path = "common.rs"]
mod common;

use axum::{
    Form, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_typed_session::{
    CrossSiteGuard, Session, SessionConfig, SessionError, SessionId, SessionLayer, SessionQueries,
    SessionStore,
};
use serde::Deserialize;

#[derive(Session, Default)]
#[session(table = "device_sessions")]
struct Device {
    /// Who is signed in: indexed, so their sessions are one query away.
    #[session(index)]
    user: Option<String>,
    /// What the browser said it was, at sign-in.
    agent: Option<String>,
}

#[derive(Clone)]
struct App<S> {
    store: S,
    config: SessionConfig,
}

#[derive(Deserialize)]
struct SignIn {
    user: String,
}

async fn home<S: SessionStore<Device>>(
    State(app): State<App<S>>,
    session: Session<Device>,
) -> Result<Html<String>, SessionError> {
    let Some(user) = session.user() else {
        return Ok(Html(
            r#"<h1>Sign in</h1><form method="post" action="/login"><input name="user" placeholder="name"> <button>Sign in</button></form>"#
                .to_owned(),
        ));
    };
    let mut devices = app.store.sessions_by(&Device::USER, &user).await?;
    devices.sort_by_key(|device| std::cmp::Reverse(device.created_at));
    let this = session.id();
    let mut rows = String::new();
    for device in devices {
        let mark = if Some(device.id) == this {
            " (this device)"
        } else {
            ""
        };
        rows.push_str(&format!(
            r#"<tr><td>{agent}{mark}</td><td>{created}</td><td>{active}</td><td><form method="post" action="/devices/{id}/revoke"><button>Sign out this one</button></form></td></tr>"#,
            agent = common::escape(device.data.agent.as_deref().unwrap_or("unknown browser")),
            created = device.created_at.format("%Y-%m-%d %H:%M UTC"),
            active = device.last_active(&app.config).format("%Y-%m-%d %H:%M UTC"),
            id = device.id,
        ));
    }
    Ok(Html(format!(
        r#"<h1>Your devices, {user}</h1>
<table><tr><th>Device</th><th>Signed in</th><th>Last active</th><th></th></tr>{rows}</table>
<form method="post" action="/devices/revoke-others"><button>Sign out other devices</button></form>
<form method="post" action="/devices/revoke-all"><button>Sign out everywhere</button></form>
<form method="post" action="/logout"><button>Sign out</button></form>"#,
        user = common::escape(&user),
    )))
}

async fn login(
    session: Session<Device>,
    headers: HeaderMap,
    Form(sign_in): Form<SignIn>,
) -> Response {
    let user = sign_in.user.trim();
    if user.is_empty() {
        return (StatusCode::BAD_REQUEST, "a name, please").into_response();
    }
    session.set_user(Some(user.to_owned()));
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .map(|agent| agent.chars().take(120).collect());
    session.set_agent(agent);
    // A new token at sign-in, against session fixation.
    session.renew();
    Redirect::to("/").into_response()
}

async fn logout(session: Session<Device>) -> Redirect {
    session.destroy();
    Redirect::to("/")
}

/// Signs out one of the user's own sessions: an id from someone else's
/// list does nothing.
async fn revoke_one<S: SessionStore<Device>>(
    State(app): State<App<S>>,
    session: Session<Device>,
    Path(id): Path<String>,
) -> Result<Response, SessionError> {
    let (Some(user), Ok(id)) = (session.user(), id.parse::<SessionId>()) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let mine = app.store.sessions_by(&Device::USER, &user).await?;
    if !mine.iter().any(|device| device.id == id) {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    if Some(id) == session.id() {
        // Signing out this device: the request's own destroy clears its cookie.
        session.destroy();
    } else {
        app.store.destroy_session(&id).await?;
    }
    Ok(Redirect::to("/").into_response())
}

async fn revoke_others<S: SessionStore<Device>>(
    State(app): State<App<S>>,
    session: Session<Device>,
) -> Result<Redirect, SessionError> {
    if let (Some(user), Some(this)) = (session.user(), session.id()) {
        app.store
            .destroy_by_except(&Device::USER, &user, &this)
            .await?;
    }
    Ok(Redirect::to("/"))
}

async fn revoke_all<S: SessionStore<Device>>(
    State(app): State<App<S>>,
    session: Session<Device>,
) -> Result<Redirect, SessionError> {
    if let Some(user) = session.user() {
        app.store.destroy_by(&Device::USER, &user).await?;
        // This device too: the request's destroy removes its cookie.
        session.destroy();
    }
    Ok(Redirect::to("/"))
}

struct Devices;

impl common::App<Device> for Devices {
    fn router<S: SessionStore<Device>>(&self, store: S) -> Router {
        let config = SessionConfig::default();
        let app = App {
            store: store.clone(),
            config: config.clone(),
        };
        Router::new()
            .route("/", get(home::<S>))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/devices/{id}/revoke", post(revoke_one::<S>))
            .route("/devices/revoke-others", post(revoke_others::<S>))
            .route("/devices/revoke-all", post(revoke_all::<S>))
            .with_state(app)
            .layer(SessionLayer::new(store, config))
            .layer(CrossSiteGuard::new())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::run(Devices).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum_typed_session::MemoryStore;
    use tower::ServiceExt as _;

    use super::*;
    use crate::common::{App as _, testing::Browser};

    /// The session id in the revoke form of the row that names `agent`.
    fn id_in_row(page: &str, agent: &str) -> String {
        let row = page
            .split("<tr>")
            .find(|row| row.starts_with(&format!("<td>{agent}")))
            .expect("a row for the device");
        let start = row.find("/devices/").expect("a revoke form") + "/devices/".len();
        row[start..start + 64].to_owned()
    }

    fn browsers() -> (Browser, Browser, MemoryStore<Device>) {
        let store = MemoryStore::<Device>::new();
        let app = Devices.router(store.clone());
        let browser = |agent| Browser::new(app.clone(), agent);
        (browser("Laptop"), browser("Phone"), store)
    }

    #[tokio::test]
    async fn device_b_signs_out_device_a() {
        let (mut a, mut b, _) = browsers();
        assert_eq!(
            a.send("POST", "/login", "user=ada").await.0,
            StatusCode::SEE_OTHER
        );
        assert_eq!(
            b.send("POST", "/login", "user=ada").await.0,
            StatusCode::SEE_OTHER
        );
        let (_, page) = b.send("GET", "/", "").await;
        assert!(
            page.contains("Laptop</td>") && page.contains("Phone (this device)"),
            "{page}"
        );
        // B signs out A by the id on its page.
        let target = id_in_row(&page, "Laptop");
        let (status, _) = b
            .send("POST", &format!("/devices/{target}/revoke"), "")
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, page_a) = a.send("GET", "/", "").await;
        assert!(page_a.contains("Sign in"), "A is anonymous: {page_a}");
        let (_, page_b) = b.send("GET", "/", "").await;
        assert!(page_b.contains("Phone (this device)") && !page_b.contains("Laptop"));
    }

    #[tokio::test]
    async fn sign_out_others_and_everywhere() {
        let (mut a, mut b, store) = browsers();
        a.send("POST", "/login", "user=ada").await;
        b.send("POST", "/login", "user=ada").await;
        b.send("POST", "/devices/revoke-others", "").await;
        assert!(a.send("GET", "/", "").await.1.contains("Sign in"));
        assert!(b.send("GET", "/", "").await.1.contains("Your devices, ada"));
        a.send("POST", "/login", "user=ada").await;
        a.send("POST", "/devices/revoke-all", "").await;
        assert!(a.send("GET", "/", "").await.1.contains("Sign in"));
        assert!(b.send("GET", "/", "").await.1.contains("Sign in"));
        assert!(store.is_empty(), "every session of ada is gone");
    }

    #[tokio::test]
    async fn another_users_session_cannot_be_revoked() {
        let (mut a, mut b, _) = browsers();
        a.send("POST", "/login", "user=ada").await;
        b.send("POST", "/login", "user=bob").await;
        let (_, page) = a.send("GET", "/", "").await;
        let ada_id = id_in_row(&page, "Laptop");
        let (status, _) = b
            .send("POST", &format!("/devices/{ada_id}/revoke"), "")
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(a.send("GET", "/", "").await.1.contains("Your devices, ada"));
    }

    #[tokio::test]
    async fn a_cross_site_sign_in_is_refused() {
        let (mut a, _, _) = browsers();
        let response = a
            .app
            .clone()
            .oneshot(
                http::Request::post("/login?")
                    .header("sec-fetch-site", "cross-site")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from("user=mallory"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(a.send("GET", "/", "").await.1.contains("Sign in"));
    }
}
