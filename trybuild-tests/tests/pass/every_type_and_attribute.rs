//! Every supported field type and every attribute, on every backend feature.

use std::collections::BTreeMap;

use axum_typed_session::{
    MySqlStore, PgStore, Session, SessionData, SqliteStore,
    value::SqlType,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Cart {
    items: Vec<u32>,
}

#[derive(Session, Default)]
#[session(table = "everything")]
struct Everything {
    flag: bool,
    tiny: i8,
    small: i16,
    int: i32,
    big: i64,
    byte: u8,
    word: u16,
    dword: u32,
    float: f32,
    double: f64,
    text: String,
    bytes: Vec<u8>,
    at: DateTime<Utc>,
    naive: NaiveDateTime,
    day: NaiveDate,
    uuid: Uuid,
    maybe_flag: Option<bool>,
    maybe_int: Option<i32>,
    maybe_text: Option<String>,
    maybe_bytes: Option<Vec<u8>>,
    maybe_at: Option<DateTime<Utc>>,
    maybe_day: Option<NaiveDate>,
    maybe_uuid: Option<Uuid>,
    #[session(rename = "owner")]
    user_id: Option<i64>,
    #[session(json)]
    cart: Cart,
    #[session(json, rename = "scores_json")]
    scores: BTreeMap<String, f64>,
    #[session(json)]
    maybe_cart: Option<Cart>,
}

fn main() {
    let schema = <Everything as SessionData>::SCHEMA;
    assert_eq!(schema.table, "everything");
    assert_eq!(schema.columns.len(), 27);
    assert_eq!(schema.columns[7].sql_type, SqlType::I64, "u32 widens to BIGINT");
    assert_eq!(schema.columns[23].name, "owner");
    assert!(schema.columns[23].nullable);
    assert_eq!(schema.columns[24].sql_type, SqlType::Json);
    assert!(!schema.columns[26].nullable, "an Option in JSON is JSON null, not SQL NULL");

    // The DDL per backend, for people who run their own migrations.
    for ddl in [
        SqliteStore::<Everything>::create_table_sql(),
        PgStore::<Everything>::create_table_sql(),
        MySqlStore::<Everything>::create_table_sql(),
    ] {
        assert!(ddl[0].contains("everything"));
    }

    // Accessors exist for every field.
    fn _uses(session: Session<Everything>) {
        let _: bool = session.flag();
        session.set_tiny(1);
        session.update_text(|text| text.push('!'));
        session.update_cart(|cart| cart.items.push(1));
        let _: Option<i64> = session.user_id();
        let _: Everything = session.get();
    }
}
