use axum_typed_session::Session;

// `store` would generate `set_store`, which is `Session::set_store` (consent);
// `rename` changes the column only, so `remember` still generates `set_remember`.
#[derive(Session, Default)]
struct Visit {
    store: bool,
    #[session(rename = "remember_me")]
    remember: bool,
}

fn main() {}
