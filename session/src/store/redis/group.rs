//! Grouped pipelines: the commands that concurrent requests have ready at
//! one moment go to Redis as one pipeline — on a standalone server one
//! group at a time per moment, on Cluster one per master (a *lane* each).
//!
//! A request queues its command and waits for its reply. A task takes the
//! queue and sends it as one group: it yields first, so that every request
//! the runtime has ready (and every socket that became readable) queues
//! its command before (a group of sync points only, twice: it has no work
//! of its own to delay). Under load a group carries many requests' commands
//! for one write and one read on the socket, one timer and one reply
//! channel between the connection and us; alone, a request is sent at
//! once. Each command keeps its own reply: one that fails (a script error,
//! a wrong type) fails alone.
//!
//! On Cluster a command goes in the lane of the master that owns its key's
//! slot, by a map read with `CLUSTER SLOTS`, and a lane's groups go on a
//! connection of its own to that master (with the seed node's settings:
//! credentials, TLS). Not through the Cluster client: it retries a
//! pipeline with a redirected command as a whole at the new node, which
//! would run the others twice. A command the node did not run (`MOVED`,
//! `ASK`, `TRYAGAIN`: its slot moved; `CLUSTERDOWN`: a failover) is sent
//! again on its own through the Cluster client, which follows the
//! redirect or waits and retries, and the map is read again; so is it
//! after a group failed as a whole (its requests fail, as they may have
//! run), and a group whose master cannot be reached goes command by
//! command through the client. A command that names no key (`CLUSTER
//! SLOTS`, the `WAIT` after a write sent on its own) goes on its own
//! through the client.
//!
//! With [`wait_for_replicas`](super::RedisStoreBuilder::wait_for_replicas)
//! a group that carries a write ends with one `WAIT`, on the connection
//! the writes went on: it counts every write before it there, so one
//! `WAIT` covers the group's writes, in the group's round trip, and each
//! write hears how many replicas acknowledged it. A write sent on its
//! own (Cluster, above) hears nothing; the store then sends a `WAIT`
//! through the Cluster client, whose connection to the node it ran on
//! sends both.
//!
//! With a client cache every group starts with `CLIENT ID`, so its replies
//! say which connection they ran on, and whether tracking was on there
//! before the group was sent (then all it read is tracked). A group is
//! sent after every request in it queued, so its reply is also a sync
//! point for them: every invalidation of a write Redis applied before it
//! has arrived by then. A request that only needs a sync point queues no
//! command.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{Cmd, ConnectionAddr, RedisResult, aio::ConnectionLike};
use tokio::sync::oneshot;

use super::{
    Connection, WaitForReplicas, cache::ClientCache, futures_join, is_outage, own::OwnConnection,
    store_error, unavailable, within,
};
use crate::{
    error::StoreError,
    sync::{lock, read, write},
};

/// The reply to one queued command.
pub(crate) struct Answer {
    /// The command's own reply (`Nil` for a sync point): a server error
    /// here is this command's alone.
    pub(crate) value: RedisResult<redis::Value>,
    pub(crate) sent: Sent,
    /// The command, given back when the server answered `NOSCRIPT` (it
    /// forgot the script), so that it can go again as `EVAL` without
    /// every call keeping a copy.
    pub(crate) forgotten: Option<Box<Cmd>>,
}

impl Answer {
    fn new(value: RedisResult<redis::Value>, sent: Sent, cmd: &Cmd) -> Self {
        let forgotten =
            matches!(&value, Err(error) if is_no_script(error)).then(|| Box::new(cmd.clone()));
        Self {
            value,
            sent,
            forgotten,
        }
    }
}

/// The first key of a script call: after its name, the script's hash or
/// source and the number of keys.
fn script_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().skip(2);
    match (args.next(), args.next()) {
        (Some(redis::Arg::Simple(count)), Some(redis::Arg::Simple(key))) if count != b"0" => {
            Some(key)
        }
        _ => None,
    }
}

