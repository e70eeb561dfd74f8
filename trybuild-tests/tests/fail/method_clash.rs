use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    count: i64,
    set_count: i64,
}

fn main() {}
