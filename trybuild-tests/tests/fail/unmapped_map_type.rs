use std::collections::HashMap;

use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    pages: HashMap<String, u32>,
}

fn main() {}
