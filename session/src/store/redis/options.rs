//! [`RedisStoreBuilder`]: the key prefix, the timeout, waiting for
//! replicas, events; then a server or a Cluster to connect to.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
};

use super::{
    Connection, RedisStore, WaitForReplicas, cache::ClientCache, group::Groups, own::OwnConnection,
    unavailable,
};
use crate::{data::SessionData, error::StoreError, events::SessionEvents};

/// How long one Redis call may take before the request fails with
/// [`StoreError::Unavailable`], unless configured: long enough for a busy
/// server, short enough that an outage answers fast.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Could not reach Redis at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {target}: {source}")]
struct ConnectError {
    target: String,
    #[source]
    source: redis::RedisError,
}

/// `url` for an error message: a password in it (`user:password@`, a
/// lone `token@`, or `pass=` / `password=` in the query of a Unix socket
/// URL) shown as `***`, so that a failed start does not write it to the
/// logs.
fn redacted(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(start) = shown.find("://").map(|at| at + 3) {
        let authority_end = shown[start..]
            .find(['/', '?', '#'])
            .map_or(shown.len(), |at| start + at);
        if let Some(at) = shown[start..authority_end].rfind('@').map(|at| start + at) {
            let password_from = shown[start..at]
                .find(':')
                .map_or(start, |colon| start + colon + 1);
            if password_from < at {
                shown.replace_range(password_from..at, "***");
            }
        }
    }
    let Some((path, query)) = shown.split_once('?') else {
        return shown;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name @ ("pass" | "password"), _)) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

fn no_answer() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "no answer within the store's timeout"))
}

fn no_nodes() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "no Cluster node given",
    ))
}

