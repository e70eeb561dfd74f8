//! What the examples share: logging, the port, and the store picked by
//! `DATABASE_URL` (`sqlite:` by default, `postgres:`, `mysql:`, `redis:`,
//! or `memory`), with `DATABASE_MAX_CONNECTIONS` connections at most if set
//! (SQL). `redis+unix:///path/to/redis.sock` is Redis on a Unix socket; a
//! Redis Cluster is its seed nodes, comma-separated:
//! `DATABASE_URL=redis://127.0.0.1:7000,redis://127.0.0.1:7001`.

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum_typed_session::{
    MemoryStore, MySqlStore, PgStore, RedisStore, SessionData, SessionStore, SqliteStore,
    store::sql::{Backend, SqlStoreBuilder},
};

/// An example app, generic over the store it runs on.
pub trait App<T: SessionData> {
    fn router<S: SessionStore<T>>(&self, store: S) -> Router;
}

/// Opens the store `DATABASE_URL` names (migrated) and serves `A` on it.
pub async fn run<T: SessionData, A: App<T>>(app: A) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://sessions.db?mode=rwc".into());
    let scheme = url.split_once(':').map(|(scheme, _)| scheme);
    match scheme {
        _ if url == "memory" => serve(app.router(MemoryStore::<T>::new())).await,
        Some("sqlite") => {
            let store = pooled(SqliteStore::<T>::builder())?.connect(&url).await?;
            store.migrate().await?;
            serve(app.router(store)).await
        }
        Some("postgres" | "postgresql") => {
            let store = pooled(PgStore::<T>::builder())?.connect(&url).await?;
            store.migrate().await?;
            serve(app.router(store)).await
        }
        Some("mysql" | "mariadb") => {
            let store = pooled(MySqlStore::<T>::builder())?.connect(&url).await?;
            store.migrate().await?;
            serve(app.router(store)).await
        }
        // Nothing to migrate: a session is a hash, created by its first write.
        Some("redis" | "rediss") if url.contains(',') => {
            let nodes = url.split(',').map(str::trim);
            serve(app.router(RedisStore::<T>::connect_cluster(nodes).await?)).await
        }
        Some("redis" | "rediss" | "redis+unix" | "unix") => {
            serve(app.router(RedisStore::<T>::connect(&url).await?)).await
        }
        _ => anyhow::bail!(
            "DATABASE_URL must start with sqlite:, postgres:, mysql:, redis: or be `memory`, got {url:?}"
        ),
    }
}

/// The pool size from `DATABASE_MAX_CONNECTIONS`, if set (else sqlx's 10).
fn pooled<B: Backend, T: SessionData>(
    builder: SqlStoreBuilder<B, T>,
) -> anyhow::Result<SqlStoreBuilder<B, T>> {
    Ok(match std::env::var("DATABASE_MAX_CONNECTIONS") {
        Ok(max) => builder.max_connections(max.parse()?),
        Err(_) => builder,
    })
}

async fn serve(app: Router) -> anyhow::Result<()> {
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3000,
    };
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(address).await?;
    // Printed as localhost: browsers treat it as a secure context, so the
    // Secure session cookie comes back over plain HTTP there.
    tracing::info!("listening on http://localhost:{port}");
    axum::serve(listener, app).await?;
    Ok(())
}

/// Text for HTML: names and agents are the visitor's, not ours.
#[allow(dead_code, reason = "used by the examples that render HTML")]
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
#[allow(dead_code, reason = "each example's tests use part of it")]
pub mod testing {
    use axum::{Router, body::Body, http::StatusCode};
    use http::header;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// A browser: one cookie jar, and the headers a same-origin form sends.
    pub struct Browser {
        pub app: Router,
        pub cookie: Option<String>,
        pub agent: &'static str,
    }

    /// What a browser got back.
    pub struct Page {
        pub status: StatusCode,
        /// Where a redirect points.
        pub location: Option<String>,
        pub body: String,
    }

    impl Browser {
        pub fn new(app: Router, agent: &'static str) -> Self {
            Self {
                app,
                cookie: None,
                agent,
            }
        }

        /// A same-origin request with a form body.
        pub async fn send(&mut self, method: &str, path: &str, form: &str) -> (StatusCode, String) {
            let page = self
                .request(method, path, form, &[("sec-fetch-site", "same-origin")])
                .await;
            (page.status, page.body)
        }

        /// A request with these headers (besides the agent, the cookie and
        /// the form's content type), keeping the cookie it sets.
        pub async fn request(
            &mut self,
            method: &str,
            path: &str,
            form: &str,
            headers: &[(&str, &str)],
        ) -> Page {
            let mut request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::USER_AGENT, self.agent)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            if !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
            {
                // What a browser's navigation asks for.
                request =
                    request.header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8");
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(cookie) = &self.cookie {
                request = request.header(header::COOKIE, cookie);
            }
            let response = self
                .app
                .clone()
                .oneshot(request.body(Body::from(form.to_owned())).unwrap())
                .await
                .unwrap();
            if let Some(set) = response.headers().get(header::SET_COOKIE) {
                let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
                self.cookie = (!pair.ends_with('=')).then_some(pair);
            }
            let status = response.status();
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|location| location.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Page {
                status,
                location,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        }
    }
}
