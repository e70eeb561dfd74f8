//! Grouped pipelines on a standalone server: the commands that concurrent
//! requests have ready at one moment go to Redis as one pipeline.
//!
//! A request queues its command and waits for its reply. A task takes the
//! queue and sends it as one group: it yields first, so that every request
//! the runtime has ready (and every socket that became readable) queues
//! its command before. Under load a group carries many requests' commands
//! for one write and one read on the socket, one timer and one reply
//! channel between the connection and us; alone, a request is sent at
//! once. Each command keeps its own reply: one that fails (a script error,
//! a wrong type) fails alone.
//!
//! With a client cache every group starts with `CLIENT ID`, so its replies
//! say which connection they ran on, and whether tracking was on there
//! before the group was sent (then all it read is tracked). A group is
//! sent after every request in it queued, so its reply is also a sync
//! point for them: every invalidation of a write Redis applied before it
//! has arrived by then. A request that only needs a sync point queues no
//! command.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::{Cmd, RedisResult, aio::ConnectionLike};
use tokio::sync::oneshot;

use super::{Connection, cache::ClientCache, store_error, unavailable, within};
use crate::{error::StoreError, sync::lock};

/// The reply to one queued command.
pub(crate) struct Answer {
    /// The command's own reply (`Nil` for a sync point): a server error
    /// here is this command's alone.
    pub(crate) value: RedisResult<redis::Value>,
    /// With a client cache: the tracking generation, if the group ran on
    /// the connection whose tracking was on before it was sent and still
    /// is, so that what it read is tracked (and what it wrote, by the
    /// scripts' final read).
    pub(crate) tracked: Option<u64>,
}

type Reply = oneshot::Sender<Result<Answer, StoreError>>;

#[derive(Default)]
struct Queue {
    commands: Vec<(Cmd, Reply)>,
    /// Requests that only wait for a sync point.
    syncs: Vec<Reply>,
    /// A task is about to take the queue.
    gathering: bool,
    /// A group of sync points only is out.
    syncing: bool,
}

impl Queue {
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

/// The group task ended without answering (the runtime shut down).
#[derive(Debug, thiserror::Error)]
#[error("the Redis group task ended before the reply came")]
struct Dropped;

/// Keeps the queue going if the task is dropped (its runtime shut down):
/// the requests of its group hear [`Dropped`], and so do those queued
/// after it that no other task is gathering.
struct Running<'a> {
    groups: &'a Groups,
    phase: Phase,
}

enum Phase {
    Gathering,
    Sending { syncing: bool },
    Done,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.groups.queue);
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

/// The groups of one connection, shared by the stores on it.
pub(crate) struct Groups {
    connection: Connection,
    timeout: Duration,
    cache: Option<Arc<ClientCache>>,
    queue: Mutex<Queue>,
}

impl Groups {
    pub(crate) fn new(
        connection: Connection,
        timeout: Duration,
        cache: Option<Arc<ClientCache>>,
    ) -> Self {
        Self {
            connection,
            timeout,
            cache,
            queue: Mutex::default(),
        }
    }

    /// The client cache on this connection, if any.
    pub(crate) fn cache(&self) -> Option<&Arc<ClientCache>> {
        self.cache.as_ref()
    }

    /// Sends `cmd` in the next group and answers its reply.
    pub(crate) async fn send(self: &Arc<Self>, cmd: Cmd) -> Result<Answer, StoreError> {
        self.queue(|queue, reply| queue.commands.push((cmd, reply)))
            .await
    }

    /// Waits for the next group's `CLIENT ID` (a sync point).
    pub(crate) async fn sync(self: &Arc<Self>) -> Result<Answer, StoreError> {
        self.queue(|queue, reply| queue.syncs.push(reply)).await
    }

    async fn queue(
        self: &Arc<Self>,
        push: impl FnOnce(&mut Queue, Reply),
    ) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        let spawn = {
            let mut queue = lock(&self.queue);
            push(&mut queue, reply);
            queue.gather()
        };
        if spawn {
            // Its own task: a request that goes away (its client hung up)
            // cannot take the others' replies with it.
            tokio::spawn(self.clone().run());
        }
        answer.await.unwrap_or_else(|_| Err(unavailable(Dropped)))
    }

    /// Sends a group, then the next one while there is one to send
    /// ([`Queue::gather`]).
    async fn run(self: Arc<Self>) {
        let mut guard = Running {
            groups: &self,
            phase: Phase::Gathering,
        };
        loop {
            // Every request ready now queues first.
            tokio::task::yield_now().await;
            let (commands, syncs, syncing) = {
                let mut queue = lock(&self.queue);
                queue.gathering = false;
                let syncing = queue.commands.is_empty();
                queue.syncing |= syncing;
                (
                    std::mem::take(&mut queue.commands),
                    std::mem::take(&mut queue.syncs),
                    syncing,
                )
            };
            guard.phase = Phase::Sending { syncing };
            self.flush(commands, syncs).await;
            let mut queue = lock(&self.queue);
            queue.syncing &= !syncing;
            if !queue.gather() {
                guard.phase = Phase::Done;
                return;
            }
            guard.phase = Phase::Gathering;
        }
    }

    async fn flush(&self, commands: Vec<(Cmd, Reply)>, syncs: Vec<Reply>) {
        let mut pipe = redis::pipe();
        if self.cache.is_some() {
            pipe.cmd("CLIENT").arg("ID");
        }
        let mut replies = Vec::with_capacity(commands.len());
        for (cmd, reply) in commands {
            pipe.add_command(cmd);
            replies.push(reply);
        }
        // Tracking that was on before the group was sent is on for all of
        // it; tracking switched on meanwhile may have come after it.
        let before = self
            .cache
            .as_ref()
            .map(|cache| (cache.tracking(), cache.generation()));
        let mut values = match self.send_pipeline(&pipe).await {
            Ok(values) => values.into_iter(),
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
                    let _ = self.start_tracking().await;
                }
                // An unchanged generation means tracking stayed as it was.
                (id == Some(tracking) && tracking != 0 && cache.generation() == generation)
                    .then_some(generation)
            }
            _ => None,
        };
        for reply in replies {
            let value = values.next().map_or_else(
                || {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "a pipeline reply is missing",
                    )))
                },
                redis::Value::extract_error,
            );
            let _ = reply.send(Ok(Answer { value, tracked }));
        }
        for reply in syncs {
            let _ = reply.send(Ok(Answer {
                value: Ok(redis::Value::Nil),
                tracked,
            }));
        }
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
