use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    #[session(rename = "1st visit")]
    first: i64,
}

fn main() {}
