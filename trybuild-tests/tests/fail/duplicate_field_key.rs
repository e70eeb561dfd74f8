use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    #[session(rename = "a")]
    #[session(rename = "b")]
    count: i64,
}

fn main() {}
