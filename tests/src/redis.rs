//! The Redis backends of the conformance suite: a standalone server and a
//! Cluster, each test under a key prefix of its own.

use std::time::Duration;

use axum_typed_session::{RedisStore, SessionData};
use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
};

use crate::{Backend, DEFAULT_REDIS_CLUSTER, DEFAULT_REDIS_URL, Fixture, Raw, Tuning, unique_name};

/// A Redis Cluster of a test's own, on 127.0.0.1:`base`..`base`+5
/// (`.ci/redis-cluster` with `REDIS_CLUSTER_BASE`): a test that kills or
/// reshards nodes leaves the suite's Cluster alone.
pub struct OwnCluster {
    pub base: u16,
    /// Only TLS, with a certificate for 127.0.0.1 from a CA of its own
    /// ([`ca_file`](Self::ca_file)).
    pub tls: bool,
    /// Every node asks for this password (`requirepass`, `masterauth`).
    pub password: Option<&'static str>,
}

impl OwnCluster {
    /// Runs `.ci/redis-cluster ACTION` (`start`, `stop`, `restart-node PORT`).
    pub fn run(&self, action: &str) -> Result<String, String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/redis-cluster");
        let output = std::process::Command::new(script)
            .args(action.split(' '))
            .env("REDIS_CLUSTER_BASE", self.base.to_string())
            .env("REDIS_CLUSTER_TLS", if self.tls { "1" } else { "0" })
            .env("REDIS_CLUSTER_PASSWORD", self.password.unwrap_or_default())
            .output()
            .map_err(|error| format!("{script}: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Starts it afresh: whether it runs. If it cannot be started, `test`
    /// is skipped (said on stderr), or fails under `CI=true`.
    pub fn start_for(&self, test: &str) -> bool {
        let _ = self.run("stop");
        match self.run("start") {
            Ok(_) => true,
            Err(error) => {
                could_not_start(test, "Redis Cluster", &error);
                false
            }
        }
    }

    /// The seed nodes: its three masters as started (with the password).
    pub fn nodes(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let credentials = self
            .password
            .map(|password| format!(":{password}@"))
            .unwrap_or_default();
        (self.base..self.base + 3)
            .map(|port| format!("{scheme}://{credentials}127.0.0.1:{port}"))
            .collect()
    }

    /// The certificate of the CA that signed the nodes' (with `tls`).
    pub fn ca_file(&self) -> String {
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        format!("{dir}/axum-typed-session-cluster-{}/ca.crt", self.base)
    }
}

/// `test`'s own `servers` could not be started: a failure under `CI=true`,
/// else a loud skip.
fn could_not_start(test: &str, servers: &str, error: &str) {
    assert!(
        !crate::in_ci(),
        "could not start {test}'s {servers}: {error}"
    );
    eprintln!("SKIPPED {test}: its {servers} could not be started ({error})");
}

/// A standalone Redis with one replica, of a test's own, on 127.0.0.1:
/// `port` and `port`+1, keeping nothing on disk; stopped when dropped.
pub struct OwnReplicated {
    pub port: u16,
    servers: Vec<std::process::Child>,
    /// The servers' own directory (a replica writes the master's data
    /// there at its sync), new for each start: a file an earlier run left
    /// in a shared one, perhaps by another server version, would be loaded
    /// at start (Redis 7.0 exits on Valkey 8's RDB format).
    dir: std::path::PathBuf,
}

impl OwnReplicated {
    /// Starts both and waits until the replica's link is up. If they
    /// cannot be started, `test` is skipped (said on stderr), or fails
    /// under `CI=true`.
    pub async fn start_for(test: &str, port: u16) -> Option<Self> {
        match Self::start(port).await {
            Ok(started) => Some(started),
            Err(error) => {
                could_not_start(test, "Redis with a replica", &error);
                None
            }
        }
    }

    async fn start(port: u16) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "axum-typed-session-replicated-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let mut started = Self {
            port,
            servers: Vec::new(),
            dir,
        };
        for (node, replica_of) in [(port, None), (port + 1, Some(port))] {
            let mut command = std::process::Command::new("redis-server");
            command.args(["--port", &node.to_string(), "--bind", "127.0.0.1"]);
            command.args(["--save", "", "--appendonly", "no"]);
            command.arg("--dir").arg(&started.dir);
            // A replica syncs at once, not after the default 5 s delay.
            command.args(["--repl-diskless-sync-delay", "0"]);
            command.args(["--dbfilename", &format!("axum-typed-session-{node}.rdb")]);
            if let Some(master) = replica_of {
                command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
            }
            let child = command
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|error| format!("redis-server: {error}"))?;
            started.servers.push(child);
        }
        // The replica is online once the master lists it so.
        ask_until(&started.url(), &["INFO", "replication"], |info| {
            info.contains("state=online")
        })
        .await
        .map_err(|last| format!("no online replica after 10 s: {last}"))?;
        Ok(started)
    }

    /// The master's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The replica's URL.
    pub fn replica_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port + 1)
    }
}

