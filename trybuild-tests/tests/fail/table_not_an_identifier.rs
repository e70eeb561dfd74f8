use axum_typed_session::Session;

#[derive(Session, Default)]
#[session(table = "visits; DROP TABLE users")]
struct Visit {
    count: i64,
}

fn main() {}
