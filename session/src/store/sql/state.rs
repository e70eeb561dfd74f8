//! The state every clone of a store shares, whatever its struct.

use std::sync::{Mutex, atomic::AtomicU64};

use sqlx::Pool;

use super::{backend::Dialect, group::WriteQueue, options::StoreOptions, statements::Statements};

impl<B: Dialect> std::fmt::Debug for Core<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("statements", &self.statements)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What every clone of a store shares, whatever its struct.
pub struct Core<B: Dialect> {
    pub(crate) pool: Pool<B::Database>,
    pub(crate) statements: Statements<B>,
    pub(crate) options: StoreOptions,
    /// Writes waiting for the next group commit, and whether a task commits.
    pub(crate) writes: Mutex<WriteQueue>,
    /// Writes and commits so far ([`WriteStats`](super::WriteStats)).
    pub(crate) written: AtomicU64,
    pub(crate) commits: AtomicU64,
    /// Whether the database is known to be down.
    pub(crate) health: super::health::Health,
    /// Numbers queued writes, to take one back that waited too long.
    pub(crate) tickets: std::sync::atomic::AtomicU64,
    /// The dialect's own after-commit state (SQLite: its checkpoints).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) upkeep: B::Upkeep,
}