impl Drop for OwnReplicated {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A standalone Redis of a test's own on a Unix socket (no TCP port),
/// keeping nothing on disk; stopped when dropped, and restartable on the
/// same socket (empty, as a server without persistence comes back).
pub struct OwnUnix {
    pub socket: std::path::PathBuf,
    settings: Vec<String>,
    server: Option<std::process::Child>,
}

impl OwnUnix {
    /// Starts it. If it cannot be started, `test` is skipped (said on
    /// stderr), or fails under `CI=true`.
    pub async fn start_for(test: &str) -> Option<Self> {
        Self::start_with(test, &[]).await
    }

    /// [`start_for`](Self::start_for), with these settings too
    /// (`--requirepass`, `--user`, ...); [`url`](Self::url) then needs the
    /// credentials added.
    pub async fn start_with(test: &str, settings: &[&str]) -> Option<Self> {
        let mut own = Self {
            socket: std::env::temp_dir().join(format!(
                "axum-typed-session-{}-{test}.sock",
                std::process::id()
            )),
            settings: settings
                .iter()
                .map(|setting| (*setting).to_owned())
                .collect(),
            server: None,
        };
        match own.start().await {
            Ok(()) => Some(own),
            Err(error) => {
                could_not_start(test, "Redis on a Unix socket", &error);
                None
            }
        }
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn start(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.socket);
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.settings)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|error| format!("redis-server: {error}"))?;
        self.server = Some(child);
        // With a password, the start's own ping gives it.
        let password = self
            .settings
            .iter()
            .position(|setting| setting == "--requirepass")
            .and_then(|at| self.settings.get(at + 1));
        let url = match password {
            Some(password) => format!("{}?pass={password}", self.url()),
            None => self.url(),
        };
        ask_until(&url, &["PING"], |_| true)
            .await
            .map_err(|last| format!("no answer on {} after 10 s: {last}", self.url()))
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }
}

