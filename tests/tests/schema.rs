//! The tables `migrate()` creates, read back from each database's own
//! catalog, and what it does with tables that do not match the struct.

use axum_typed_session::{Session, SessionData, SessionStore, StoreError};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use conformance_tests::{Backend, Fixture, sql_conformance};
use uuid::Uuid;

#[derive(Session, Default)]
#[session(table = "ddl_check")]
struct DdlCheck {
    flag: bool,
    small: i16,
    int: i32,
    big: i64,
    dword: u32,
    float: f32,
    double: f64,
    text: String,
    bytes: Vec<u8>,
    at: DateTime<Utc>,
    naive: NaiveDateTime,
    day: NaiveDate,
    uuid: Uuid,
    maybe: Option<i64>,
    #[session(json)]
    doc: Vec<String>,
}

/// (column, type as the catalog spells it, nullable) in table order.
fn expected_columns(backend: &str) -> Vec<(&'static str, &'static str, bool)> {
    let types: [&str; 20] = match backend {
        // information_schema.columns.data_type
        "PostgreSQL" => [
            "bytea",
            "timestamp with time zone",
            "bigint",
            "timestamp with time zone",
            "boolean",
            "boolean",
            "smallint",
            "integer",
            "bigint",
            "bigint",
            "real",
            "double precision",
            "text",
            "bytea",
            "timestamp with time zone",
            "timestamp without time zone",
            "date",
            "uuid",
            "bigint",
            "jsonb",
        ],
        // information_schema.columns.column_type on MariaDB 10.11 (JSON is LONGTEXT there)
        "MariaDB" => [
            "binary(32)",
            "datetime(6)",
            "bigint(20)",
            "datetime(6)",
            "tinyint(1)",
            "tinyint(1)",
            "smallint(6)",
            "int(11)",
            "bigint(20)",
            "bigint(20)",
            "float",
            "double",
            "longtext",
            "longblob",
            "datetime(6)",
            "datetime(6)",
            "date",
            "binary(16)",
            "bigint(20)",
            "longtext",
        ],
        // PRAGMA table_info().type: the declared type
        "SQLite" => [
            "BLOB", "INTEGER", "BIGINT", "INTEGER", "BOOLEAN", "BOOLEAN", "INTEGER", "INTEGER",
            "INTEGER", "INTEGER", "REAL", "REAL", "TEXT", "BLOB", "TEXT", "TEXT", "TEXT", "BLOB",
            "INTEGER", "TEXT",
        ],
        other => panic!("no expectations for {other}"),
    };
    let names = [
        "id",
        "expires_at",
        "version",
        "created_at",
        "remember",
        "flag",
        "small",
        "int",
        "big",
        "dword",
        "float",
        "double",
        "text",
        "bytes",
        "at",
        "naive",
        "day",
        "uuid",
        "maybe",
        "doc",
    ];
    names
        .into_iter()
        .zip(types)
        .map(|(name, ty)| (name, ty, name == "maybe"))
        .collect()
}

fn catalog_query(backend: &str, table: &str) -> String {
    match backend {
        "PostgreSQL" => format!(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
        ),
        "MariaDB" => format!(
            "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), CAST(is_nullable AS CHAR) \
             FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = '{table}' \
             ORDER BY ordinal_position"
        ),
        _ => format!(
            "SELECT name, type, CASE \"notnull\" WHEN 1 THEN 'NO' ELSE 'YES' END FROM pragma_table_info('{table}')"
        ),
    }
}

fn index_query(backend: &str, table: &str) -> String {
    match backend {
        "PostgreSQL" => format!(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = '{table}' \
             AND indexdef LIKE '%(expires_at)%'"
        ),
        "MariaDB" => format!(
            "SELECT CAST(index_name AS CHAR) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = '{table}' AND column_name = 'expires_at'"
        ),
        _ => format!(
            "SELECT il.name FROM pragma_index_list('{table}') il, pragma_index_info(il.name) ii \
             WHERE ii.name = 'expires_at'"
        ),
    }
}

async fn migrate_creates_the_documented_table<B: Backend>() {
    let Some(fixture) = B::open::<DdlCheck>().await else {
        return;
    };
    let found: Vec<(String, String, bool)> = fixture
        .rows(&catalog_query(B::NAME, "ddl_check"))
        .await
        .into_iter()
        .map(|row| {
            let [name, ty, nullable] = <[Option<String>; 3]>::try_from(row).expect("three columns");
            (name.unwrap(), ty.unwrap(), nullable.unwrap() == "YES")
        })
        .collect();
    let expected: Vec<(String, String, bool)> = expected_columns(B::NAME)
        .into_iter()
        .map(|(name, ty, nullable)| (name.to_owned(), ty.to_owned(), nullable))
        .collect();
    assert_eq!(found, expected, "on {}", B::NAME);
    assert_eq!(
        fixture.rows(&index_query(B::NAME, "ddl_check")).await.len(),
        1,
        "one index on expires_at"
    );

    // Idempotent: a second migrate on the table it created changes nothing.
    fixture.migrate().await.expect("second migrate");
    fixture.cleanup().await;
}

mod v1 {
    use super::Session;

    #[derive(Session, Default)]
    #[session(table = "evolving")]
    pub struct Profile {
        pub visits: i64,
    }
}

mod v2 {
    use super::Session;

    #[derive(Session)]
    #[session(table = "evolving")]
    pub struct Profile {
        pub visits: i64,
        pub nickname: Option<String>,
        pub logins: i32,
        pub theme: String,
        pub beta: bool,
    }

