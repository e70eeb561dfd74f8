use axum_typed_session::Session;

#[derive(Session, Default)]
struct Auth {
    #[session(json, index)]
    roles: Vec<String>,
}

fn main() {}
