use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    maybe: Option<Option<i64>>,
}

fn main() {}
