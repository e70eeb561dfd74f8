use axum_typed_session::Session;

#[derive(Session, Default)]
#[session(table = "a_table_name_that_is_much_too_long_for_postgres_identifier_limit")]
struct Visit {
    count: i64,
}

fn main() {}
