//! Group commit for Redis: the loads and writes of one moment go to Redis
//! as one pipeline (per Cluster node), not one request each. A lone
//! request runs at once, alone; under load the batches grow by themselves,
//! because while a batch is out the next one fills.
//!
//! Each entry keeps its own reply: an error of one command (a script the
//! server forgot, a slot that moved) is that entry's alone, and is retried
//! alone through the client's own routing, which follows redirects.

use std::sync::{Arc, RwLock};

use redis::{
    Cmd, RedisError, RedisResult, Value,
    aio::ConnectionLike,
    cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr},
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Connection;
use crate::sync::{read, write};

/// The most commands in one pipeline.
const MAX_BATCH: usize = 128;
/// Batches in flight at once per store.
const IN_FLIGHT: usize = 2;
const SLOTS: usize = 16384;

/// One command to send, and where its reply goes.
struct Job {
    cmd: Cmd,
    /// What to send alone if the server does not know the script (`EVAL`
    /// with the source, for an `EVALSHA`).
    fallback: Option<Cmd>,
    /// The key that routes it on Cluster.
    slot: u16,
    reply: oneshot::Sender<RedisResult<Value>>,
}

/// The queue to the batching task.
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<Job>,
}

/// Which node owns each slot, as last seen (Cluster only): commands for
/// one node share a pipeline.
type SlotOwners = Arc<RwLock<Vec<u16>>>;

impl Batcher {
    /// Starts the task that sends the batches, on the current runtime.
    pub(crate) fn start(connection: Connection) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let owners: SlotOwners = Arc::new(RwLock::new(Vec::new()));
        tokio::spawn(serve(jobs, connection, owners));
        Self { queue }
    }

    /// Sends `cmd` in the next batch; `fallback` replaces it, alone, when
    /// the server answers `NOSCRIPT`.
    pub(crate) async fn send(
        &self,
        cmd: Cmd,
        fallback: Option<Cmd>,
        key: &[u8],
    ) -> RedisResult<Value> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            cmd,
            fallback,
            slot: slot_of(key),
            reply,
        };
        if self.queue.send(job).is_err() {
            return Err(closed());
        }
        answer.await.unwrap_or_else(|_| Err(closed()))
    }
}

/// The Cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the
/// whole key without one, modulo 16384 — as Redis computes it.
fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&byte| byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS as u16
}

fn closed() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "the session store's batch task has stopped",
    ))
}

