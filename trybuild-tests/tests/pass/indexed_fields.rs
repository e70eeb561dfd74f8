use axum_typed_session::{MemoryStore, Session, SessionQueries};

#[derive(Session, Default)]
struct Auth {
    #[session(index)]
    user_id: Option<i64>,
    #[session(index, rename = "mail")]
    email: String,
    note: Option<String>,
}

async fn revoke(store: MemoryStore<Auth>) {
    let _ = store.sessions_by(&Auth::USER_ID, &42).await;
    let _ = store.destroy_by(&Auth::EMAIL, &"ada@example.com".to_owned()).await;
}

fn main() {
    let columns = <Auth as axum_typed_session::SessionData>::SCHEMA.columns;
    assert!(columns[0].indexed && columns[1].indexed && !columns[2].indexed);
    let _ = revoke;
}
