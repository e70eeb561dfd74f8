//! The greet counter: `GET /greet` answers how many times this visitor came.
//!
//! ```sh
//! cargo run --example counter                       # SQLite file sessions.db
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example counter
//! DATABASE_URL=mysql://root@127.0.0.1/test cargo run --example counter
//! DATABASE_URL=memory cargo run --example counter   # non-persistent
//! curl -c jar -b jar http://127.0.0.1:3000/greet    # 1, then 2, 3, ...
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use axum::{Router, routing::get};
use axum_typed_session::{
    MemoryStore, MySqlStore, PgStore, Session, SessionConfig, SessionLayer, SessionStore,
    SqliteStore,
};

#[derive(Session, Default)]
#[session(table = "counter_sessions")]
struct Visit {
    count: i64,
}

async fn greet(visit: Session<Visit>) -> String {
    // A read-modify-write: replayed on the fresh value if two requests of
    // this visitor race, so no visit is lost.
    visit.update_count(|count| *count += 1);
    visit.count().to_string()
}

async fn serve<S: SessionStore<Visit>>(store: S) -> anyhow::Result<()> {
    // Plain HTTP on loopback: a Secure cookie would not come back.
    let config = SessionConfig::default().with_secure(false);
    let app = Router::new()
        .route("/greet", get(greet))
        .layer(SessionLayer::new(store, config));
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3000,
    };
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!("listening on http://{address}/greet");
    axum::serve(listener, app).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://sessions.db?mode=rwc".into());
    match url.split_once(':').map(|(scheme, _)| scheme) {
        _ if url == "memory" => serve(MemoryStore::<Visit>::new()).await,
        Some("sqlite") => {
            let store = SqliteStore::<Visit>::connect(&url).await?;
            store.migrate().await?;
            serve(store).await
        }
        Some("postgres" | "postgresql") => {
            let store = PgStore::<Visit>::connect(&url).await?;
            store.migrate().await?;
            serve(store).await
        }
        Some("mysql" | "mariadb") => {
            let store = MySqlStore::<Visit>::connect(&url).await?;
            store.migrate().await?;
            serve(store).await
        }
        _ => anyhow::bail!(
            "DATABASE_URL must start with sqlite:, postgres:, mysql: or be `memory`, got {url:?}"
        ),
    }
}
