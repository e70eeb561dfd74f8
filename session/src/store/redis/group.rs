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

use super::{Connection, TimedOut, cache::ClientCache, store_error, unavailable};
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

struct Waiting {
    cmd: Option<Cmd>,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// How many of `waiting` carry a command (the others wait for a sync point).
    commands: usize,
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
        let go =
            !self.gathering && !self.waiting.is_empty() && (self.commands > 0 || !self.syncing);
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
/// the requests of its group hear [`Dropped`], and the next request
/// starts a task.
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
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        if matches!(phase, Phase::Done) {
            return;
        }
        let mut queue = lock(&self.groups.queue);
        // Those waiting hear `Dropped` rather than wait for a task that
        // may never come.
        queue.waiting.clear();
        queue.commands = 0;
        match phase {
            Phase::Gathering => queue.gathering = false,
            Phase::Sending { syncing } => {
                if syncing {
                    queue.syncing = false;
                }
            }
            Phase::Done => {}
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

    /// Sends `cmd` in the next group and answers its reply; `None` only
    /// waits for the next group's `CLIENT ID` (a sync point).
    pub(crate) async fn send(self: &Arc<Self>, cmd: Option<Cmd>) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        let spawn = {
            let mut queue = lock(&self.queue);
            queue.commands += usize::from(cmd.is_some());
            queue.waiting.push(Waiting { cmd, reply });
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
            let (waiting, syncing) = {
                let mut queue = lock(&self.queue);
                queue.gathering = false;
                let syncing = std::mem::take(&mut queue.commands) == 0;
                queue.syncing |= syncing;
                (std::mem::take(&mut queue.waiting), syncing)
            };
            guard.phase = Phase::Sending { syncing };
            self.flush(waiting).await;
            let mut queue = lock(&self.queue);
            if syncing {
                queue.syncing = false;
            }
            if !queue.gather() {
                guard.phase = Phase::Done;
                return;
            }
            guard.phase = Phase::Gathering;
        }
    }

    async fn flush(&self, waiting: Vec<Waiting>) {
        let mut pipe = redis::pipe();
        if self.cache.is_some() {
            pipe.cmd("CLIENT").arg("ID");
        }
        let mut replies = Vec::with_capacity(waiting.len());
        for Waiting { cmd, reply } in waiting {
            replies.push((cmd.is_some(), reply));
            if let Some(cmd) = cmd {
                pipe.add_command(cmd);
            }
        }
        // Tracking that was on before the group was sent is on for all of
        // it; tracking switched on meanwhile may have come after it.
        let before = self
            .cache
            .as_ref()
            .map(|cache| (cache.tracking(), cache.generation()));
        let sent = self.send_pipeline(&pipe).await;
        let mut values = match sent {
            Ok(values) => values.into_iter(),
            Err(error) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(error.share()));
                }
                return;
            }
        };
        let tracked = match &self.cache {
            Some(cache) => {
                let id = values.next().and_then(|id| match id {
                    redis::Value::Int(id) => Some(id),
                    _ => None,
                });
                let tracked = match (id, before) {
                    (Some(id), Some((tracking, generation)))
                        if tracking == id
                            && cache.is_tracking(id)
                            && cache.generation() == generation =>
                    {
                        Some(generation)
                    }
                    _ => None,
                };
                if !id.is_some_and(|id| cache.is_tracking(id)) {
                    // A new connection (the client reconnected): tracking
                    // goes on there before these requests go on.
                    let _ = self.start_tracking().await;
                }
                tracked
            }
            None => None,
        };
        for (has_cmd, reply) in replies {
            let value = if has_cmd {
                values.next().map_or_else(
                    || {
                        Err(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "a pipeline reply is missing",
                        )))
                    },
                    redis::Value::extract_error,
                )
            } else {
                Ok(redis::Value::Nil)
            };
            let _ = reply.send(Ok(Answer { value, tracked }));
        }
    }

    async fn send_pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<redis::Value>, StoreError> {
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(
            self.timeout,
            connection.req_packed_commands(pipe, 0, pipe.len()),
        )
        .await
        {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(error)) => Err(store_error(error)),
            Err(_) => Err(unavailable(TimedOut(self.timeout))),
        }
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
        let values = self.send_pipeline(&pipe).await?;
        match values.as_slice() {
            [on, redis::Value::Int(id)] => {
                on.clone().extract_error().map_err(store_error)?;
                cache.tracking_on(*id);
                Ok(())
            }
            [on, ..] => Err(store_error(
                on.clone().extract_error().err().unwrap_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "CLIENT ID did not answer a number",
                    ))
                }),
            )),
            [] => Err(store_error(redis::RedisError::from((
                redis::ErrorKind::Client,
                "CLIENT TRACKING got no reply",
            )))),
        }
    }
}
