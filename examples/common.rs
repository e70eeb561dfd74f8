//! What the examples share: logging, the port, and the store picked by
//! `DATABASE_URL` (`sqlite:` by default, `postgres:`, `mysql:`, or `memory`),
//! with `DATABASE_MAX_CONNECTIONS` connections at most if set.

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum_typed_session::{
    MemoryStore, MySqlStore, PgStore, SessionData, SessionStore, SqliteStore,
    store::sql::{Backend, SqlStoreBuilder},
};

/// An example app, generic over the store it runs on.
pub trait App<T: SessionData> {
    fn router<S: SessionStore<T>>(store: S) -> Router;
}

/// Opens the store `DATABASE_URL` names (migrated) and serves `A` on it.
pub async fn run<T: SessionData, A: App<T>>() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://sessions.db?mode=rwc".into());
    let scheme = url.split_once(':').map(|(scheme, _)| scheme);
    match scheme {
        _ if url == "memory" => serve(A::router(MemoryStore::<T>::new())).await,
        Some("sqlite") => {
            let store = pooled(SqliteStore::<T>::builder())?.connect(&url).await?;
            store.migrate().await?;
            serve(A::router(store)).await
        }
        Some("postgres" | "postgresql") => {
            let store = pooled(PgStore::<T>::builder())?.connect(&url).await?;
            store.migrate().await?;
            serve(A::router(store)).await
        }
        Some("mysql" | "mariadb") => {
            let store = pooled(MySqlStore::<T>::builder())?.connect(&url).await?;
            store.migrate().await?;
            serve(A::router(store)).await
        }
        _ => anyhow::bail!(
            "DATABASE_URL must start with sqlite:, postgres:, mysql: or be `memory`, got {url:?}"
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
