//! A session store on Redis or Valkey, standalone or Cluster (feature `redis`).
//!
//! One hash per session, one hash field per struct field, plus the
//! library's own (`version`, `created_at`, `expires_at`, `remember`).
//! The key is `<prefix>:{<id>}`: the id in braces is the hash tag, so on
//! Cluster everything of a session lives in one slot. Redis expires the
//! hash itself (`PEXPIREAT` kept equal to `expires_at`).
//!
//! The write model is the SQL stores': an insert creates the hash only if
//! absent; an update writes the dirty fields only, never creates a hash,
//! checks the version when it is a compare-and-swap and bumps it, in one
//! server-side script; a touch only moves the expiry.
//!
//! Faults: every call is bounded by the store's timeout, an outage is
//! [`StoreError::Unavailable`] (a 503 with `Retry-After`), and the client
//! reconnects by itself. On Cluster, a master that fails is replaced by its
//! replica within about the cluster's node timeout; meanwhile requests to
//! its slots fail. Redis replicates asynchronously, so the last writes a
//! master acknowledged before dying can be lost;
//! [`RedisStoreBuilder::wait_for_replicas`] waits for a replica after each
//! write (`WAIT`, one at the end of each pipeline group that carries
//! writes) so that an acknowledged write survives a failover, at the cost
//! of the replication round trip.
//!
//! Caps per user ([`RedisStoreBuilder::max_sessions`]): writes that set a
//! capped value take turns on it (a `SET NX` key), and destroy the oldest
//! sessions beyond the cap before they return; see `cap.rs`.
//!
//! Client cache (opt-in, standalone: [`RedisStoreBuilder::client_cache`]):
//! sessions this process read or wrote stay in memory, kept exact by
//! Redis's invalidation pushes (`CLIENT TRACKING`), and a cached one is
//! served after a shared sync point, so that a read still sees every write
//! that finished before it began, from any instance, without an `HMGET`.
//!
//! Round trips: on a standalone server the commands that concurrent
//! requests have ready at one moment go as one pipeline (a group: one
//! socket write, one read, one timer), each with its own reply, so one
//! that fails fails alone. On Cluster the same, per master: its loads
//! and writes of one moment go as one pipeline on a connection of the
//! store's own to that master, by a slot map read with `CLUSTER SLOTS`;
//! a command the master did not run (its slot moved, a failover) goes
//! again through the Cluster client, which follows the redirect.
//! For a struct without indexed fields, the insert and the common update
//! (no new id, no field removed) are lean scripts: `EXISTS`, `HSET` and
//! `PEXPIREAT`; `HMGET` and `HSET`.
//!
//! Why the `redis` crate (redis-rs): it is maintained by the Redis
//! organisation with frequent releases, speaks standalone and Cluster
//! with one `ConnectionLike` trait (so every call here is written once),
//! follows MOVED/ASK redirects and failovers itself, multiplexes
//! concurrent requests over one connection per node, takes explicit
//! pipelines, and has TLS through its own features (`rustls`/`native-tls`
//! here turn them on; use a `rediss://` URL).

mod cache;
mod cap;
mod codec;
mod group;
mod options;
mod own;
mod scripts;

