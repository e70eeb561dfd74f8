//! What the load benches share: the server's runtime, the HTTP client, one
//! request, and the statistics.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{StatusCode, header},
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{Client, connect::HttpConnector};

/// The server's runtime: one worker thread, so server and load generator
/// each have one of the two cores instead of competing for both.
static SERVER: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

pub fn server_runtime() -> &'static tokio::runtime::Runtime {
    SERVER.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("server")
            .enable_all()
            .build()
            .expect("server runtime")
    })
}

pub async fn serve(app: Router) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let task = server_runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = axum::serve(listener, app).await;
    });
    Ok((address, task))
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub async fn request(
    client: &HttpClient,
    address: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> anyhow::Result<(StatusCode, Option<String>, String)> {
    request_with(client, address, path, cookie, &[]).await
}

/// A GET with more headers: its status, the cookie it sets, its body.
pub async fn request_with(
    client: &HttpClient,
    address: SocketAddr,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, Option<String>, String)> {
    let mut request = hyper::Request::get(format!("http://{address}{path}"));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Empty::new())?).await?;
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::to_owned);
    let body = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        set_cookie,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The longest a phase waits for the machine to go quiet.
pub const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Busy and total CPU time of the whole machine, in clock ticks (Linux).
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    let total: u64 = ticks.iter().take(8).sum();
    Some((total - idle, total))
}

/// Waits until the machine is quiet (under 10 % busy over 100 ms) or
/// [`SETTLE_MAX`] has passed, and says how long it waited. What one phase
/// leaves running (a database's checkpoint or vacuum after thousands of
/// inserts) would otherwise slow down whichever server is measured next.
pub async fn settle() -> Duration {
    let started = Instant::now();
    let mut before = cpu_ticks();
    while started.elapsed() < SETTLE_MAX {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cpu_ticks();
        let (Some((busy0, total0)), Some((busy1, total1))) = (before, now) else {
            break;
        };
        if (busy1 - busy0) * 10 < (total1 - total0).max(1) {
            break;
        }
        before = now;
    }
    started.elapsed()
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A setting from the environment (`BENCH_SECONDS`, ...), or `default`.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The load generator's HTTP client, keeping a connection per request in flight.
pub fn client(in_flight: usize) -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(in_flight)
        .build_http()
}

/// Runs the load generator on one thread; the servers have their own (see
/// [`serve`]), so each side has one of the two cores.
pub fn load_generator(run: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run)
}
