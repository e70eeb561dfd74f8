//! Raw identifiers keep their column name; accessors take the struct's visibility.

mod sessions {
    use axum_typed_session::Session;

    #[derive(Session, Default)]
    pub struct Visit {
        pub r#type: String,
        pub r#match: i32,
    }
}

use axum_typed_session::{Session, SessionData};
use sessions::Visit;

fn main() {
    let schema = <Visit as SessionData>::SCHEMA;
    assert_eq!(schema.table, "visit_sessions");
    assert_eq!(schema.columns[0].name, "type");
    assert_eq!(schema.columns[1].name, "match");

    fn _uses(visit: Session<Visit>) {
        let _: String = visit.r#type();
        visit.set_type("x".to_owned());
        visit.update_match(|value| *value += 1);
    }
}
