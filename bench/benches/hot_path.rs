//! The per-request hot path without I/O: token generation and hashing,
//! cookie parse/sign/verify, row → typed struct, building the UPDATE, and a
//! whole in-process request through bare axum vs. the layer (same run).
//!
//! ```sh
//! cargo bench -p bench --bench hot_path
//! ```

use std::hint::black_box;

use axum::{Router, body::Body, routing::get};
use axum_typed_session::{
    __internals::{SessionCookie, update_statement_text},
    DirtyFields, Key, MemoryStore, Session, SessionConfig, SessionData, SessionLayer, SessionToken,
    SqliteStore, Update,
    store::sql::{Postgres, Sqlite},
    value::Value,
};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, header::COOKIE};
use std::borrow::Cow;
use tower::ServiceExt as _;

#[derive(Session, Default)]
#[session(table = "bench_rows")]
struct Cart {
    count: i64,
    user_id: Option<i64>,
    name: String,
    admin: bool,
    #[session(json)]
    items: Vec<u32>,
}

fn tokens(c: &mut Criterion) {
    let token = SessionToken::generate();
    let encoded = token.encode();
    c.bench_function("token/generate", |b| b.iter(SessionToken::generate));
    c.bench_function("token/sha256_id", |b| b.iter(|| black_box(&token).id()));
    c.bench_function("token/parse", |b| {
        b.iter(|| SessionToken::parse(black_box(&encoded)))
    });
}

fn cookie_header(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let line = format!("theme=dark; session={value}; _ga=GA1.2.3");
    headers.insert(COOKIE, HeaderValue::try_from(line).unwrap());
    headers
}

fn cookies(c: &mut Criterion) {
    let token = SessionToken::generate();
    for (name, config) in [
        ("plain", SessionConfig::default()),
        (
            "signed",
            SessionConfig::default().with_signed_key(Key::generate()),
        ),
        (
            "private",
            SessionConfig::default().with_private_key(Key::generate()),
        ),
    ] {
        let cookie = SessionCookie::new(config);
        let set = cookie.set(&token, Some(std::time::Duration::from_secs(3600)));
        let value = set
            .iter()
            .find_map(|(_, v)| {
                v.to_str()
                    .ok()?
                    .split(';')
                    .next()?
                    .strip_prefix("session=")
                    .map(str::to_owned)
            })
            .unwrap();
        let headers = cookie_header(&value);
        c.bench_function(&format!("cookie/{name}/set"), |b| {
            b.iter(|| {
                cookie.set(
                    black_box(&token),
                    Some(std::time::Duration::from_secs(3600)),
                )
            })
        });
        c.bench_function(&format!("cookie/{name}/parse_and_verify"), |b| {
            b.iter(|| cookie.read(black_box(&headers)))
        });
    }
}

fn rows(c: &mut Criterion) {
    let row = || {
        vec![
            Value::I64(41),
            Value::I64(7),
            Value::Text(Cow::Owned("Ada Lovelace".into())),
            Value::Bool(false),
            Value::Json(Cow::Owned("[1,2,3,4,5,6,7,8]".into())),
        ]
    };
    c.bench_function("row/decode_into_struct", |b| {
        b.iter_batched(
            row,
            |values| Cart::decode_columns(&mut values.into_iter()).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    let cart = Cart::decode_columns(&mut row().into_iter()).unwrap();
    c.bench_function("row/encode_all_columns", |b| {
        b.iter(|| {
            for index in 0..Cart::SCHEMA.columns.len() {
                black_box(black_box(&cart).encode_column(index).unwrap());
            }
        })
    });

    let mut dirty = DirtyFields::NONE;
    dirty.insert(0);
    dirty.insert(4);
    let update = Update {
        dirty,
        expected_version: Some(3),
        // A write that also moves the expiry: the longest common shape.
        expires_at: Some(chrono::Utc::now()),
        new_id: None,
        remember: None,
        now: chrono::Utc::now(),
    };
    c.bench_function("update_sql/build/postgres", |b| {
        b.iter(|| update_statement_text::<Postgres, Cart>(black_box(&update)))
    });
    c.bench_function("update_sql/build/sqlite", |b| {
        b.iter(|| update_statement_text::<Sqlite, Cart>(black_box(&update)))
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(async {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .connect("sqlite::memory:")
            .await
            .unwrap();
        SqliteStore::<Cart>::new(pool)
    });
    store.cached_update_statement(&update);
    c.bench_function("update_sql/cached", |b| {
        b.iter(|| store.cached_update_statement(black_box(&update)))
    });
}

fn requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let routes = || Router::new().route("/untouched", get(|| async { "ok" }));
    let bare = routes().route("/read", get(|| async { "0" }));
    let store = MemoryStore::<Cart>::new();
    let config = SessionConfig::default().with_purge_interval(None);
    let layered = runtime.block_on(async {
        routes()
            .route(
                "/read",
                get(|cart: Session<Cart>| async move { cart.count().to_string() }),
            )
            .route(
                "/write",
                get(|cart: Session<Cart>| async move {
                    cart.update_count(|c| *c += 1);
                }),
            )
            .layer(SessionLayer::new(store, config))
    });
    let cookie = runtime.block_on(async {
        let response = layered
            .clone()
            .oneshot(Request::get("/write").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let set = response
            .headers()
            .get(http::header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        set.split(';').next().unwrap().to_owned()
    });
    let send = |app: &Router, path: &'static str, cookie: Option<&str>| {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let app = app.clone();
        let request = request.body(Body::empty()).unwrap();
        async move { app.oneshot(request).await.unwrap() }
    };
    let mut group = c.benchmark_group("request");
    group.bench_function("bare/untouched", |b| {
        b.iter(|| runtime.block_on(send(&bare, "/untouched", Some(&cookie))))
    });
    group.bench_function("layer/untouched", |b| {
        b.iter(|| runtime.block_on(send(&layered, "/untouched", Some(&cookie))))
    });
    group.bench_function("bare/read", |b| {
        b.iter(|| runtime.block_on(send(&bare, "/read", Some(&cookie))))
    });
    group.bench_function("layer/read_memory", |b| {
        b.iter(|| runtime.block_on(send(&layered, "/read", Some(&cookie))))
    });
    group.bench_function("layer/write_memory", |b| {
        b.iter(|| runtime.block_on(send(&layered, "/write", Some(&cookie))))
    });
    group.finish();
}

criterion_group!(benches, tokens, cookies, rows, requests);
criterion_main!(benches);