async fn serve(mut jobs: mpsc::UnboundedReceiver<Job>, connection: Connection, owners: SlotOwners) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = jobs.recv().await {
        // While every batch is out, more jobs queue up for the next one.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (connection, owners) = (connection.clone(), owners.clone());
        tokio::spawn(async move {
            match &connection {
                Connection::Single(single) => {
                    send_pipeline(batch, &connection, None, |pipeline, count| {
                        let mut single = single.clone();
                        async move { single.req_packed_commands(&pipeline, 0, count).await }
                    })
                    .await;
                }
                Connection::Cluster(cluster) => {
                    for (route, jobs) in by_node(batch, &owners, cluster).await {
                        let cluster = cluster.clone();
                        send_pipeline(jobs, &connection, Some(&owners), move |pipeline, count| {
                            let mut cluster = cluster.clone();
                            async move {
                                match route {
                                    Some(route) => {
                                        cluster
                                            .route_pipeline(
                                                pipeline,
                                                0,
                                                count,
                                                SingleNodeRoutingInfo::SpecificNode(route),
                                            )
                                            .await
                                    }
                                    None => cluster.req_packed_commands(&pipeline, 0, count).await,
                                }
                            }
                        })
                        .await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Sends `jobs` as one pipeline, hands each reply to its waiter, and
/// retries alone the entries that need it.
async fn send_pipeline<F, Fut>(
    jobs: Vec<Job>,
    connection: &Connection,
    owners: Option<&SlotOwners>,
    send: F,
) where
    F: FnOnce(redis::Pipeline, usize) -> Fut,
    Fut: Future<Output = RedisResult<Vec<Value>>>,
{
    if jobs.len() == 1 {
        // Alone: no pipeline to build.
        let job = jobs.into_iter().next().expect("one job");
        let reply = alone(&job, connection).await;
        let _ = job.reply.send(reply);
        return;
    }
    let mut pipeline = redis::pipe();
    for job in &jobs {
        pipeline.add_command(job.cmd.clone());
    }
    match send(pipeline, jobs.len()).await {
        Ok(replies) if replies.len() == jobs.len() => {
            for (job, reply) in jobs.into_iter().zip(replies) {
                let reply = match reply {
                    Value::ServerError(error) => {
                        let error = RedisError::from(error);
                        if error.is_cluster_error()
                            && let Some(owners) = owners
                        {
                            // The map is stale (a failover, a resharding).
                            forget(owners);
                        }
                        if needs_retry(&error) {
                            alone(&job, connection).await
                        } else {
                            Err(error)
                        }
                    }
                    value => Ok(value),
                };
                let _ = job.reply.send(reply);
            }
        }
        Ok(_) => {
            for job in jobs {
                let _ = job.reply.send(Err(RedisError::from((
                    redis::ErrorKind::Client,
                    "a pipeline answered a different number of replies",
                ))));
            }
        }
        Err(error)
            if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() =>
        {
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
        Err(_) => {
            // A pipeline the node refused as a whole (a moved slot):
            // each entry alone, routed by the client.
            if let Some(owners) = owners {
                forget(owners);
            }
            for job in jobs {
                let reply = alone(&job, connection).await;
                let _ = job.reply.send(reply);
            }
        }
    }
}

/// One job on its own, routed by the client (which follows MOVED/ASK);
/// with the script's source when the server did not know it.
async fn alone(job: &Job, connection: &Connection) -> RedisResult<Value> {
    let mut connection = connection.clone();
    match job.cmd.query_async::<Value>(&mut connection).await {
        Err(error) if is_noscript(&error) && job.fallback.is_some() => {
            let fallback = job.fallback.as_ref().expect("checked");
            fallback.query_async(&mut connection).await
        }
        other => other,
    }
}

fn is_noscript(error: &RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

fn needs_retry(error: &RedisError) -> bool {
    is_noscript(error) || error.is_cluster_error()
}

/// Jobs grouped by the node that owns their slots, each group with a route
/// to that node (`None`: the map is not known yet; the client routes).
async fn by_node(
    jobs: Vec<Job>,
    owners: &SlotOwners,
    cluster: &redis::cluster_async::ClusterConnection,
) -> Vec<(Option<Route>, Vec<Job>)> {
    if read(owners).len() != SLOTS {
        refresh(owners, cluster).await;
    }
    let owners = read(owners);
    if owners.len() != SLOTS {
        return jobs.into_iter().map(|job| (None, vec![job])).collect();
    }
    let mut groups: Vec<(u16, Option<Route>, Vec<Job>)> = Vec::new();
    for job in jobs {
        let node = owners[usize::from(job.slot)];
        match groups.iter_mut().find(|(owner, _, _)| *owner == node) {
            Some((_, _, group)) => group.push(job),
            None => {
                let route =
                    Route::with_slot(Slot::new(job.slot).expect("a slot"), SlotAddr::Master);
                groups.push((node, Some(route), vec![job]));
            }
        }
    }
    groups
        .into_iter()
        .map(|(_, route, jobs)| (route, jobs))
        .collect()
}

/// Reads which master owns each slot (`CLUSTER SLOTS`).
async fn refresh(owners: &SlotOwners, cluster: &redis::cluster_async::ClusterConnection) {
    let mut cluster = cluster.clone();
    let Ok(Value::Array(ranges)) = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Value>(&mut cluster)
        .await
    else {
        return;
    };
    let mut map = vec![u16::MAX; SLOTS];
    let mut nodes: Vec<Vec<u8>> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let address = match (master.first(), master.get(1)) {
            (Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                [host.clone(), port.to_string().into_bytes()].concat()
            }
            _ => continue,
        };
        let node = match nodes.iter().position(|known| *known == address) {
            Some(node) => node,
            None => {
                nodes.push(address);
                nodes.len() - 1
            }
        };
        for slot in (*start).max(0)..=(*end).min(SLOTS as i64 - 1) {
            map[slot as usize] = node as u16;
        }
    }
    *write(owners) = map;
}

/// Forgets the slot map (after a failover or a resharding), so the next
/// batch reads it again.
fn forget(owners: &SlotOwners) {
    write(owners).clear();
}

#[cfg(test)]
mod tests {
    use super::slot_of;

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"user1000"), 3443);
        assert_eq!(slot_of(b"foo{}{bar}"), 8363, "an empty tag: the whole key");
    }
}
