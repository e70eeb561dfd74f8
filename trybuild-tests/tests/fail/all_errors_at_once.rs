use axum_typed_session::Session;

// Every mistake of a struct is reported in one build.
#[derive(Session, Default)]
#[session(table = "bad table", colour = "red")]
struct Visit {
    #[session(rename = "id")]
    user: i64,
    #[session(jsn)]
    history: Vec<String>,
    created_at: i64,
}

fn main() {}
