use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    update: i64,
    id: String,
}

fn main() {}