impl Drop for OwnUnix {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `command` on the server at `url`, on a connection of its own; the reply
/// as text.
pub async fn ask(url: &str, command: &[&str]) -> Result<String, String> {
    let mut connection = redis::Client::open(url)
        .map_err(|error| error.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|error| error.to_string())?;
    redis::cmd(command[0])
        .arg(&command[1..])
        .query_async(&mut connection)
        .await
        .map_err(|error| error.to_string())
}

/// Asks `command` of the server at `url` until `ready` holds for its reply,
/// for 10 s at most; else the last reply or error.
async fn ask_until(
    url: &str,
    command: &[&str],
    ready: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ask(url, command).await;
        match &reply {
            Ok(reply) if ready(reply) => return Ok(()),
            _ if std::time::Instant::now() > deadline => {
                return Err(match reply {
                    Ok(reply) => format!("{reply:?}"),
                    Err(error) => error,
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// The seed nodes of the test Cluster.
pub fn redis_cluster_nodes() -> Vec<String> {
    std::env::var("TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| DEFAULT_REDIS_CLUSTER.into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Direct access to the keys behind a Redis fixture.
#[derive(Clone)]
pub struct RedisRaw {
    connection: RawConnection,
    /// This test's part of every key.
    pub namespace: String,
    /// The connected store the others share.
    seed: RedisStore<Seed>,
    cluster: bool,
    cached: bool,
}

#[derive(Clone)]
enum RawConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisRaw {
    /// The same keys through a connection (and client cache) of its own,
    /// as a second app instance has.
    pub async fn independent(&self) -> RedisRaw {
        RedisRaw {
            connection: self.connection.clone(),
            namespace: self.namespace.clone(),
            seed: seed(self.cluster, self.cached)
                .await
                .expect("a second connection"),
            cluster: self.cluster,
            cached: self.cached,
        }
    }

    /// A store for `U` under this test's namespace.
    pub fn store<U: SessionData>(&self) -> RedisStore<U> {
        self.seed.for_struct::<U>(self.prefix_of(U::SCHEMA.table))
    }

    /// The prefix of a struct's keys in this test.
    pub fn prefix_of(&self, table: &str) -> String {
        format!("{}:{table}", self.namespace)
    }

    /// The keys matching `pattern`, on every master.
    pub async fn keys(&self, pattern: &str) -> Vec<Vec<u8>> {
        let mut cmd = redis::cmd("KEYS");
        cmd.arg(pattern);
        match &self.connection {
            RawConnection::Single(connection) => cmd
                .query_async(&mut connection.clone())
                .await
                .expect("KEYS"),
            RawConnection::Cluster(connection) => {
                let reply = connection
                    .clone()
                    .route_command(
                        cmd,
                        RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::CombineArrays),
                        )),
                    )
                    .await
                    .expect("KEYS on every master");
                redis::from_redis_value(reply).expect("keys")
            }
        }
    }

    /// `SCRIPT FLUSH` on every master, as a restart or failover would.
    pub async fn flush_scripts(&self) {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("FLUSH");
        match &self.connection {
            RawConnection::Single(connection) => {
                let _: () = query(&mut connection.clone(), &cmd).await;
            }
            RawConnection::Cluster(connection) => {
                connection
                    .clone()
                    .route_command(
                        cmd,
                        RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::AllSucceeded),
                        )),
                    )
                    .await
                    .expect("SCRIPT FLUSH on every master");
            }
        }
    }

    /// Runs a command on the node that holds its key.
    pub async fn command<R: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> R {
        match &self.connection {
            RawConnection::Single(connection) => query(&mut connection.clone(), cmd).await,
            RawConnection::Cluster(connection) => query(&mut connection.clone(), cmd).await,
        }
    }

    /// `MEMORY USAGE` of a key, in bytes.
    pub async fn memory_usage(&self, key: &[u8]) -> i64 {
        let mut cmd = redis::cmd("MEMORY");
        cmd.arg("USAGE").arg(key).arg("SAMPLES").arg(0);
        self.command(&cmd).await
    }

    /// Deletes every key of this test.
    pub async fn cleanup(&self) {
        for key in self.keys(&format!("{}:*", self.namespace)).await {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key);
            let _: i64 = self.command(&cmd).await;
        }
    }
}

async fn query<C: ConnectionLike, R: redis::FromRedisValue>(
    connection: &mut C,
    cmd: &redis::Cmd,
) -> R {
    cmd.query_async(connection)
        .await
        .expect("raw Redis command")
}

/// A session struct only to hold the connection other stores share.
#[derive(axum_typed_session::Session, Default)]
#[session(table = "seed")]
pub struct Seed {
    unused: Option<i64>,
}

/// The Redis backends, one type: on a Cluster or a standalone server, with
/// the store's client cache
/// ([`RedisStoreBuilder::client_cache`](axum_typed_session::RedisStoreBuilder::client_cache))
/// or without. With it, every raw edit of a test also checks that the
/// cache hears of it.
pub enum RedisBackend<const CLUSTER: bool, const CACHED: bool> {}

pub type Redis = RedisBackend<false, false>;
pub type RedisCached = RedisBackend<false, true>;
pub type RedisCluster = RedisBackend<true, false>;

/// The capacity of the test stores' client cache.
pub const CLIENT_CACHE: usize = 10_000;

async fn fixture<B: Backend<Store<T> = RedisStore<T>>, T: SessionData>(
    cluster: bool,
    cached: bool,
) -> Option<Fixture<B, T>> {
    let namespace = unique_name("ats");
    let (database, target) = if cluster {
        ("Redis Cluster", redis_cluster_nodes().join(","))
    } else {
        ("Redis", redis_url())
    };
    let opened = async {
        let seed = seed(cluster, cached).await?;
        let connection = if cluster {
            let client =
                ClusterClient::new(redis_cluster_nodes()).map_err(|error| error.to_string())?;
            RawConnection::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(|error| error.to_string())?,
            )
        } else {
            let client = redis::Client::open(redis_url()).map_err(|error| error.to_string())?;
            RawConnection::Single(
                ConnectionManager::new(client)
                    .await
                    .map_err(|error| error.to_string())?,
            )
        };
        Ok::<_, String>((seed, connection))
    };
    match tokio::time::timeout(Duration::from_secs(5), opened).await {
        Ok(Ok((seed, connection))) => {
            let raw = RedisRaw {
                connection,
                namespace,
                seed,
                cluster,
                cached,
            };
            Some(Fixture {
                store: raw.store::<T>(),
                raw: Raw::Redis(raw),
            })
        }
        Ok(Err(error)) => {
            crate::unreachable(database, &target, &error);
            None
        }
        Err(elapsed) => {
            crate::unreachable(database, &target, &elapsed);
            None
        }
    }
}