use std::{marker::PhantomData, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use redis::{
    Cmd, RedisError, RedisFuture, RedisResult,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
};

#[doc(hidden)]
pub use group::PipelineStats;
pub use options::{DEFAULT_TIMEOUT, RedisStoreBuilder};

use self::{
    cache::ClientCache,
    codec::{encode, expire_at_ms, micros},
    group::{Groups, Sent},
    own::OwnConnection,
};
use crate::{
    data::SessionData,
    error::StoreError,
    events::SessionEvents,
    store::{Record, SessionStore, Update},
    token::SessionId,
    value::Value,
};

/// One connection for every request: a multiplexed connection to the
/// server, or to each node of the Cluster. Cloning it is cheap.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    /// A standalone server with the client cache: its pushes are applied
    /// in order with its replies ([`own`]).
    Tracked(OwnConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Tracked(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Tracked(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Tracked(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// `WAIT` after each write: how many replicas must have it, and how long
/// to wait for them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitForReplicas {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}

impl WaitForReplicas {
    fn command(self) -> Cmd {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.replicas)
            .arg(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX));
        cmd
    }
}

/// Per indexed field: the value a session held before a write and the one
/// it holds after (as stored), for the index sets.
type IndexChange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What an update wrote: the expiry score and each index change; `None`
/// if no live session matched.
type Written = Option<(Vec<u8>, Vec<IndexChange>)>;

/// An indexed field: its column and the prefix of its sets' keys.
#[derive(Clone)]
struct IndexedField {
    field: usize,
    column: &'static str,
    set_prefix: Vec<u8>,
}

#[derive(Clone)]
struct Inner {
    prefix: String,
    timeout: Duration,
    wait: Option<WaitForReplicas>,
    events: Option<SessionEvents>,
    /// (field, at most this many live sessions per value): see `cap.rs`.
    caps: Vec<(usize, u32)>,
    indexed: Vec<IndexedField>,
    /// Grouped pipelines and the client cache, if any, shared by the
    /// stores on this connection.
    groups: Arc<Groups>,
}

/// A session store on Redis or Valkey, standalone ([`connect`](Self::connect))
/// or Cluster ([`connect_cluster`](Self::connect_cluster)).
///
/// ```no_run
/// # async fn run() -> Result<(), axum_typed_session::StoreError> {
/// use axum_typed_session::{RedisStore, Session, SessionConfig, SessionLayer};
///
/// #[derive(Session, Default)]
/// struct Visit {
///     count: i64,
/// }
///
/// let store = RedisStore::<Visit>::connect("redis://127.0.0.1:6379").await?;
/// let cluster = RedisStore::<Visit>::connect_cluster([
///     "redis://127.0.0.1:7000",
///     "redis://127.0.0.1:7001",
///     "redis://127.0.0.1:7002",
/// ])
/// .await?;
/// let app: axum::Router = axum::Router::new().layer(SessionLayer::new(store, SessionConfig::default()));
/// # Ok(()) }
/// ```
///
/// Every call is bounded by the store's timeout ([`DEFAULT_TIMEOUT`],
/// [`RedisStoreBuilder::timeout`]): with Redis down or hung, a request fails
/// within it as [`StoreError::Unavailable`] (a 503), nothing is written,
/// and the connection comes back by itself when Redis does.
pub struct RedisStore<T> {
    inner: Arc<Inner>,
    session: PhantomData<fn() -> T>,
}

impl<T> Clone for RedisStore<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            session: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for RedisStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "cluster",
                &matches!(self.inner.groups.connection(), Connection::Cluster(_)),
            )
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("wait", &self.inner.wait)
            .finish_non_exhaustive()
    }
}

/// A timeout of the store's own, as an error source.
#[derive(Debug, thiserror::Error)]
#[error("Redis did not answer within {0:?}")]
struct TimedOut(Duration);

/// Replicas did not acknowledge a write in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the write reached {acked} of {wanted} replicas within {timeout:?}; it may be lost in a failover"
)]
struct NotReplicated {
    acked: i64,
    wanted: u32,
    timeout: Duration,
}

/// How a Redis error reaches the layer: an outage (the server is down,
/// hung, failing over) is [`StoreError::Unavailable`], a 503 the client
/// may retry; anything else is [`StoreError::Redis`].
fn store_error(error: RedisError) -> StoreError {
    if is_outage(&error) {
        StoreError::Unavailable {
            retry_after: Duration::from_secs(1),
            source: Some(Arc::new(error)),
        }
    } else {
        StoreError::Redis(Arc::new(error))
    }
}

/// The server is down, hung or failing over (rather than refusing one command).
fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || matches!(error.kind(), redis::ErrorKind::ClusterConnectionNotFound)
}

/// `work` within `timeout`: an error as the layer sees it ([`store_error`]),
/// no answer in time an outage.
async fn within<R>(
    timeout: Duration,
    work: impl Future<Output = RedisResult<R>>,
) -> Result<R, StoreError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(store_error(error)),
        Err(_) => Err(unavailable(TimedOut(timeout))),
    }
}

fn unavailable(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable {
        retry_after: Duration::from_secs(1),
        source: Some(Arc::new(source)),
    }
}

/// A script's reply: integers and strings, as bytes.
fn bytes(value: &redis::Value) -> Vec<u8> {
    match value {
        redis::Value::BulkString(bytes) => bytes.clone(),
        redis::Value::SimpleString(text) => text.clone().into_bytes(),
        redis::Value::Int(number) => number.to_string().into_bytes(),
        redis::Value::Okay => b"OK".to_vec(),
        _ => Vec::new(),
    }
}

fn succeeded(reply: &[redis::Value]) -> bool {
    reply.first().is_some_and(|first| bytes(first) == b"1")
}

/// A `(present, value)` pair of a script's reply.
fn present(reply: &[redis::Value], at: usize) -> Option<Vec<u8>> {
    (bytes(reply.get(at)?) == b"1").then(|| reply.get(at + 1).map(bytes).unwrap_or_default())
}

