use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    version: i64,
    #[session(rename = "expires_at")]
    expiry: i64,
}

fn main() {}