/// The server does not know the script an `EVALSHA` named.
fn is_no_script(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// What the group a command went in says about it, beside its reply.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sent {
    /// With a client cache: the tracking generation, if the group ran on
    /// the connection whose tracking was on before it was sent and still
    /// is, so that what it read is tracked (and what it wrote, by the
    /// scripts' final read).
    pub(crate) tracked: Option<u64>,
    /// With `wait_for_replicas`: how many replicas acknowledged the
    /// group's `WAIT` (`None`: the command went on its own, or the
    /// group's `WAIT` gave no count).
    pub(crate) acked: Option<i64>,
}

type Reply = oneshot::Sender<Result<Answer, StoreError>>;

#[derive(Default)]
struct Queue {
    commands: Vec<(Cmd, Reply)>,
    /// A write is among `commands` (the group then ends with `WAIT`, if
    /// the store waits for replicas).
    writes: bool,
    /// Requests that only wait for a sync point.
    syncs: Vec<Reply>,
    /// A task is about to take the queue.
    gathering: bool,
    /// A group of sync points only is out.
    syncing: bool,
}

impl Queue {
    fn push(&mut self, cmd: Cmd, reply: Reply, write: bool) {
        self.commands.push((cmd, reply));
        self.writes |= write;
    }

    /// Whether a task should take the queue now (then it is marked taken).
    /// Commands go at once; sync points alone wait while a group of them
    /// is out, so that under load they share one (cached reads, the bulk
    /// of a site's requests, then cost a small share of a round trip),
    /// while a request's load or write never waits for another group.
    fn gather(&mut self) -> bool {
        let go = !self.gathering
            && (!self.commands.is_empty() || (!self.syncs.is_empty() && !self.syncing));
        if go {
            self.gathering = true;
        }
        go
    }
}

/// The queue of one server: the standalone one, or one Cluster master
/// (with its connection).
#[derive(Default)]
struct Lane {
    queue: Mutex<Queue>,
    node: Option<Node>,
}

/// A Cluster master's own connection, made when its first group goes and
/// again after one failed.
struct Node {
    connection: OwnConnection,
}

/// The group task ended without answering (the runtime shut down).
#[derive(Debug, thiserror::Error)]
#[error("the Redis group task ended before the reply came")]
struct Dropped;

/// Keeps a lane going if its task is dropped (its runtime shut down): the
/// requests of its group hear [`Dropped`], and so do those queued after it
/// that no other task is gathering.
struct Running<'a> {
    lane: &'a Lane,
    phase: Phase,
}

enum Phase {
    Gathering,
    Sending { syncing: bool },
    Done,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.lane.queue);
        match self.phase {
            Phase::Gathering => queue.gathering = false,
            Phase::Sending { syncing } => queue.syncing &= !syncing,
            Phase::Done => return,
        }
        if !queue.gathering {
            queue.commands.clear();
            queue.syncs.clear();
        }
    }
}

/// The count in a `WAIT`'s reply.
fn acked_of(reply: Option<redis::Value>) -> Option<i64> {
    match reply {
        Some(redis::Value::Int(acked)) => Some(acked),
        _ => None,
    }
}

/// The number of Cluster slots.
const SLOTS: usize = 16384;

/// How often at most the Cluster's slot map is read again.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// Which master owns each slot, as last read, and each master's lane.
#[derive(Default)]
struct SlotMap {
    /// Per slot, an index into `lanes` (empty until read).
    owners: Vec<u16>,
    /// Per master (`host`, `port`), its lane.
    lanes: Vec<((String, u16), Arc<Lane>)>,
}

/// The lanes of a Cluster, and the reading of its slot map.
struct ClusterLanes {
    /// The seed node's settings, for the connections to the masters.
    seed: redis::ConnectionInfo,
    map: RwLock<SlotMap>,
    refresh: Mutex<Refresh>,
}

/// The readings of the slot map: one at a time, at most one per
/// [`REFRESH_EVERY`].
#[derive(Default)]
struct Refresh {
    running: bool,
    last: Option<Instant>,
}

