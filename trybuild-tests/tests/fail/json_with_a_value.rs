use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    #[session(json = "yes")]
    history: Vec<String>,
}

fn main() {}
