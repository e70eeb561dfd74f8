use axum_typed_session::Session;

#[derive(Session)]
union Visit {
    count: i64,
    flag: u8,
}

fn main() {}
