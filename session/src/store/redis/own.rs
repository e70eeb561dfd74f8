//! A multiplexed connection of the store's own, made when it is first
//! used and again after it broke: each Cluster master's lane has one
//! ([`super::group`]), and so has a standalone store with a client cache.
//!
//! With a client cache, its pushes reach the cache on the task that reads
//! the socket, in the order they arrive, before any reply that follows
//! them. The cache's sync point rests on that order ([`super::cache`]): an
//! invalidation Redis sent before a group's reply must have been applied
//! when the group's requests look at the cache. redis-rs's
//! `ConnectionManager` hands pushes to a task of its own through a
//! channel, so a reply could overtake an invalidation read in the same
//! poll of the socket (the runtime ran the reply's task first: 168 of 300
//! times in this module's test), and a read then answered the stale
//! session. A plain `MultiplexedConnection` calls its push sender inline,
//! which is the order the cache needs; what the manager added (a new
//! connection after the old one broke) is done here.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, PushInfo, PushKind, RedisFuture, RedisResult,
    aio::{ConnectionLike, MultiplexedConnection},
};

use super::cache::ClientCache;
use crate::sync::lock;

/// Cloning shares the connection.
#[derive(Clone)]
pub(crate) struct OwnConnection {
    inner: Arc<Inner>,
}

struct Inner {
    info: ConnectionInfo,
    config: AsyncConnectionConfig,
    /// Where its pushes go, if anywhere (the connection then speaks RESP3).
    cache: Option<Arc<ClientCache>>,
    current: Mutex<Option<Current>>,
    /// One new connection at a time: requests that find the old one
    /// broken wait for the one being made instead of each making theirs.
    opening: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Current {
    connection: MultiplexedConnection,
    /// Cleared when the connection reports that it broke (its
    /// `Disconnection` push), a call on it failed for good, or its owner
    /// retired it.
    alive: Arc<AtomicBool>,
}

impl OwnConnection {
    /// To the server `info` names, connected on first use; with a `cache`,
    /// in RESP3 (invalidations are pushes), its pushes going there.
    pub(crate) fn new(
        info: ConnectionInfo,
        cache: Option<Arc<ClientCache>>,
        timeout: Duration,
    ) -> Self {
        let info = if cache.is_some() {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info.set_redis_settings(settings)
        } else {
            info
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Self {
            inner: Arc::new(Inner {
                info,
                config,
                cache,
                current: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The live connection, made now if there is none.
    pub(crate) async fn get(&self) -> RedisResult<MultiplexedConnection> {
        self.current().await.map(|current| current.connection)
    }

    /// The connection in use failed in a way its caller saw (a group sent
    /// on it had no answer): the next call makes a new one.
    pub(crate) fn retire(&self) {
        if let Some(current) = lock(&self.inner.current).as_ref() {
            current.alive.store(false, Ordering::SeqCst);
        }
    }

    async fn current(&self) -> RedisResult<Current> {
        if let Some(current) = self.live() {
            return Ok(current);
        }
        // Boxed: rare, and larger than a call's own future.
        Box::pin(self.reopen()).await
    }

    fn live(&self) -> Option<Current> {
        lock(&self.inner.current)
            .as_ref()
            .filter(|current| current.alive.load(Ordering::SeqCst))
            .cloned()
    }

    async fn reopen(&self) -> RedisResult<Current> {
        let _opening = self.inner.opening.lock().await;
        // Made by another request while this one waited.
        if let Some(current) = self.live() {
            return Ok(current);
        }
        let alive = Arc::new(AtomicBool::new(true));
        let config = match &self.inner.cache {
            None => self.inner.config.clone(),
            Some(cache) => {
                let (cache, alive) = (cache.clone(), alive.clone());
                self.inner
                    .config
                    .clone()
                    .set_push_sender(move |push: PushInfo| {
                        if push.kind == PushKind::Disconnection {
                            alive.store(false, Ordering::SeqCst);
                        }
                        cache.on_push(&push);
                        Ok::<(), Infallible>(())
                    })
            }
        };
        // Bounded by the config's connection timeout, handshake included.
        let connection = redis::Client::open(self.inner.info.clone())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let current = Current { connection, alive };
        *lock(&self.inner.current) = Some(current.clone());
        Ok(current)
    }

    /// After a call on `current`: an error that leaves the connection
    /// unusable retires it, so that the next call makes a new one.
    fn after<R>(current: &Current, result: &RedisResult<R>) {
        if let Err(error) = result
            && error.is_unrecoverable_error()
        {
            current.alive.store(false, Ordering::SeqCst);
        }
    }
}

// The connection's own `send_packed_*` rather than its trait methods,
// which box their future: a call is boxed once, here.
impl ConnectionLike for OwnConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let mut current = self.current().await?;
            let result = current.connection.send_packed_command(cmd).await;
            Self::after(&current, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let mut current = self.current().await?;
            let result = current
                .connection
                .send_packed_commands(pipeline, offset, count)
                .await;
            Self::after(&current, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.info.redis_settings().db()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::store::redis::cache::tests::fill_at;

    /// The cache's sync point needs this order: a push that Redis sent
    /// before a reply has reached the cache when the reply's caller
    /// resumes. The connection tracks without `NOLOOP` here, so that its
    /// own write of a key it read invalidates the key, and Redis answers
    /// the pipeline `HGET`, `HSET`, `PING` with the push between the last
    /// two replies, in one write: the case where a channel to another task
    /// let the caller see the cache before the push.
    /// Each call runs in a task of its own, as a request does (its wake-up
    /// then goes before other tasks on the runtime's worker).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_reaches_the_cache_before_the_reply_after_it() {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).expect("a URL");
        let cache = Arc::new(ClientCache::new(100));
        let connection = OwnConnection::new(info, Some(cache.clone()), Duration::from_secs(2));
        match connection.get().await {
            Ok(_) => {}
            Err(error) if std::env::var("CI").is_ok_and(|ci| ci == "true" || ci == "1") => {
                panic!("Redis at {url} is unreachable and CI=true requires it: {error}")
            }
            Err(error) => {
                eprintln!(
                    "SKIPPED a_push_reaches_the_cache_before_the_reply_after_it: Redis at {url} is unreachable ({error})"
                );
                return;
            }
        };
        let _: () = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .query_async(&mut connection.clone())
            .await
            .expect("tracking on");
        cache.tracking_on(1);
        let key = format!(
            "ats-tracked-order:{}",
            crate::token::SessionToken::generate().id()
        );
        let mut stale = 0;
        for round in 0..300 {
            fill_at(&cache, key.as_bytes(), round);
            assert!(cache.has(key.as_bytes(), Utc::now()), "filled");
            let (mut connection, cache, key) = (connection.clone(), cache.clone(), key.clone());
            let seen_after = tokio::spawn(async move {
                let mut pipe = redis::pipe();
                pipe.cmd("HGET")
                    .arg(&key)
                    .arg("count")
                    .cmd("HSET")
                    .arg(&key)
                    .arg("count")
                    .arg(round)
                    .cmd("PING");
                let _: (Option<i64>, i64, String) =
                    pipe.query_async(&mut connection).await.expect("pipeline");
                cache.has(key.as_bytes(), Utc::now())
            })
            .await
            .expect("the call's task");
            stale += usize::from(seen_after);
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut connection.clone())
            .await
            .expect("cleanup");
        assert_eq!(stale, 0, "replies that overtook their invalidation, of 300");
    }
}
