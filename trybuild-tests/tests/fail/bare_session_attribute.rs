use axum_typed_session::Session;

#[derive(Session, Default)]
#[session]
struct Visit {
    count: i64,
}

fn main() {}