impl<T: SessionData> RedisStore<T> {
    /// A store on one server (`redis://host:port[/db]`, `rediss://` for TLS,
    /// `redis+unix:///path/to/redis.sock` for a Unix socket); fails at once,
    /// with the address, if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder().connect(url).await
    }

    /// A store on a Redis Cluster, from some of its nodes (the client finds
    /// the others); fails at once if none can be reached.
    pub async fn connect_cluster<I, S>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::builder().connect_cluster(nodes).await
    }

    /// Options: key prefix, timeout, waiting for replicas, events.
    pub fn builder() -> RedisStoreBuilder<T> {
        RedisStoreBuilder::new()
    }

    fn new(
        prefix: String,
        timeout: Duration,
        wait: Option<WaitForReplicas>,
        events: Option<SessionEvents>,
        caps: Vec<(usize, u32)>,
        groups: Arc<Groups>,
    ) -> Self {
        let indexed = T::SCHEMA
            .columns
            .iter()
            .enumerate()
            .filter(|(_, column)| column.indexed)
            .map(|(field, column)| IndexedField {
                field,
                column: column.name,
                set_prefix: format!("{prefix}:index:{}:", column.name).into_bytes(),
            })
            .collect();
        Self::with_inner(Inner {
            prefix,
            timeout,
            wait,
            events,
            caps,
            indexed,
            groups,
        })
    }

    fn with_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
            session: PhantomData,
        }
    }

    /// A store for another session struct over this store's connection,
    /// its keys under `prefix`: one connection for all of an app's structs.
    pub fn for_struct<U: SessionData>(&self, prefix: impl Into<String>) -> RedisStore<U> {
        RedisStore::new(
            prefix.into(),
            self.inner.timeout,
            self.inner.wait,
            self.inner.events.clone(),
            // Caps name fields of this struct.
            Vec::new(),
            self.inner.groups.clone(),
        )
    }

    /// The same store, sending lifecycle events to `events`.
    pub fn with_events(self, events: SessionEvents) -> Self {
        let mut inner = (*self.inner).clone();
        inner.events = Some(events);
        Self::with_inner(inner)
    }

    /// The same store, keeping at most `max` live sessions per value of the
    /// indexed field `index` (see [`RedisStoreBuilder::max_sessions`]).
    pub fn with_max_sessions<K>(self, index: &crate::Index<T, K>, max: u32) -> Self {
        let mut inner = (*self.inner).clone();
        crate::store::set_cap(&mut inner.caps, index.field(), max);
        Self::with_inner(inner)
    }

    /// The scripts' last argument: whether they read their key at the end,
    /// to keep it tracked for the client cache.
    fn tracks(&self) -> &'static str {
        if self.cache().is_some() { "1" } else { "0" }
    }

    /// How the commands of the stores on this connection went so far: in
    /// groups, or on their own. Not public API (tests and benches).
    #[doc(hidden)]
    pub fn pipeline_stats(&self) -> PipelineStats {
        self.inner.groups.stats()
    }

    /// How many sessions the client cache holds now (0 without one).
    pub fn cached(&self) -> usize {
        self.cache().map_or(0, |cache| cache.len())
    }

    /// The client cache, if the store has one.
    fn cache(&self) -> Option<&Arc<ClientCache>> {
        self.inner.groups.cache()
    }

    /// A load through the client cache: the cached session once a group
    /// sent after the call began came back (a sync point), else a
    /// `HMGET` whose reply is cached.
    async fn load_cached(
        &self,
        cache: &ClientCache,
        groups: &Arc<Groups>,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        let key = self.key_of(id);
        if cache.has(key.as_bytes(), now)
            && groups.sync().await?.sent.tracked.is_some()
            && let Some(record) = cache.get::<T>(key.as_bytes(), now)
        {
            return Ok(Some(record));
        }
        let ticket = cache.begin(key.as_bytes());
        let loaded = async {
            let (reply, sent) = self
                .send(codec::load_command::<T>(&key), Some(key.as_bytes()))
                .await?;
            let reply = reply.map_err(store_error)?;
            Ok::<_, StoreError>((codec::record_of::<T>(*id, reply, now)?, sent.tracked))
        }
        .await;
        let tracked = loaded.as_ref().ok().and_then(|(_, tracked)| *tracked);
        cache.finish::<T>(key.as_bytes(), ticket, tracked, |_| {
            let (record, _) = loaded.as_ref().ok()?;
            record.as_ref().map(Record::duplicate)
        });
        loaded.map(|(record, _)| record)
    }

    /// The key of a session's hash. The braces make the id the hash tag.
    pub fn key_of(&self, id: &SessionId) -> String {
        format!("{}:{{{id}}}", self.inner.prefix)
    }

    /// The key of the sorted set of the sessions whose field `column`
    /// holds `value` (as the hash stores it).
    pub fn index_key_of(&self, column: &str, value: &Value<'_>) -> Option<Vec<u8>> {
        let indexed = self
            .inner
            .indexed
            .iter()
            .find(|indexed| indexed.column == column)?;
        let mut key = indexed.set_prefix.clone();
        key.extend(encode(value)?);
        Some(key)
    }

    /// A session's member in the index sets; empty when the struct has
    /// no indexed field (no script reads it then).
    fn member_of(&self, id: &SessionId) -> String {
        if self.inner.indexed.is_empty() {
            String::new()
        } else {
            id.to_string()
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self.inner.groups.connection(), Connection::Cluster(_))
    }

    /// Runs `work` within the store's timeout.
    async fn bounded<R>(
        &self,
        work: impl Future<Output = RedisResult<R>>,
    ) -> Result<R, StoreError> {
        within(self.inner.timeout, work).await
    }

    /// One command, which names `key` (`None`: no key), in the next group
    /// of its server. Answers the command's own reply (a server error
    /// there is this command's) and whether it ran where the client
    /// cache's tracking was on.
    async fn send(
        &self,
        cmd: Cmd,
        key: Option<&[u8]>,
    ) -> Result<(RedisResult<redis::Value>, Sent), StoreError> {
        let answer = self.inner.groups.send(cmd, key).await?;
        Ok((answer.value, answer.sent))
    }

    /// [`send`](Self::send), its reply converted to `R`.
    async fn query<R: redis::FromRedisValue>(
        &self,
        cmd: Cmd,
        key: Option<&[u8]>,
    ) -> Result<(R, Sent), StoreError> {
        let (value, sent) = self.send(cmd, key).await?;
        let value = value.map_err(store_error)?;
        let reply = redis::from_redis_value(value).map_err(|error| store_error(error.into()))?;
        Ok((reply, sent))
    }

    async fn command<R: redis::FromRedisValue>(
        &self,
        cmd: Cmd,
        key: Option<&[u8]>,
    ) -> Result<R, StoreError> {
        self.query(cmd, key).await.map(|(reply, _)| reply)
    }

    /// A script call: `EVALSHA`, and `EVAL` with the source if the server
    /// forgot the script (a restart, a failover, `SCRIPT FLUSH`).
    async fn call(&self, call: scripts::Call) -> Result<Vec<redis::Value>, StoreError> {
        self.call_on(call).await.map(|(reply, _)| reply)
    }

    /// [`call`](Self::call), and what its group said ([`Sent`]: whether
    /// it ran where the client cache's tracking was on, how many replicas
    /// acknowledged it).
    async fn call_on(&self, call: scripts::Call) -> Result<(Vec<redis::Value>, Sent), StoreError> {
        let (reply, sent) = self.call_value(call).await?;
        let reply = redis::from_redis_value(reply).map_err(|error| store_error(error.into()))?;
        Ok((reply, sent))
    }

    /// [`call_on`](Self::call_on), its reply as it came.
    async fn call_value(&self, call: scripts::Call) -> Result<(redis::Value, Sent), StoreError> {
        let (evalsha, script) = call.into_evalsha();
        let groups = &self.inner.groups;
        let mut answer = groups.send_script(evalsha).await?;
        if let Some(evalsha) = answer.forgotten.take() {
            answer = Box::pin(groups.send_script(script.eval_of(&evalsha))).await?;
        }
        Ok((answer.value.map_err(store_error)?, answer.sent))
    }

    /// The index part of a script's arguments: whether the script keeps the
    /// sets itself (standalone), and each indexed column with its sets' prefix.
    fn index_args(&self, invocation: &mut scripts::Call) {
        invocation
            .arg(if self.is_cluster() { "0" } else { "1" })
            .arg(self.inner.indexed.len());
        for indexed in &self.inner.indexed {
            invocation.arg(indexed.column).arg(&indexed.set_prefix);
        }
    }

    /// On Cluster, after a write: the second, pipelined step on the index
    /// sets (other slots). `changes`: per indexed field, the value the
    /// session left and the one it holds now.
    async fn update_sets(
        &self,
        changes: &[IndexChange],
        old_member: &str,
        new_member: &str,
        score: &[u8],
        moved: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !self.is_cluster() || score.is_empty() || changes.is_empty() {
            return Ok(());
        }
        // Boxed: only Cluster stores with indexed fields come here, and
        // every write's future would otherwise carry this one's size.
        Box::pin(async move {
            let now_ms = now.timestamp_millis();
            let mut removals = Vec::new();
            let mut additions = Vec::new();
            for (indexed, (old, new)) in self.inner.indexed.iter().zip(changes) {
                let set = |value: &[u8]| [indexed.set_prefix.as_slice(), value].concat();
                if let Some(old) = old
                    && (Some(old) != new.as_ref() || moved)
                {
                    removals.push(set(old));
                }
                if let Some(new) = new {
                    additions.push(set(new));
                }
            }
            // One command per set, all queued at once: they go in the
            // groups of the sets' masters.
            let removed = removals.iter().map(|set| async move {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(set).arg(old_member);
                self.command::<redis::Value>(cmd, Some(set)).await.map(drop)
            });
            let added = additions.iter().map(|set| async move {
                let mut call = scripts::INDEX_ADD_TEXT.call(set);
                call.arg(new_member).arg(score).arg(now_ms);
                self.call_value(call).await.map(drop)
            });
            let (removed, added) = tokio::join!(futures_join(removed), futures_join(added));
            removed.into_iter().chain(added).collect()
        })
        .await
    }

    /// `WAIT` for the configured replicas, on the node that took the write.
    async fn wait_for_replicas(&self, key: &str, sent: Sent) -> Result<(), StoreError> {
        let Some(wait) = self.inner.wait else {
            return Ok(());
        };
        let acked = match sent.acked {
            Some(acked) => acked,
            // Boxed, as rare: the common write's future stays small.
            None => Box::pin(self.wait_on_node(key, wait)).await?,
        };
        if acked < i64::from(wait.replicas) {
            return Err(unavailable(NotReplicated {
                acked,
                wanted: wait.replicas,
                timeout: wait.timeout,
            }));
        }
        Ok(())
    }

    /// A `WAIT` of its own, for a write its group did not cover (on
    /// Cluster: one sent on its own, through the Cluster client, whose
    /// connection to the key's master sends this one too).
    async fn wait_on_node(&self, key: &str, wait: WaitForReplicas) -> Result<i64, StoreError> {
        let cmd = wait.command();
        Ok(match &self.inner.groups.connection() {
            Connection::Single(_) | Connection::Tracked(_) => self.command(cmd, None).await?,
            Connection::Cluster(connection) => {
                use redis::cluster_routing::{
                    Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
                };
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let mut connection = connection.clone();
                let reply = self
                    .bounded(connection.route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    ))
                    .await?;
                redis::from_redis_value(reply).map_err(|error| store_error(error.into()))?
            }
        })
    }

    /// Loads `ids` together (pipelined over the connection), skipping the
    /// ones that are gone.
    async fn load_many(
        &self,
        ids: Vec<SessionId>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Record<T>>, StoreError> {
        let loads = ids.iter().map(|id| self.load(id, now));
        let mut records = Vec::new();
        for loaded in futures_join(loads).await {
            records.extend(loaded?);
        }
        Ok(records)
    }

    /// The live sessions whose `field` holds `key`, dropping from the set
    /// the members that expired, vanished or hold another value by now.
    async fn members(
        &self,
        field: usize,
        key: &Value<'static>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Record<T>>, StoreError> {
        let indexed = self
            .inner
            .indexed
            .iter()
            .find(|indexed| indexed.field == field)
            .ok_or(StoreError::Unsupported {
                what: "queries by a field without #[session(index)]",
            })?;
        let mut set = indexed.set_prefix.clone();
        match encode(key) {
            Some(value) => set.extend(value),
            None => return Ok(Vec::new()),
        }
        // What is stale is decided by the clock, whatever `now` asks about.
        let clock = Utc::now();
        let mut trim = redis::cmd("ZREMRANGEBYSCORE");
        trim.arg(&set).arg("-inf").arg(clock.timestamp_millis());
        self.command::<i64>(trim, Some(&set)).await?;
        let mut range = redis::cmd("ZRANGE");
        range.arg(&set).arg(0).arg(-1);
        let members: Vec<String> = self.command(range, Some(&set)).await?;
        let ids: Vec<SessionId> = members
            .iter()
            .filter_map(|member| member.parse().ok())
            .collect();
        let records = self.load_many(ids, clock).await?;
        let mut live = Vec::new();
        let mut found = std::collections::HashSet::new();
        for record in records {
            if record.data.encode_column(field)?.into_owned() == *key {
                found.insert(record.id.to_string());
                if record.expires_at > now {
                    live.push(record);
                }
            }
        }
        let stale: Vec<&String> = members
            .iter()
            .filter(|member| !found.contains(*member))
            .collect();
        if !stale.is_empty() {
            let mut remove = redis::cmd("ZREM");
            remove.arg(&set).arg(stale);
            self.command::<i64>(remove, Some(&set)).await?;
        }
        Ok(live)
    }

    /// Renew on Cluster, where the old and the new key are in different
    /// slots: mark the old hash moved (no write lands on it from then on),
    /// create the new one from it, apply the update there, delete the old.
    async fn move_session(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        data: &T,
        update: Update,
    ) -> Result<bool, StoreError> {
        let (old_key, new_key) = (self.key_of(id), self.key_of(new_id));
        let mut out = scripts::MOVE_OUT_TEXT.call(&old_key);
        out.arg(
            update
                .expected_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
        )
        .arg(new_id.to_string());
        let reply = self.call(out).await?;
        if !succeeded(&reply) {
            return Ok(false);
        }
        let pexpiretime = reply.get(1).map(bytes).unwrap_or_default();
        let hash: Vec<Vec<u8>> = match reply.get(2) {
            Some(redis::Value::Array(items)) => items.iter().map(bytes).collect(),
            Some(redis::Value::Map(pairs)) => pairs
                .iter()
                .flat_map(|(k, v)| [bytes(k), bytes(v)])
                .collect(),
            _ => Vec::new(),
        };
        let version = hash
            .chunks(2)
            .find(|pair| pair[0] == codec::VERSION.as_bytes())
            .map(|pair| String::from_utf8_lossy(&pair[1]).into_owned());
        let old_values: Vec<Option<Vec<u8>>> = self
            .inner
            .indexed
            .iter()
            .map(|indexed| {
                hash.chunks(2)
                    .find(|pair| pair[0] == indexed.column.as_bytes())
                    .map(|pair| pair[1].clone())
            })
            .collect();
        let moved = async {
            let mut into = scripts::MOVE_IN_TEXT.call(&new_key);
            into.arg(&pexpiretime);
            for part in &hash {
                into.arg(part);
            }
            if !succeeded(&self.call(into).await?) {
                return Err(StoreError::Redis(Arc::new(RedisError::from((
                    redis::ErrorKind::Client,
                    "the new session id is taken",
                )))));
            }
            let update = Update {
                expected_version: version.as_deref().and_then(|v| v.parse().ok()),
                new_id: None,
                ..update
            };
            self.write_keys(
                &[&new_key],
                data,
                update,
                &new_id.to_string(),
                &new_id.to_string(),
            )
            .await
        }
        .await;
        match moved {
            Ok((Some((score, changes)), sent)) => {
                let mut delete = redis::cmd("DEL");
                delete.arg(&old_key);
                self.command::<i64>(delete, Some(old_key.as_bytes()))
                    .await?;
                let changes: Vec<_> = old_values
                    .into_iter()
                    .zip(changes.into_iter().map(|(_, new)| new))
                    .collect();
                self.update_sets(
                    &changes,
                    &id.to_string(),
                    &new_id.to_string(),
                    &score,
                    true,
                    update.now,
                )
                .await?;
                self.wait_for_replicas(&new_key, sent).await?;
                Ok(true)
            }
            failed => {
                // Undo: the session stays under its old id, as if the renew
                // had not been tried.
                let mut undo_new = redis::cmd("DEL");
                undo_new.arg(&new_key);
                let mut undo_old = redis::cmd("HDEL");
                undo_old.arg(&old_key).arg(codec::MOVED_TO);
                let _ = self
                    .command::<i64>(undo_new, Some(new_key.as_bytes()))
                    .await;
                let _ = self
                    .command::<i64>(undo_old, Some(old_key.as_bytes()))
                    .await;
                failed.map(|_| false)
            }
        }
    }

    /// The update script on `keys` (the session's, and its new one when
    /// renewed on a standalone server): `None` if no live session matched,
    /// else the expiry score and, per indexed field, the values before and
    /// after.
    async fn write_keys(
        &self,
        keys: &[&str],
        data: &T,
        update: Update,
        member: &str,
        new_member: &str,
    ) -> Result<(Written, Sent), StoreError> {
        // Encoded into the command as they go in (`codec::arg_value`).
        let mut set = Vec::with_capacity(update.dirty.bits().count_ones() as usize);
        let mut unset = Vec::new();
        for index in update.dirty.iter() {
            let column = T::SCHEMA.column(index).name;
            match data.encode_column(index)? {
                Value::Null(_) => unset.push(column),
                value => set.push((column, value)),
            }
        }
        if keys.len() == 1 && unset.is_empty() && self.inner.indexed.is_empty() {
            return self.write_fields(keys[0], &set, &update).await;
        }
        let mut invocation = scripts::UPDATE_TEXT.call_keys(keys);
        update_head(&mut invocation, &update)
            .arg(
                update
                    .expires_at
                    .map(|at| micros(at).to_string())
                    .unwrap_or_default(),
            )
            .arg(
                update
                    .remember
                    .map(|r| if r { "1" } else { "0" })
                    .unwrap_or_default(),
            )
            .arg(set.len());
        for (column, value) in &set {
            codec::arg_value(invocation.arg(*column), value);
        }
        invocation.arg(unset.len());
        for column in &unset {
            invocation.arg(*column);
        }
        self.index_args(&mut invocation);
        invocation
            .arg(member)
            .arg(new_member)
            .arg(update.now.timestamp_millis())
            .arg(self.tracks());
        let (reply, sent) = self.call_on(invocation).await?;
        if !succeeded(&reply) {
            return Ok((None, sent));
        }
        let score = reply.get(1).map(bytes).unwrap_or_default();
        let changes = (0..self.inner.indexed.len())
            .map(|i| (present(&reply, 2 + 4 * i), present(&reply, 4 + 4 * i)))
            .collect();
        Ok((Some((score, changes)), sent))
    }
}