enum Lanes {
    Single(Arc<Lane>),
    Cluster(Box<ClusterLanes>),
}

/// The groups of one connection, shared by the stores on it.
pub(crate) struct Groups {
    connection: Connection,
    timeout: Duration,
    wait: Option<WaitForReplicas>,
    cache: Option<Arc<ClientCache>>,
    lanes: Lanes,
    stats: Stats,
}

/// Counts, for tests and benches ([`super::RedisStore::pipeline_stats`]).
#[derive(Default)]
struct Stats {
    groups: AtomicU64,
    grouped: AtomicU64,
    alone: AtomicU64,
}

/// How the commands of the stores on one connection went, so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Groups sent (pipelines, one per server per moment).
    pub groups: u64,
    /// Commands sent in them.
    pub grouped: u64,
    /// Commands sent on their own through the client (on Cluster: a
    /// command that names no key we route, one that was redirected, one
    /// whose master could not be reached).
    pub alone: u64,
}

impl Groups {
    /// The groups of a standalone server.
    pub(crate) fn new(
        connection: Connection,
        timeout: Duration,
        wait: Option<WaitForReplicas>,
        cache: Option<Arc<ClientCache>>,
    ) -> Self {
        Self {
            connection,
            timeout,
            wait,
            cache,
            lanes: Lanes::Single(Arc::default()),
            stats: Stats::default(),
        }
    }

    /// The groups of a Cluster: a lane per master once the slot map is
    /// read ([`refresh`](Self::refresh)); until then each command goes on
    /// its own.
    pub(crate) fn cluster(
        connection: Connection,
        timeout: Duration,
        wait: Option<WaitForReplicas>,
        seed: redis::ConnectionInfo,
    ) -> Self {
        Self {
            connection,
            timeout,
            wait,
            cache: None,
            lanes: Lanes::Cluster(Box::new(ClusterLanes {
                seed,
                map: RwLock::default(),
                refresh: Mutex::default(),
            })),
            stats: Stats::default(),
        }
    }

    /// The connection the groups are on.
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The client cache on this connection, if any.
    pub(crate) fn cache(&self) -> Option<&Arc<ClientCache>> {
        self.cache.as_ref()
    }

