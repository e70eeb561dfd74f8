//! Knowing when the database is down: requests fail at once while it is,
//! one background probe asks until it answers, and service resumes by
//! itself.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::pool::PoolConnection;

use super::{Core, backend::Dialect};
use crate::error::StoreError;

/// How long a request waits for a connection (or for its turn in a group)
/// before the store calls the database unavailable, unless configured
/// otherwise. A healthy pool hands one over in microseconds to
/// milliseconds, even under load: two seconds is far past any normal wait,
/// and short enough that a user sees an error page instead of a hang.
/// sqlx's own default is 30 s.
pub(crate) const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the probe asks while the database is down: service resumes
/// within about this long of its return.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a request that failed fast is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether the database is known to be down.
#[derive(Debug, Default)]
pub(crate) struct Health {
    down: AtomicBool,
}

/// Whether `error` says the database cannot be reached (as opposed to a
/// statement it refused): the connection failed, timed out or broke, or
/// the server is shutting down.
pub(crate) fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08: connection exceptions; 57P: operator
        // intervention (PostgreSQL shutting down, or not yet accepting).
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

pub(crate) fn unavailable(source: Option<sqlx::Error>) -> StoreError {
    StoreError::Unavailable {
        retry_after: RETRY_AFTER,
        source: source.map(|error| Arc::new(error) as Arc<dyn std::error::Error + Send + Sync>),
    }
}

impl<B: Dialect> Core<B> {
    /// `Unavailable` at once, without touching the database, while it is
    /// known to be down.
    pub(crate) fn check_up(&self) -> Result<(), StoreError> {
        if self.health.down.load(Ordering::Acquire) {
            return Err(unavailable(None));
        }
        Ok(())
    }

    /// A pooled connection within the acquire timeout; `Unavailable` (and
    /// the database marked down) if none comes.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
    ) -> Result<PoolConnection<B::Database>, StoreError> {
        self.check_up()?;
        match tokio::time::timeout(self.options.acquire_timeout, self.pool.acquire()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => {
                // A handshake that broke off (the server went away while
                // the pool connected: sqlx reads a garbled first reply,
                // "unexpected response from SSLRequest") is an outage too,
                // unlike a protocol error on an established connection.
                let outage = is_outage(&error) || matches!(error, sqlx::Error::Protocol(_));
                Err(self.report(error, outage))
            }
            Err(_) => Err(self.failed(sqlx::Error::PoolTimedOut)),
        }
    }

    /// The error a request reports for `error`; an outage also marks the
    /// database down.
    pub(crate) fn failed(self: &Arc<Self>, error: sqlx::Error) -> StoreError {
        let outage = is_outage(&error);
        self.report(error, outage)
    }

    /// [`failed`](Self::failed), `outage` saying whether it is one.
    fn report(self: &Arc<Self>, error: sqlx::Error, outage: bool) -> StoreError {
        if !outage {
            return error.into();
        }
        if !self.health.down.swap(true, Ordering::AcqRel) {
            // Once per change of state, not once per request.
            tracing::error!(
                table = self.statements.schema().table,
                %error,
                "the session database is unavailable; requests fail at once until it answers again"
            );
            tokio::spawn(probe(Arc::downgrade(self), Instant::now()));
        }
        unavailable(Some(error))
    }
}

/// Asks the database every [`PROBE_INTERVAL`] until it answers, then marks
/// it up. One probe per store: requests never connect while it is down, so
/// a database that comes back meets no herd of retries.
async fn probe<B: Dialect>(core: Weak<Core<B>>, since: Instant) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(core) = core.upgrade() else {
            return;
        };
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut connection = core.pool.acquire().await?;
            B::execute(&mut connection, "SELECT 1".into(), Default::default()).await
        })
        .await;
        if let Ok(Ok(_)) = answered {
            core.health.down.store(false, Ordering::Release);
            tracing::info!(
                table = core.statements.schema().table,
                down_for = ?since.elapsed(),
                "the session database answers again; serving"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_told_from_refusals() {
        assert!(is_outage(&sqlx::Error::PoolTimedOut));
        assert!(is_outage(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_outage(&sqlx::Error::RowNotFound));
        assert!(!is_outage(&sqlx::Error::Protocol("bad".into())));
    }
}
