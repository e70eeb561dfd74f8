use axum_typed_session::Session;

// The field `update_count` would generate a getter `update_count()`, which
// is already the updater of `count`.
#[derive(Session, Default)]
struct Visit {
    count: i64,
    update_count: i64,
}

fn main() {}