    pub(crate) fn stats(&self) -> PipelineStats {
        PipelineStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            grouped: self.stats.grouped.load(Ordering::Relaxed),
            alone: self.stats.alone.load(Ordering::Relaxed),
        }
    }

    fn count_group(&self, commands: usize) {
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats
            .grouped
            .fetch_add(commands as u64, Ordering::Relaxed);
    }

    /// Sends `cmd`, which names `key` (on Cluster, the key that routes it;
    /// `None`: no key, it goes on its own), in the next group of its
    /// server and answers its reply.
    pub(crate) async fn send(
        self: &Arc<Self>,
        cmd: Cmd,
        key: Option<&[u8]>,
    ) -> Result<Answer, StoreError> {
        self.send_as(cmd, |_| key.map(slot_of), false).await
    }

    /// Sends a script call (`EVALSHA` or `EVAL`), routed by its first key,
    /// as [`send`](Self::send) does; a write: with `wait_for_replicas`,
    /// its group ends with `WAIT` ([`Sent::acked`]).
    pub(crate) async fn send_script(self: &Arc<Self>, cmd: Cmd) -> Result<Answer, StoreError> {
        let write = self.wait.is_some();
        self.send_as(cmd, |cmd| script_key(cmd).map(slot_of), write)
            .await
    }

    /// Queues `cmd` in its lane (`slot`: its slot, asked on Cluster only).
    async fn send_as(
        self: &Arc<Self>,
        cmd: Cmd,
        slot: impl FnOnce(&Cmd) -> Option<u16>,
        write: bool,
    ) -> Result<Answer, StoreError> {
        match &self.lanes {
            Lanes::Single(lane) => {
                self.queue(lane, |queue, reply| queue.push(cmd, reply, write))
                    .await
            }
            Lanes::Cluster(cluster) => {
                let Some(lane) = slot(&cmd).and_then(|slot| cluster.lane(slot)) else {
                    return self.alone(&cmd).await;
                };
                self.queue(&lane, |queue, reply| queue.push(cmd, reply, write))
                    .await
            }
        }
    }

    /// Waits for the next group's `CLIENT ID` (a sync point; standalone).
    pub(crate) async fn sync(self: &Arc<Self>) -> Result<Answer, StoreError> {
        match &self.lanes {
            Lanes::Single(lane) => {
                self.queue(lane, |queue, reply| queue.syncs.push(reply))
                    .await
            }
            Lanes::Cluster(_) => Ok(Answer {
                value: Ok(redis::Value::Nil),
                sent: Sent::default(),
                forgotten: None,
            }),
        }
    }

    /// Queues on `lane` and waits for the reply.
    async fn queue(
        self: &Arc<Self>,
        lane: &Arc<Lane>,
        push: impl FnOnce(&mut Queue, Reply),
    ) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        let spawn = {
            let mut queue = lock(&lane.queue);
            push(&mut queue, reply);
            queue.gather()
        };
        if spawn {
            // Its own task: a request that goes away (its client hung up)
            // cannot take the others' replies with it.
            tokio::spawn(self.clone().run(lane.clone()));
        }
        answer.await.unwrap_or_else(|_| Err(unavailable(Dropped)))
    }

    /// Sends a group of `lane`, then the next one while there is one to
    /// send ([`Queue::gather`]).
    async fn run(self: Arc<Self>, lane: Arc<Lane>) {
        let mut guard = Running {
            lane: &lane,
            phase: Phase::Gathering,
        };
        loop {
            // Every request ready now queues first.
            tokio::task::yield_now().await;
            // One scheduler pass more lets the requests whose sockets
            // became readable meanwhile share the round trip:
            // - a group of sync points only carries no work of its own
            //   (cached reads, +14-17% under the bench's load);
            // - a Cluster master's lane gets only its share of the
            //   requests, so its groups are small after one pass (read
            //   1.21-1.30 -> 1.36 x the multiplexed client, counter
            //   1.63-1.65 -> 1.74-1.81 x the pool, in the bench's
            //   alternating runs).
            // A standalone group with commands goes at once: there the
            // second pass measured no better.
            if lane.node.is_some() || lock(&lane.queue).commands.is_empty() {
                tokio::task::yield_now().await;
            }
            let (commands, syncs, syncing, writes) = {
                let mut queue = lock(&lane.queue);
                queue.gathering = false;
                let syncing = queue.commands.is_empty();
                queue.syncing |= syncing;
                // The next group likely is as large as this one.
                let room = Vec::with_capacity(queue.commands.len());
                (
                    std::mem::replace(&mut queue.commands, room),
                    std::mem::take(&mut queue.syncs),
                    syncing,
                    std::mem::take(&mut queue.writes),
                )
            };
            guard.phase = Phase::Sending { syncing };
            // Its writes are covered by one `WAIT` at its end.
            let wait = self.wait.filter(|_| writes);
            match (&self.lanes, &lane.node) {
                (Lanes::Cluster(cluster), Some(node)) => {
                    self.flush_cluster(cluster, node, commands, wait).await;
                }
                _ => self.flush(commands, syncs, wait).await,
            }
            let mut queue = lock(&lane.queue);
            queue.syncing &= !syncing;
            if !queue.gather() {
                guard.phase = Phase::Done;
                return;
            }
            guard.phase = Phase::Gathering;
        }
    }

    async fn flush(
        &self,
        commands: Vec<(Cmd, Reply)>,
        syncs: Vec<Reply>,
        wait: Option<WaitForReplicas>,
    ) {
        let mut pipe = redis::Pipeline::with_capacity(commands.len() + 1);
        if self.cache.is_some() {
            pipe.cmd("CLIENT").arg("ID");
        }
        let mut replies = Vec::with_capacity(commands.len());
        for (cmd, reply) in commands {
            pipe.add_command(cmd);
            replies.push(reply);
        }
        // The commands' own, after `CLIENT ID` and before `WAIT`.
        let first = usize::from(self.cache.is_some());
        if let Some(wait) = wait {
            pipe.add_command(wait.command());
        }
        // Tracking that was on before the group was sent is on for all of
        // it; tracking switched on meanwhile may have come after it.
        let before = self
            .cache
            .as_ref()
            .map(|cache| (cache.tracking(), cache.generation()));
        self.count_group(replies.len());
        let (mut values, acked) = match self.send_pipeline(&pipe).await {
            Ok(mut values) => {
                // The `WAIT`'s reply is the last.
                let acked = wait.and_then(|_| acked_of(values.pop()));
                (values.into_iter(), acked)
            }
            Err(error) => {
                for reply in replies.into_iter().chain(syncs) {
                    let _ = reply.send(Err(error.share()));
                }
                return;
            }
        };
        let tracked = match (&self.cache, before) {
            (Some(cache), Some((tracking, generation))) => {
                let id = match values.next() {
                    Some(redis::Value::Int(id)) => Some(id),
                    _ => None,
                };
                if !id.is_some_and(|id| cache.is_tracking(id)) {
                    // A new connection (the client reconnected): tracking
                    // goes on there before these requests go on.
                    // Boxed: rare, and larger than a group's own work.
                    let _ = Box::pin(self.start_tracking()).await;
                }
                // An unchanged generation means tracking stayed as it was.
                (id == Some(tracking) && tracking != 0 && cache.generation() == generation)
                    .then_some(generation)
            }
            _ => None,
        };
        let sent = Sent { tracked, acked };
        for (cmd, reply) in pipe.cmd_iter().skip(first).zip(replies) {
            let value = values
                .next()
                .map_or_else(|| Err(missing_reply()), redis::Value::extract_error);
            let _ = reply.send(Ok(Answer::new(value, sent, cmd)));
        }
        for reply in syncs {
            let _ = reply.send(Ok(Answer {
                value: Ok(redis::Value::Nil),
                sent,
                forgotten: None,
            }));
        }
    }

    /// A group of one Cluster master, on its connection. A command the
    /// node did not run because its slot moved goes again on its own.
    async fn flush_cluster(
        self: &Arc<Self>,
        cluster: &ClusterLanes,
        node: &Node,
        commands: Vec<(Cmd, Reply)>,
        wait: Option<WaitForReplicas>,
    ) {
        let mut pipe = redis::Pipeline::with_capacity(commands.len());
        let mut replies = Vec::with_capacity(commands.len());
        for (cmd, reply) in commands {
            pipe.add_command(cmd);
            replies.push(reply);
        }
        let started = Instant::now();
        let mut connection = match within(self.timeout, node.connection.get()).await {
            Ok(connection) => connection,
            Err(error) => {
                // Nothing was sent: each command goes on its own through
                // the Cluster client (which finds the master that took
                // over), in what is left of the timeout.
                self.refresh_soon(cluster);
                let left = self.timeout.saturating_sub(started.elapsed());
                let answers = futures_join(pipe.cmd_iter().map(|cmd| async {
                    if left.is_zero() {
                        Err(error.share())
                    } else {
                        self.alone_within(cmd, left).await
                    }
                }))
                .await;
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
                return;
            }
        };
        self.count_group(pipe.len());
        if let Some(wait) = wait {
            pipe.add_command(wait.command());
        }
        let sent = within(
            self.timeout,
            connection.req_packed_commands(&pipe, 0, pipe.len()),
        )
        .await;
        let (values, acked) = match sent {
            Ok(mut values) => {
                let acked = wait.and_then(|_| acked_of(values.pop()));
                (values, acked)
            }
            Err(error) => {
                // The node failed, or failed over, with the group sent:
                // its commands may have run, so they fail. A new
                // connection next time, and perhaps another master.
                node.connection.retire();
                self.refresh_soon(cluster);
                for reply in replies {
                    let _ = reply.send(Err(error.share()));
                }
                return;
            }
        };
        let mut values = values.into_iter();
        let mut moved = Vec::new();
        let sent = Sent {
            tracked: None,
            acked,
        };
        // `zip` stops at the replies: the `WAIT`, if any, is not resent.
        for (cmd, reply) in pipe.cmd_iter().zip(replies) {
            let value = values
                .next()
                .map_or_else(|| Err(missing_reply()), redis::Value::extract_error);
            match value {
                Err(error) if did_not_run(&error) => moved.push((cmd, reply)),
                value => {
                    let _ = reply.send(Ok(Answer::new(value, sent, cmd)));
                }
            }
        }
        if moved.is_empty() {
            return;
        }
        self.refresh_soon(cluster);
        let answers = futures_join(moved.iter().map(|(cmd, _)| self.alone(cmd))).await;
        for ((_, reply), answer) in moved.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }

    /// One command on its own, routed (and redirected) by the client.
    pub(crate) async fn alone(&self, cmd: &Cmd) -> Result<Answer, StoreError> {
        self.alone_within(cmd, self.timeout).await
    }

    /// [`alone`](Self::alone), within `limit`.
    async fn alone_within(&self, cmd: &Cmd, limit: Duration) -> Result<Answer, StoreError> {
        self.stats.alone.fetch_add(1, Ordering::Relaxed);
        let mut connection = self.connection.clone();
        let value = within(limit, async {
            let mut pause = Duration::from_millis(2);
            loop {
                match connection.req_packed_command(cmd).await {
                    // Its slot is moving and the client ran out of
                    // redirects: not run, so again, within the limit.
                    Err(error) if slot_moving(&error) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                    // A command the server refused: this command's answer.
                    Err(error) if !is_outage(&error) => return Ok(Err(error)),
                    sent => return sent.map(redis::Value::extract_error),
                }
            }
        })
        .await?;
        Ok(Answer::new(value, Sent::default(), cmd))
    }

    async fn send_pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<redis::Value>, StoreError> {
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        within(
            self.timeout,
            connection.req_packed_commands(pipe, 0, pipe.len()),
        )
        .await
    }

    /// Reads the Cluster's slot map again, in a task of its own, unless it
    /// is being read or was read within [`REFRESH_EVERY`].
    fn refresh_soon(self: &Arc<Self>, cluster: &ClusterLanes) {
        {
            let mut refresh = lock(&cluster.refresh);
            if refresh.running || refresh.last.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
                return;
            }
            refresh.running = true;
        }
        let groups = self.clone();
        tokio::spawn(async move {
            let _ = groups.refresh().await;
        });
    }

    /// Cluster: reads which master owns each slot (`CLUSTER SLOTS`); each
    /// master keeps its lane across readings.
    pub(crate) async fn refresh(&self) -> Result<(), StoreError> {
        let Lanes::Cluster(cluster) = &self.lanes else {
            return Ok(());
        };
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let read_map = self.alone(&cmd).await;
        *lock(&cluster.refresh) = Refresh {
            running: false,
            last: Some(Instant::now()),
        };
        let ranges = match read_map?.value.map_err(store_error)? {
            redis::Value::Array(ranges) => ranges,
            _ => return Ok(()),
        };
        let mut map = write(&cluster.map);
        let mut known: HashMap<(String, u16), Arc<Lane>> =
            std::mem::take(&mut map.lanes).into_iter().collect();
        let mut owners = vec![u16::MAX; SLOTS];
        let mut lanes: Vec<((String, u16), Arc<Lane>)> = Vec::new();
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end)), Some(master)) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            let Some(address) = address_of(master) else {
                continue;
            };
            let index = match lanes.iter().position(|(known, _)| *known == address) {
                Some(index) => index,
                None => {
                    let lane = known.remove(&address).unwrap_or_else(|| {
                        Arc::new(Lane {
                            queue: Mutex::default(),
                            node: Some(Node::new(&cluster.seed, &address, self.timeout)),
                        })
                    });
                    lanes.push((address, lane));
                    lanes.len() - 1
                }
            };
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            let (start, end) = ((*start).max(0), (*end).min(SLOTS as i64 - 1));
            for slot in start..=end {
                owners[slot as usize] = index;
            }
        }
        *map = SlotMap { owners, lanes };
        Ok(())
    }

    /// With a client cache: switches tracking on for the current
    /// connection (`CLIENT TRACKING ON NOLOOP`) and notes its client id.
    pub(crate) async fn start_tracking(&self) -> Result<(), StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("NOLOOP")
            .cmd("CLIENT")
            .arg("ID");
        let mut values = self.send_pipeline(&pipe).await?.into_iter();
        let on = values.next().unwrap_or(redis::Value::Nil);
        on.extract_error().map_err(store_error)?;
        match values.next() {
            Some(redis::Value::Int(id)) => {
                cache.tracking_on(id);
                Ok(())
            }
            _ => Err(store_error(redis::RedisError::from((
                redis::ErrorKind::Client,
                "CLIENT ID did not answer a number",
            )))),
        }
    }
}

