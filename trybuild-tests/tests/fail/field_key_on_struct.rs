use axum_typed_session::Session;

#[derive(Session, Default)]
#[session(json)]
struct Visit {
    #[session(table = "visits")]
    count: i64,
}

fn main() {}
