//! Background checkpoints of SQLite's write-ahead log, off the request path.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use super::Sqlite;
use crate::store::sql::{Core, backend::Dialect};

/// New log frames (pages) a background checkpoint aims to find: half of
/// SQLite's own `wal_autocheckpoint` default. Finding the newest frame of a
/// hot page walks all of its frames in the log, so a log started over more
/// often is cheaper to read (SQLite counter 3.20-3.23x raw with 1000,
/// 3.44-3.52x with 500, alternating runs).
const CHECKPOINT_FRAMES: u64 = 500;

/// Log frames past which a checkpoint also starts the log over; the passive
/// ones before it have copied all but the newest frames, so holding writers
/// back is brief.
const RESTART_FRAMES: u64 = 2 * CHECKPOINT_FRAMES;

/// Commits before the first checkpoint, and the bounds of the interval.
const FIRST_INTERVAL: u64 = 64;
const MIN_INTERVAL: u64 = 8;
const MAX_INTERVAL: u64 = 8192;

/// Copies the log into the database without blocking readers or writers;
/// one row: busy, frames in the log, frames copied.
const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// The same, but it also makes the next write start the log over, waiting
/// for readers and holding writers back while it runs. A log is only
/// started over by a write that begins after a complete checkpoint; under
/// steady load some write is always in flight while a background checkpoint
/// syncs, so without this the log would grow for ever.
const RESTART: &str = "PRAGMA wal_checkpoint(RESTART)";

/// When the next background checkpoint is due: `interval` commits after the
/// last, an interval that adapts so that each checkpoint finds about
/// [`CHECKPOINT_FRAMES`] new frames in the log.
#[derive(Debug)]
pub struct Checkpoints {
    /// The commit count at which the next one is due.
    due_at: AtomicU64,
    interval: AtomicU64,
    /// Frames in the log at the last checkpoint.
    frames: AtomicU64,
    running: AtomicBool,
}

impl Checkpoints {
    pub(crate) fn new() -> Self {
        Self {
            due_at: AtomicU64::new(FIRST_INTERVAL),
            interval: AtomicU64::new(FIRST_INTERVAL),
            frames: AtomicU64::new(0),
            running: AtomicBool::new(false),
        }
    }

    /// The interval that makes the next checkpoint find about
    /// [`CHECKPOINT_FRAMES`] new frames, given that the last `interval`
    /// commits added `new` frames.
    fn next_interval(interval: u64, new: u64) -> u64 {
        (interval * CHECKPOINT_FRAMES / new.max(1)).clamp(MIN_INTERVAL, MAX_INTERVAL)
    }
}

/// What one background checkpoint did.
struct Checkpointed {
    frames: u64,
    copied: i64,
    restarted: bool,
}

/// Runs a checkpoint statement: the frames in the log, and those copied.
async fn checkpoint(
    connection: &mut sqlx::SqliteConnection,
    statement: &'static str,
) -> Result<(u64, i64), sqlx::Error> {
    let rows = Sqlite::fetch_all(connection, statement.into(), Default::default()).await?;
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let frames = u64::try_from(Sqlite::decode_i64(row, 1)?).unwrap_or(0);
    Ok((frames, Sqlite::decode_i64(row, 2)?))
}

/// A passive checkpoint, and a restart if the log has grown past
/// [`RESTART_FRAMES`].
async fn run(core: &Core<Sqlite>) -> Result<Checkpointed, sqlx::Error> {
    let mut connection = core.pool.acquire().await?;
    let (frames, copied) = checkpoint(&mut connection, PASSIVE).await?;
    let restarted = frames >= RESTART_FRAMES;
    if restarted {
        checkpoint(&mut connection, RESTART).await?;
    }
    Ok(Checkpointed {
        frames,
        copied,
        restarted,
    })
}

/// After a commit: when a checkpoint is due and none runs, starts one in
/// its own task on a connection of its own.
pub(crate) fn checkpoint_if_due(core: &Arc<Core<Sqlite>>) {
    let Some(checkpoints) = &core.upkeep else {
        return;
    };
    let commits = core.commits.load(Ordering::Relaxed);
    if commits < checkpoints.due_at.load(Ordering::Relaxed)
        || checkpoints.running.swap(true, Ordering::AcqRel)
    {
        return;
    }
    // Until this one reports, the next waits the current interval.
    let interval = checkpoints.interval.load(Ordering::Relaxed);
    checkpoints
        .due_at
        .store(commits + interval, Ordering::Relaxed);
    let core = core.clone();
    tokio::spawn(async move {
        let checkpoints = core.upkeep.as_ref().expect("checked above");
        match run(&core).await {
            Ok(done) => {
                // Aim the next one at CHECKPOINT_FRAMES new frames (a log
                // that shrank was started over).
                let before = checkpoints.frames.swap(
                    if done.restarted { 0 } else { done.frames },
                    Ordering::Relaxed,
                );
                let new = if done.frames >= before {
                    done.frames - before
                } else {
                    done.frames
                };
                let next = Checkpoints::next_interval(interval, new);
                checkpoints.interval.store(next, Ordering::Relaxed);
                checkpoints.due_at.store(commits + next, Ordering::Relaxed);
                tracing::trace!(
                    frames = done.frames,
                    copied = done.copied,
                    restarted = done.restarted,
                    next,
                    "background checkpoint"
                );
            }
            Err(error) => tracing::warn!(%error, "background checkpoint failed; retrying later"),
        }
        checkpoints.running.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_aims_at_the_frame_target_within_bounds() {
        assert_eq!(Checkpoints::next_interval(64, 500), 64, "on target");
        assert_eq!(Checkpoints::next_interval(64, 1000), 32, "twice the frames");
        assert_eq!(Checkpoints::next_interval(64, 250), 128, "half the frames");
        assert_eq!(Checkpoints::next_interval(64, 0), MAX_INTERVAL, "no frames");
        assert_eq!(Checkpoints::next_interval(8, 100_000), MIN_INTERVAL);
    }
}