    impl Default for Profile {
        fn default() -> Self {
            Self {
                visits: 0,
                nickname: None,
                logins: 0,
                theme: "it's light".into(),
                beta: true,
            }
        }
    }
}

mod wrong_type {
    use super::Session;

    #[derive(Session, Default)]
    #[session(table = "evolving")]
    pub struct Profile {
        pub visits: String,
        pub nickname: i64,
    }
}

mod not_defaultable {
    use super::{DateTime, Session, Utc};

    #[derive(Session, Default)]
    #[session(table = "evolving")]
    pub struct Profile {
        pub visits: i64,
        pub first_seen: DateTime<Utc>,
    }
}

/// Columns that are nullable or have a writable default are added; existing
/// rows keep their data and read the new columns as the defaults.
async fn migrate_adds_missing_columns<B: Backend>() {
    let Some(old) = B::open::<v1::Profile>().await else {
        return;
    };
    let id = axum_typed_session::SessionToken::generate().id();
    let now = Utc::now();
    old.store
        .insert(&axum_typed_session::Record {
            id,
            data: v1::Profile { visits: 7 },
            version: 1,
            expires_at: now + chrono::Duration::hours(1),
            created_at: now,
            remember: false,
        })
        .await
        .expect("insert with the old struct");

    let new: Fixture<B, v2::Profile> = old.other();
    new.migrate().await.expect("the new columns can be added");
    let loaded = new
        .store
        .load(&id, Utc::now())
        .await
        .expect("load")
        .expect("row");
    assert_eq!(loaded.data.visits, 7);
    assert_eq!(loaded.data.nickname, None);
    assert_eq!(loaded.data.logins, 0);
    assert_eq!(loaded.data.theme, "it's light");
    assert!(loaded.data.beta);
    new.migrate().await.expect("idempotent");
    old.cleanup().await;
}

fn schema_problem(result: Result<(), StoreError>) -> String {
    match result {
        Err(StoreError::Schema { table, problem }) => {
            assert_eq!(table, "evolving");
            problem
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
}

/// What cannot be reconciled fails before serving, naming table, column,
/// expected and found type — all problems at once, nothing altered.
async fn migrate_refuses_what_it_cannot_reconcile<B: Backend>() {
    let Some(v1) = B::open::<v1::Profile>().await else {
        return;
    };
    v1.other::<v2::Profile>()
        .migrate()
        .await
        .expect("add v2 columns");

    let problem = schema_problem(v1.other::<wrong_type::Profile>().migrate().await);
    assert!(
        problem.contains("column `visits` (field `visits`): expected"),
        "{problem}"
    );
    let found_bigint = match B::NAME {
        "PostgreSQL" => "found bigint",
        "MariaDB" => "found bigint(20)",
        _ => "found INTEGER",
    };
    assert!(problem.contains(found_bigint), "{problem}");
    assert!(
        problem.contains("column `nickname` (field `nickname`)"),
        "both problems at once: {problem}"
    );

    let problem = schema_problem(v1.other::<not_defaultable::Profile>().migrate().await);
    assert!(
        problem.contains("column `first_seen` (field `first_seen`) is missing"),
        "{problem}"
    );

    if B::NAME != "SQLite" {
        // (SQLite cannot add a NOT NULL column without a default at all.)
        let legacy = match B::NAME {
            "MariaDB" => "ALTER TABLE `evolving` ADD COLUMN `legacy` INT NOT NULL",
            _ => "ALTER TABLE \"evolving\" ADD COLUMN \"legacy\" INTEGER NOT NULL",
        };
        v1.execute(legacy).await;
        let problem = schema_problem(v1.migrate().await);
        assert!(problem.contains("column `legacy`"), "{problem}");
        assert!(problem.contains("NOT NULL without a default"), "{problem}");
    }
    v1.cleanup().await;
}

sql_conformance!(
    migrate_creates_the_documented_table,
    migrate_adds_missing_columns,
    migrate_refuses_what_it_cannot_reconcile,
);

#[test]
fn ddl_is_available_as_text() {
    use axum_typed_session::{MySqlStore, PgStore, SqliteStore};
    let postgres = PgStore::<DdlCheck>::create_table_sql();
    assert!(postgres[0].starts_with(
        "CREATE TABLE IF NOT EXISTS \"ddl_check\" (\"id\" BYTEA NOT NULL PRIMARY KEY"
    ));
    assert!(postgres[0].contains("\"doc\" JSONB NOT NULL"));
    assert!(
        postgres[0].contains("\"maybe\" BIGINT,") || postgres[0].contains("\"maybe\" BIGINT, ")
    );
    assert!(postgres[1].contains("(\"expires_at\")"));
    let mysql = MySqlStore::<DdlCheck>::create_table_sql();
    assert!(mysql[0].contains("`uuid` BINARY(16) NOT NULL"));
    let sqlite = SqliteStore::<DdlCheck>::create_table_sql();
    // A rowid table (rows in creation order), the key NOT NULL by itself:
    // SQLite's PRIMARY KEY alone allows NULL outside WITHOUT ROWID tables.
    assert!(!sqlite[0].contains("WITHOUT ROWID"));
    assert!(sqlite[0].contains("\"id\" BLOB NOT NULL PRIMARY KEY"));
    assert_eq!(<DdlCheck as SessionData>::SCHEMA.columns.len(), 15);
}
