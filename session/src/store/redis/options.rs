//! [`RedisStoreBuilder`]: the key prefix, the timeout, waiting for
//! replicas, events; then a server or a Cluster to connect to.

use std::{marker::PhantomData, time::Duration};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
};

use super::{Connection, RedisStore, WaitForReplicas, unavailable};
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

fn no_answer() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "no answer within the store's timeout"))
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
    session: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for RedisStoreBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("wait", &self.wait)
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
    /// Each write then costs a replication round trip.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = Some(WaitForReplicas { replicas, timeout });
        self
    }

    /// Sends lifecycle events to `events`.
    pub fn events(mut self, events: SessionEvents) -> Self {
        self.events = Some(events);
        self
    }

    /// Connects to one server: `redis://[user:password@]host:port[/db]`,
    /// or `rediss://` for TLS (with the `rustls` or `native-tls` feature).
    pub async fn connect(self, url: &str) -> Result<RedisStore<T>, StoreError> {
        let failed = |source| {
            unavailable(ConnectError {
                target: url.to_owned(),
                source,
            })
        };
        let client = redis::Client::open(url).map_err(failed)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| failed(no_answer()))?
        .map_err(failed)?;
        Ok(self.build(Connection::Single(connection)))
    }

    /// Connects to a Redis Cluster through some of its nodes
    /// (`redis://host:port` each); the client discovers the rest and
    /// follows failovers and slot moves by itself.
    pub async fn connect_cluster<I, S>(self, nodes: I) -> Result<RedisStore<T>, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes
            .into_iter()
            .map(|node| node.as_ref().to_owned())
            .collect();
        let failed = |source| {
            unavailable(ConnectError {
                target: nodes.join(", "),
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
        Ok(self.build(Connection::Cluster(connection)))
    }

    fn build(self, connection: Connection) -> RedisStore<T> {
        let prefix = self.prefix.unwrap_or_else(|| T::SCHEMA.table.to_owned());
        RedisStore::new(connection, prefix, self.timeout, self.wait, self.events)
    }
}
