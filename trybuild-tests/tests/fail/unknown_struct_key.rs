use axum_typed_session::Session;

#[derive(Session, Default)]
#[session(tabel = "visits")]
struct Visit {
    count: i64,
}

fn main() {}
