use axum_typed_session::Session;

#[derive(Session)]
enum Visit {
    Anonymous,
    User { id: i64 },
}

fn main() {}
