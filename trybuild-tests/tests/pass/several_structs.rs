//! Several session structs in one app, side by side.

use axum::{Router, routing::get};
use axum_typed_session::{MemoryStore, Session, SessionConfig, SessionLayer};

#[derive(Session, Default)]
struct Visit {
    count: i64,
}

#[derive(Session, Default)]
#[session(table = "carts")]
struct CartSession {
    items: i32,
}

async fn both(visit: Session<Visit>, cart: Session<CartSession>) -> String {
    visit.update_count(|count| *count += 1);
    format!("{} {}", visit.count(), cart.items())
}

fn main() {
    let _app: Router = Router::new()
        .route("/", get(both))
        .layer(SessionLayer::new(MemoryStore::<Visit>::new(), SessionConfig::default()))
        .layer(SessionLayer::new(
            MemoryStore::<CartSession>::new(),
            SessionConfig::default().with_cookie_name("cart"),
        ));
    assert_eq!(<CartSession as axum_typed_session::SessionData>::SCHEMA.table, "carts");
}
