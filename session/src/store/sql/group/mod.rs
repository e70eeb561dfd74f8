//! Group commit and grouped loads: concurrent requests share round trips.
//!
//! Requests queue their loads and writes; a group task serves the queues a
//! group at a time until they are empty. While a group runs, the next one
//! gathers: under load, groups grow by themselves; alone, a request is
//! served at once. Each write keeps its own expiry check and
//! compare-and-swap, and hears its result only after its commit.

mod commit;
mod load;
mod plan;
mod write;

use std::sync::atomic::Ordering;

use std::sync::Arc;

use sqlx::{Pool, pool::PoolConnection};
use tokio::sync::oneshot;

pub(crate) use self::{
    commit::{Queued, run_group},
    load::Loaded,
    write::{Cap, MergedRow, Param, Write, insert_params},
};
use super::{Core, SqlStore, backend::Connection, backend::Dialect};
use crate::{data::SessionData, error::StoreError, sync::lock, token::SessionId};

/// Loads waiting to share one `SELECT … WHERE id IN (…)`, and whether a
/// task serves them.
pub(crate) struct LoadQueue<T> {
    pub(crate) waiting: Vec<(SessionId, Loaded<T>)>,
    pub(crate) loading: bool,
}

impl<T> Default for LoadQueue<T> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            loading: false,
        }
    }
}

/// Writes waiting for the next group commit, and whether a task commits them.
#[derive(Default)]
pub(crate) struct WriteQueue {
    pub(crate) waiting: Vec<Queued>,
    pub(crate) committing: bool,
}

/// Which group tasks a dialect runs ([`Dialect::lanes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lanes {
    /// Loads and writes each have their own task, side by side on two
    /// connections.
    Separate,
    /// One task takes turns between them on one connection.
    Shared,
}

/// Which queues one group task serves.
#[derive(Clone, Copy, Debug)]
enum Lane {
    Loads,
    Writes,
    Both,
}

impl Lane {
    fn of_loads<B: Dialect>() -> Self {
        match B::lanes() {
            Lanes::Separate => Lane::Loads,
            Lanes::Shared => Lane::Both,
        }
    }

    fn of_writes<B: Dialect>() -> Self {
        match B::lanes() {
            Lanes::Separate => Lane::Writes,
            Lanes::Shared => Lane::Both,
        }
    }
}

/// A pooled connection held while a group task has work, so that
/// consecutive groups skip the pool; dropped after a failure.
pub(crate) type Held<B> = Option<PoolConnection<<B as Dialect>::Database>>;

/// The held connection, acquired first if none is held.
pub(crate) async fn connection<'a, B: Dialect>(
    core: &Arc<Core<B>>,
    held: &'a mut Held<B>,
) -> Result<&'a mut Connection<B>, StoreError> {
    if held.is_none() {
        *held = Some(core.acquire().await?);
    }
    Ok(&mut **held.as_mut().expect("just acquired"))
}

/// Gives the held connection back between groups when the pool has none
/// left, so that a pool of one (or a busy pool) still serves the other
/// statements (deletes, purges, the app's own queries) under constant load.
fn release_if_contended<B: Dialect>(pool: &Pool<B::Database>, held: &mut Held<B>) {
    if held.is_some() && pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections()
    {
        *held = None;
    }
}

/// Takes the next group from a queue: everything waiting, up to
/// [`MAX_GROUP`](super::statements::MAX_GROUP).
fn take_group<W>(waiting: &mut Vec<W>) -> Vec<W> {
    let take = waiting.len().min(super::statements::MAX_GROUP);
    waiting.drain(..take).collect()
}

/// What a request hears when the group task that held its work is gone
/// (it panicked): an error, never a wait for ever.
fn task_gone() -> StoreError {
    sqlx::Error::WorkerCrashed.into()
}

/// Keeps a lane from wedging when its task ends without finishing (a panic
/// in it): work still queued gets a new task, else the lane is marked idle
/// so that the next request starts one. The groups the task had taken fail:
/// their waiters' channels close, and they hear [`task_gone`].
struct LaneGuard<B: Dialect, T: SessionData> {
    store: SqlStore<B, T>,
    lane: Lane,
    finished: bool,
}

impl<B: Dialect, T: SessionData> Drop for LaneGuard<B, T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        tracing::error!(
            session = T::SCHEMA.struct_name,
            lane = ?self.lane,
            "a group task ended early; its requests failed and the lane starts again"
        );
        if self.store.release_unless_waiting(self.lane) {
            tokio::spawn(self.store.clone().serve(self.lane));
        }
    }
}

