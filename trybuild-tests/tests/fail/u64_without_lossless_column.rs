use axum_typed_session::Session;

// u64 has a column on MySQL only; this build enables PostgreSQL and SQLite too.
#[derive(Session, Default)]
struct Visit {
    bytes_sent: u64,
}

fn main() {}
