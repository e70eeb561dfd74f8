use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit<'a> {
    name: &'a str,
}

fn main() {}