impl<B: Dialect, T: SessionData> SqlStore<B, T> {
    /// Runs a write, grouped with the writes of concurrent requests unless
    /// group commit is off: the rows it affected.
    pub(crate) async fn write(&self, write: Write) -> Result<u64, StoreError> {
        self.core.check_up()?;
        self.core.written.fetch_add(1, Ordering::Relaxed);
        if !self.core.options.group_commit {
            self.core.commits.fetch_add(1, Ordering::Relaxed);
            // A group of one on a pooled connection, given back after it.
            // Boxed: the driver's futures are large, and every write's
            // future would otherwise carry them.
            let rows = Box::pin(run_group(
                &self.core,
                &mut None,
                std::slice::from_ref(&write),
            ))
            .await
            .map_err(|error| error.into_store_error(&self.core))?;
            return Ok(rows.first().copied().unwrap_or(0));
        }
        let (done, mut result) = oneshot::channel();
        let ticket = self.core.tickets.fetch_add(1, Ordering::Relaxed);
        let start = {
            let mut queue = lock(&self.core.writes);
            queue.waiting.push(Queued {
                write,
                done,
                ticket,
            });
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            // Its own task: a request that is cancelled (client gone) must
            // not take the commit of everybody else's writes with it.
            tokio::spawn(self.clone().serve(Lane::of_writes::<B>()));
        }
        if let Ok(outcome) =
            tokio::time::timeout(self.core.options.acquire_timeout, &mut result).await
        {
            return outcome.map_err(|_| task_gone())?;
        }
        // No turn in time: the group before it is stuck on the database. A
        // write still queued is taken back, so it can never be applied
        // after its request was told it failed.
        let taken_back = {
            let mut queue = lock(&self.core.writes);
            let before = queue.waiting.len();
            queue.waiting.retain(|queued| queued.ticket != ticket);
            queue.waiting.len() < before
        };
        if taken_back {
            return Err(self.core.failed(sqlx::Error::PoolTimedOut));
        }
        // Already in a group: its outcome is coming, whatever it is.
        result.await.map_err(|_| task_gone())?
    }

    /// Queues a load for the next grouped SELECT and waits for it.
    pub(crate) async fn queued_load(
        &self,
        id: &SessionId,
    ) -> Result<Option<crate::store::Record<T>>, StoreError> {
        self.core.check_up()?;
        let (done, result) = oneshot::channel();
        let lane = Lane::of_loads::<B>();
        let start = {
            let mut loads = lock(&self.loads);
            loads.waiting.push((*id, done));
            match lane {
                Lane::Loads => !std::mem::replace(&mut loads.loading, true),
                Lane::Writes | Lane::Both => {
                    !std::mem::replace(&mut lock(&self.core.writes).committing, true)
                }
            }
        };
        if start {
            tokio::spawn(self.clone().serve(lane));
        }
        // A read abandoned changes nothing: no need to take it back.
        match tokio::time::timeout(self.core.options.acquire_timeout, result).await {
            Ok(outcome) => outcome.map_err(|_| task_gone())?,
            Err(_) => Err(self.core.failed(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Serves the waiting work of `lane` a group at a time until none is
    /// left: each turn commits the writes waiting, then reads the loads
    /// waiting.
    async fn serve(self, lane: Lane) {
        let mut guard = LaneGuard {
            store: self.clone(),
            lane,
            finished: false,
        };
        let mut held = None;
        loop {
            let Some((writes, loads)) = self.next_groups(lane) else {
                guard.finished = true;
                return;
            };
            if !writes.is_empty() {
                commit::commit_group(&self.core, &mut held, writes).await;
            }
            if !loads.is_empty() {
                self.load_group(&mut held, loads).await;
            }
            release_if_contended::<B>(&self.core.pool, &mut held);
        }
    }

    /// Marks `lane` idle unless work is waiting, under the queues' locks
    /// (so no request can queue in between and wait unserved); `true`: work
    /// is waiting and the lane stays busy, for a new task to serve.
    fn release_unless_waiting(&self, lane: Lane) -> bool {
        let mut loads = lock(&self.loads);
        let mut writes = lock(&self.core.writes);
        let waiting = match lane {
            Lane::Loads => !loads.waiting.is_empty(),
            Lane::Writes => !writes.waiting.is_empty(),
            Lane::Both => !loads.waiting.is_empty() || !writes.waiting.is_empty(),
        };
        if !waiting {
            match lane {
                Lane::Loads => loads.loading = false,
                Lane::Writes | Lane::Both => writes.committing = false,
            }
        }
        waiting
    }

    /// The next groups of `lane`'s queues; `None` (and the lane marked
    /// idle, under the same locks) when both are empty.
    #[allow(clippy::type_complexity)]
    fn next_groups(&self, lane: Lane) -> Option<(Vec<Queued>, Vec<(SessionId, Loaded<T>)>)> {
        // Lock order, here and in `queued_load`: loads, then writes.
        let mut loads = lock(&self.loads);
        let mut writes = lock(&self.core.writes);
        let write_group = match lane {
            Lane::Loads => Vec::new(),
            Lane::Writes | Lane::Both => take_group(&mut writes.waiting),
        };
        let load_group = match lane {
            Lane::Writes => Vec::new(),
            Lane::Loads | Lane::Both => take_group(&mut loads.waiting),
        };
        if write_group.is_empty() && load_group.is_empty() {
            match lane {
                Lane::Loads => loads.loading = false,
                Lane::Writes | Lane::Both => writes.committing = false,
            }
            return None;
        }
        Some((write_group, load_group))
    }
}