impl ClusterLanes {
    /// The lane of the master that owns `slot`, if the map is read.
    fn lane(&self, slot: u16) -> Option<Arc<Lane>> {
        let map = read(&self.map);
        let index = *map.owners.get(usize::from(slot))?;
        map.lanes
            .get(usize::from(index))
            .map(|(_, lane)| lane.clone())
    }
}

fn missing_reply() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "a pipeline reply is missing"))
}

/// The node did not run the command: its slot is served elsewhere, or
/// the Cluster is failing over (`CLUSTERDOWN`), which the Cluster client
/// waits out and retries.
fn did_not_run(error: &redis::RedisError) -> bool {
    slot_moving(error)
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
        )
}

/// The node did not run the command because its slot is served elsewhere
/// (moved, or moving).
fn slot_moving(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        redis::ErrorKind::Server(
            redis::ServerErrorKind::Moved
                | redis::ServerErrorKind::Ask
                | redis::ServerErrorKind::TryAgain
        )
    )
}

/// A master's host and port in a `CLUSTER SLOTS` range (none if it does
/// not say: `?` or empty, an unknown endpoint).
fn address_of(node: &redis::Value) -> Option<(String, u16)> {
    let redis::Value::Array(fields) = node else {
        return None;
    };
    let host = match fields.first()? {
        redis::Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
        redis::Value::SimpleString(host) => host.clone(),
        _ => return None,
    };
    let redis::Value::Int(port) = fields.get(1)? else {
        return None;
    };
    if host.is_empty() || host == "?" {
        return None;
    }
    Some((host, u16::try_from(*port).ok()?))
}

impl Node {
    /// The master at `address`, reached with the seed's settings.
    fn new(seed: &redis::ConnectionInfo, (host, port): &(String, u16), timeout: Duration) -> Self {
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.clone(), *port),
        };
        Self {
            connection: OwnConnection::new(seed.clone().set_addr(addr), None, timeout),
        }
    }
}

/// CRC16 (XMODEM) of each byte value, as Cluster slots use it.
const CRC16: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// The Cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the
/// whole key without one, modulo 16384, as Redis computes it.
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
    let crc = tagged.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16[usize::from((crc >> 8) as u8 ^ byte)]
    });
    crc % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::{Route, Slot, SlotAddr};

    use super::*;

    #[test]
    fn slots_are_redis_slots() {
        // Redis Cluster's specification: "123456789" hashes to 0x31C3.
        assert_eq!(slot_of(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        for key in [
            &b"p:{abc}"[..],
            b"foo{}{bar}",
            b"foo{bar}{zap}",
            b"no tag",
            b"",
        ] {
            assert_eq!(
                Route::with_slot(Slot::new(slot_of(key)).unwrap(), SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "as the client computes it: {key:?}"
            );
        }
    }
}
