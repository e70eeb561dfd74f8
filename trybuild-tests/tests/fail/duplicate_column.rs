use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    count: i64,
    #[session(rename = "COUNT")]
    total: i64,
}

fn main() {}