/// A store connection of its own, as an app instance has.
async fn seed(cluster: bool, cached: bool) -> Result<RedisStore<Seed>, String> {
    let mut builder = RedisStore::<Seed>::builder();
    if cached {
        builder = builder.client_cache(CLIENT_CACHE);
    }
    let seed = if cluster {
        builder.connect_cluster(redis_cluster_nodes()).await
    } else {
        builder.connect(&redis_url()).await
    };
    seed.map_err(|error| error.to_string())
}

fn raw_of(raw: &Raw) -> &RedisRaw {
    match raw {
        Raw::Redis(raw) => raw,
        _ => unreachable!("a Redis fixture holds a Redis connection"),
    }
}

fn tuned<U: SessionData>(store: &RedisStore<U>, tuning: Tuning<U>) -> RedisStore<U> {
    let mut store = store.clone();
    if let Some(events) = tuning.events {
        store = store.with_events(events);
    }
    if let Some((index, max)) = tuning.cap {
        store = store.with_max_sessions(index, max);
    }
    store
}

impl<const CLUSTER: bool, const CACHED: bool> Backend for RedisBackend<CLUSTER, CACHED> {
    type Store<T: SessionData> = RedisStore<T>;
    const NAME: &'static str = match (CLUSTER, CACHED) {
        (true, _) => "Redis Cluster",
        (false, true) => "Redis (client cache)",
        (false, false) => "Redis",
    };
    const EXPIRES_BY_ITSELF: bool = true;

    fn store_on<U: SessionData>(raw: &Raw) -> RedisStore<U> {
        raw_of(raw).store::<U>()
    }

    fn tuned<U: SessionData>(store: &RedisStore<U>, _: &Raw, tuning: Tuning<U>) -> RedisStore<U> {
        tuned(store, tuning)
    }

    async fn open_unmigrated<T: SessionData>() -> Option<Fixture<Self, T>> {
        fixture::<Self, T>(CLUSTER, CACHED).await
    }
}
