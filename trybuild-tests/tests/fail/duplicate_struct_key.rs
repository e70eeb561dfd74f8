use axum_typed_session::Session;

#[derive(Session, Default)]
#[session(table = "visits", table = "others")]
struct Visit {
    count: i64,
}

fn main() {}