/// Options of a [`RedisStore`].
///
/// ```no_run
/// # async fn run() -> Result<(), axum_typed_session::StoreError> {
/// use std::time::Duration;
/// use axum_typed_session::{RedisStore, Session};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// let store = RedisStore::<Visit>::builder()
///     .prefix("shop:visits")              // default: the struct's table name
///     .timeout(Duration::from_millis(500))
///     .wait_for_replicas(1, Duration::from_millis(100))
///     .connect_cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct RedisStoreBuilder<T> {
    prefix: Option<String>,
    timeout: Duration,
    wait: Option<WaitForReplicas>,
    events: Option<SessionEvents>,
    caps: Vec<(usize, u32)>,
    cache: Option<usize>,
    session: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for RedisStoreBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("wait", &self.wait)
            .field("caps", &self.caps)
            .field("client_cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<T: SessionData> RedisStoreBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            prefix: None,
            timeout: DEFAULT_TIMEOUT,
            wait: None,
            events: None,
            caps: Vec::new(),
            cache: None,
            session: PhantomData,
        }
    }

    /// The first part of every key of this struct's sessions (default: its
    /// table name, e.g. `visit_sessions`): `<prefix>:{<id>}` for a session,
    /// `<prefix>:index:<column>:<value>` for an index set.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The longest one Redis call may take (connecting included) before the
    /// request fails with [`StoreError::Unavailable`] (default
    /// [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After each write, `WAIT` until `replicas` replicas have it, for at
    /// most `timeout`; a write they did not acknowledge in time fails the
    /// request with [`StoreError::Unavailable`] (it may or may not survive
    /// a failover). Off by default: Redis replicates asynchronously, so a
    /// master that dies can take its last acknowledged writes with it.
    ///
    /// The `WAIT` rides at the end of the write's own pipeline group (on
    /// Cluster, its master's group), so the concurrent writes of one
    /// moment share one `WAIT` and no write costs an extra round trip to
    /// Redis; each still waits for the replication round trip, and so do
    /// the loads that went in the same group. A write sent on its own (on
    /// Cluster, one whose slot moved) sends a `WAIT` of its own after it.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = Some(WaitForReplicas { replicas, timeout });
        self
    }

    /// Sends lifecycle events to `events`.
    pub fn events(mut self, events: SessionEvents) -> Self {
        self.events = Some(events);
        self
    }

    /// At most `max` live sessions share a value of the indexed field
    /// `index` (Spring's `maximumSessions`): when a write sets the field,
    /// the oldest sessions beyond `max` with its value (by `created_at`)
    /// are destroyed before the write returns; the written one is kept.
    ///
    /// Concurrent sign-ins of one user, on any number of app instances, end
    /// with at most `max`: writes that set a capped value take turns on it,
    /// through a key `<prefix>:cap:<column>:<value>` that one writer holds
    /// at a time (`SET NX`, given back when its write is done, expiring
    /// after four timeouts if its writer died). A write that waits longer
    /// than the store's timeout for its turn fails with
    /// [`StoreError::Unavailable`]. Each capped write costs a few round
    /// trips more: the turn, the value's sessions (one `HMGET` each) and
    /// the deletes; writes that do not set the field cost nothing more.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), axum_typed_session::StoreError> {
    /// use axum_typed_session::{RedisStore, Session};
    ///
    /// #[derive(Session, Default)]
    /// struct Auth {
    ///     #[session(index)]
    ///     user_id: Option<i64>,
    /// }
    ///
    /// let store = RedisStore::<Auth>::builder()
    ///     .max_sessions(&Auth::USER_ID, 3)
    ///     .connect("redis://127.0.0.1:6379")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn max_sessions<K>(mut self, index: &crate::Index<T, K>, max: u32) -> Self {
        crate::store::set_cap(&mut self.caps, index.field(), max);
        self
    }

    /// Keeps up to `capacity` sessions in this process, so that a request
    /// whose session is cached skips its `HMGET` (standalone servers only;
    /// [`connect_cluster`](Self::connect_cluster) refuses it). Off by default.
    ///
    /// It stays exact with any number of app instances: the connection
    /// switches to RESP3 with `CLIENT TRACKING ON NOLOOP`, so Redis pushes
    /// an invalidation whenever another client changes a session this
    /// process read, and a cached session is served only after a sync point
    /// (a `CLIENT ID`) sent after the request started has come back; the
    /// connection applies each invalidation before any reply that follows
    /// it, so by then every earlier one is in. All
    /// requests waiting at one moment share one sync point: a read still
    /// sees every write that finished before it began, from any instance,
    /// at a share of one round trip instead of one `HMGET` each. A write
    /// goes to Redis as always and, once it succeeded, updates the cached
    /// copy. A reconnect empties the cache.
    ///
    /// Costs: memory for `capacity` sessions here, and Redis keeps one
    /// tracking entry per session this process read (bounded by its
    /// `tracking-table-max-keys`).
    pub fn client_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(capacity);
        self
    }

    /// Connects to one server: `redis://[user:password@]host:port[/db]`,
    /// `rediss://` for TLS (with the `rustls` or `native-tls` feature), or
    /// `redis+unix:///path/to/redis.sock[?db=N&pass=...]` for a Unix socket
    /// on the same machine (no TCP stack in between; grouped as on TCP).
    pub async fn connect(self, url: &str) -> Result<RedisStore<T>, StoreError> {
        let failed = |source| {
            unavailable(ConnectError {
                target: redacted(url),
                source,
            })
        };
        let client = redis::Client::open(url).map_err(failed)?;
        let cache = self
            .cache
            .map(|capacity| Arc::new(ClientCache::new(capacity)));
        // Connected now, with or without a cache: a server that cannot be
        // reached is the same error here.
        let connect = async {
            Ok::<_, redis::RedisError>(match &cache {
                None => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1);
                    Connection::Single(ConnectionManager::new_with_config(client, config).await?)
                }
                Some(cache) => {
                    let connection = OwnConnection::new(
                        client.get_connection_info().clone(),
                        Some(cache.clone()),
                        self.timeout,
                    );
                    connection.get().await?;
                    Connection::Tracked(connection)
                }
            })
        };
        let connection = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| failed(no_answer()))?
            .map_err(failed)?;
        let groups = Arc::new(Groups::new(connection, self.timeout, self.wait, cache));
        // Bounded by the store's timeout, as every call.
        groups.start_tracking().await?;
        Ok(self.build(groups))
    }

    /// Connects to a Redis Cluster through some of its nodes
    /// (`redis://host:port` each); the client discovers the rest and
    /// follows failovers and slot moves by itself.
    pub async fn connect_cluster<I, S>(self, nodes: I) -> Result<RedisStore<T>, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if self.cache.is_some() {
            return Err(StoreError::Unsupported {
                what: "a client cache on Redis Cluster (RedisStoreBuilder::client_cache works with connect only)",
            });
        }
        let nodes: Vec<String> = nodes
            .into_iter()
            .map(|node| node.as_ref().to_owned())
            .collect();
        let failed = |source| {
            unavailable(ConnectError {
                target: nodes
                    .iter()
                    .map(String::as_str)
                    .map(redacted)
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })
        };
        let client = ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(failed)?;
        let connection = tokio::time::timeout(self.timeout, client.get_async_connection())
            .await
            .map_err(|_| failed(no_answer()))?
            .map_err(failed)?;
        // The masters' own connections take the first node's settings.
        let seed = nodes
            .first()
            .map(|node| redis::IntoConnectionInfo::into_connection_info(node.as_str()))
            .unwrap_or_else(|| Err(no_nodes()))
            .map_err(failed)?;
        let groups = Arc::new(Groups::cluster(
            Connection::Cluster(connection),
            self.timeout,
            self.wait,
            seed,
        ));
        // Until the slot map is read, each command goes on its own.
        let _ = groups.refresh().await;
        Ok(self.build(groups))
    }

    fn build(self, groups: Arc<Groups>) -> RedisStore<T> {
        let prefix = self.prefix.unwrap_or_else(|| T::SCHEMA.table.to_owned());
        RedisStore::new(
            prefix,
            self.timeout,
            self.wait,
            self.events,
            self.caps,
            groups,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_error_messages() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://app:s3cr%40t@10.0.0.1:6379/2",
                "redis://app:***@10.0.0.1:6379/2",
            ),
            (
                "rediss://:only-a-password@host:6380",
                "rediss://:***@host:6380",
            ),
            ("redis://token@host", "redis://***@host"),
            ("redis://user:p@ss@host/0", "redis://user:***@host/0"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "unix:///run/redis.sock?password=s3cret",
                "unix:///run/redis.sock?password=***",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }
}
