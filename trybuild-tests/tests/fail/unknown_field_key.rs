use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    #[session(jsno)]
    history: Vec<String>,
}

fn main() {}
