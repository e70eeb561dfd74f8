use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    count: usize,
}

fn main() {}
