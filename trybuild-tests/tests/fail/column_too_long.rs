use axum_typed_session::Session;

#[derive(Session, Default)]
struct Visit {
    #[session(rename = "a_column_name_that_is_much_too_long_for_postgres_identifier_limit")]
    count: i64,
}

fn main() {}