impl<T: SessionData> RedisStore<T> {
    /// The common update ([`scripts::UPDATE_FIELDS_TEXT`]): `set` and the
    /// library's fields that change, on the session at `key`.
    async fn write_fields(
        &self,
        key: &str,
        set: &[(&str, Value<'_>)],
        update: &Update,
    ) -> Result<(Written, Sent), StoreError> {
        let mut invocation = scripts::UPDATE_FIELDS_TEXT.call(key);
        update_head(&mut invocation, update).arg(self.tracks());
        for (column, value) in set {
            codec::arg_value(invocation.arg(*column), value);
        }
        if let Some(at) = update.expires_at {
            invocation.arg(codec::EXPIRES_AT).arg(micros(at));
        }
        if let Some(remember) = update.remember {
            invocation
                .arg(codec::REMEMBER)
                .arg(if remember { "1" } else { "0" });
        }
        let (reply, sent) = self.call_value(invocation).await?;
        let written = matches!(reply, redis::Value::Int(1));
        Ok((written.then(|| (Vec::new(), Vec::new())), sent))
    }
}

/// The arguments both update scripts start with: the expected version
/// ('' = any), whether to bump it, the new expiry in ms ('' = keep).
/// Numbers go into the command as decimal text directly, without a string
/// of their own each (two allocations fewer per write).
fn update_head<'a>(invocation: &'a mut scripts::Call, update: &Update) -> &'a mut scripts::Call {
    match update.expected_version {
        Some(version) => invocation.arg(version),
        None => invocation.arg(""),
    };
    invocation.arg(if update.is_touch() { "0" } else { "1" });
    match update.expires_at {
        Some(at) => invocation.arg(expire_at_ms(at)),
        None => invocation.arg(""),
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

impl<T: SessionData> SessionStore<T> for RedisStore<T> {
    async fn load(
        &self,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        let groups = &self.inner.groups;
        if let Some(cache) = groups.cache() {
            return self.load_cached(cache, groups, id, now).await;
        }
        let key = self.key_of(id);
        let (reply, _) = self
            .send(codec::load_command::<T>(&key), Some(key.as_bytes()))
            .await?;
        codec::record_of(*id, reply.map_err(store_error)?, now)
    }

    // A capped write is boxed: its turns would otherwise make every
    // write's future (kept per request) several times larger.
    async fn insert(&self, record: &Record<T>) -> Result<(), StoreError> {
        let capped = self.capped(&record.data, None)?;
        if capped.is_empty() {
            return self.insert_session(record).await;
        }
        let write = self.insert_session(record);
        Box::pin(self.with_caps(capped, record.id, write, |_| true)).await
    }

    async fn update(&self, id: &SessionId, data: &T, update: Update) -> Result<bool, StoreError> {
        let capped = self.capped(data, Some(update.dirty))?;
        if capped.is_empty() {
            return self.update_session(id, data, update).await;
        }
        let written = update.new_id.unwrap_or(*id);
        let write = self.update_session(id, data, update);
        Box::pin(self.with_caps(capped, written, write, |wrote| *wrote)).await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.delete_counted(id).await.map(|_| ())
    }

    async fn find_by(
        &self,
        field: usize,
        key: Value<'static>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Record<T>>, StoreError> {
        self.members(field, &key, now).await
    }

    async fn delete_by(
        &self,
        field: usize,
        key: Value<'static>,
        except: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        let records = self.members(field, &key, Utc::now()).await?;
        let doomed: Vec<SessionId> = records
            .into_iter()
            .map(|record| record.id)
            .filter(|id| Some(*id) != except)
            .collect();
        let deletes = doomed.iter().map(|id| self.delete_counted(id));
        let mut count = 0;
        for deleted in futures_join(deletes).await {
            count += u64::from(deleted?);
        }
        Ok(count)
    }

    fn caps(&self) -> &[(usize, u32)] {
        &self.inner.caps
    }

    fn events(&self) -> Option<&SessionEvents> {
        self.inner.events.as_ref()
    }

    /// Always 0: Redis expires each session's hash itself, at its
    /// `expires_at` (`PEXPIREAT`), and each index set with its last member,
    /// so there is nothing to purge.
    async fn purge_expired(&self, _now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }
}

impl<T: SessionData> RedisStore<T> {
    /// An insert, its caps aside ([`SessionStore::insert`]).
    async fn insert_session(&self, record: &Record<T>) -> Result<(), StoreError> {
        let key = self.key_of(&record.id);
        let fields = codec::fields_of(record)?;
        let lean = self.inner.indexed.is_empty();
        let member = self.member_of(&record.id);
        let now = Utc::now();
        // Both scripts start alike: the expiry, then the fields.
        let script = if lean {
            &scripts::INSERT_FIELDS_TEXT
        } else {
            &scripts::INSERT_TEXT
        };
        let mut invocation = script.call(&key);
        invocation
            .arg(expire_at_ms(record.expires_at))
            .arg(fields.len());
        for (field, value) in &fields {
            codec::arg_value(invocation.arg(*field), value);
        }
        if !lean {
            self.index_args(&mut invocation);
            invocation.arg(&member).arg(now.timestamp_millis());
        }
        invocation.arg(self.tracks());
        let ticket = self.cache().map(|cache| cache.begin(key.as_bytes()));
        let called = self.call_value(invocation).await;
        // The lean script answers 1 or 0, the general one a table whose
        // first item says it.
        let created = |reply: &redis::Value| match reply {
            redis::Value::Array(items) => succeeded(items),
            other => matches!(other, redis::Value::Int(1)),
        };
        if let (Some(cache), Some(ticket)) = (self.cache(), ticket) {
            let tracked = called
                .as_ref()
                .ok()
                .and_then(|(reply, sent)| sent.tracked.filter(|_| created(reply)));
            cache.finish::<T>(key.as_bytes(), ticket, tracked, |_| {
                Some(record.duplicate())
            });
        }
        let (reply, sent) = called?;
        if !created(&reply) {
            return Err(StoreError::Redis(Arc::new(RedisError::from((
                redis::ErrorKind::Client,
                "a session with this id exists already",
            )))));
        }
        if !lean {
            let reply: Vec<redis::Value> =
                redis::from_redis_value(reply).map_err(|error| store_error(error.into()))?;
            let score = reply.get(1).map(bytes).unwrap_or_default();
            let changes: Vec<_> = (0..self.inner.indexed.len())
                .map(|i| (None, present(&reply, 2 + 2 * i)))
                .collect();
            self.update_sets(&changes, &member, &member, &score, false, now)
                .await?;
        }
        self.wait_for_replicas(&key, sent).await
    }

    /// An update, its caps aside ([`SessionStore::update`]).
    async fn update_session(
        &self,
        id: &SessionId,
        data: &T,
        update: Update,
    ) -> Result<bool, StoreError> {
        if let Some(new_id) = update.new_id {
            // Boxed: a renew is rare, and larger than the common write.
            return Box::pin(self.renew_session(id, new_id, data, update)).await;
        }
        let key = self.key_of(id);
        let member = self.member_of(id);
        let ticket = self.cache().map(|cache| cache.begin(key.as_bytes()));
        let written = self
            .write_keys(&[&key], data, update, &member, &member)
            .await;
        if let (Some(cache), Some(ticket)) = (self.cache(), ticket) {
            // Exact only from the cached copy it started from: the ticket
            // held means no other client wrote the key in between.
            let tracked = match &written {
                Ok((Some(_), sent)) => sent.tracked,
                _ => None,
            };
            cache.finish::<T>(key.as_bytes(), ticket, tracked, |base| {
                let mut record = base?;
                let exact = update.expected_version.is_none_or(|v| v == record.version);
                exact.then(|| {
                    record.apply(data, &update);
                    record
                })
            });
        }
        let (Some((score, changes)), sent) = written? else {
            return Ok(false);
        };
        let moved_expiry = update.expires_at.is_some();
        let changes: Vec<_> = changes
            .into_iter()
            .map(|(old, new)| {
                // Unchanged and not moved in time: nothing for its set.
                if old == new && !moved_expiry {
                    (None, None)
                } else {
                    (old, new)
                }
            })
            .collect();
        self.update_sets(&changes, &member, &member, &score, false, update.now)
            .await?;
        self.wait_for_replicas(&key, sent).await?;
        Ok(true)
    }
}

impl<T: SessionData> RedisStore<T> {
    /// [`update_session`](Self::update_session) under the new id `new_id`.
    async fn renew_session(
        &self,
        id: &SessionId,
        new_id: SessionId,
        data: &T,
        update: Update,
    ) -> Result<bool, StoreError> {
        if let Some(cache) = self.cache() {
            cache.remove(self.key_of(id).as_bytes());
            cache.remove(self.key_of(&new_id).as_bytes());
        }
        if self.is_cluster() {
            return self.move_session(id, &new_id, data, update).await;
        }
        let (old_key, new_key) = (self.key_of(id), self.key_of(&new_id));
        let (written, sent) = self
            .write_keys(
                &[&old_key, &new_key],
                data,
                update,
                &id.to_string(),
                &new_id.to_string(),
            )
            .await?;
        if written.is_some() {
            self.wait_for_replicas(&new_key, sent).await?;
        }
        Ok(written.is_some())
    }

    /// Deletes a session and its index entries: whether it existed.
    async fn delete_counted(&self, id: &SessionId) -> Result<bool, StoreError> {
        let key = self.key_of(id);
        let member = id.to_string();
        let mut invocation = scripts::DELETE_TEXT.call(&key);
        self.index_args(&mut invocation);
        invocation.arg(&member);
        if let Some(cache) = self.cache() {
            cache.remove(key.as_bytes());
        }
        let reply = self.call_on(invocation).await;
        if let Some(cache) = self.cache() {
            cache.remove(key.as_bytes());
        }
        let (reply, sent) = reply?;
        let deleted = succeeded(&reply);
        if self.is_cluster() {
            let changes: Vec<_> = (0..self.inner.indexed.len())
                .map(|i| (present(&reply, 2 + 2 * i), None))
                .collect();
            self.update_sets(&changes, &member, &member, b"0", false, Utc::now())
                .await?;
        }
        if deleted {
            self.wait_for_replicas(&key, sent).await?;
        }
        Ok(deleted)
    }
}
