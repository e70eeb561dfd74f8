use axum_typed_session::Session;

#[derive(Session, Default)]
#[session(table = 5)]
struct Visit {
    count: i64,
}

fn main() {}
