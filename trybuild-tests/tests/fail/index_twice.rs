use axum_typed_session::Session;

#[derive(Session, Default)]
struct Auth {
    #[session(index, index)]
    user_id: Option<i64>,
}

fn main() {}
