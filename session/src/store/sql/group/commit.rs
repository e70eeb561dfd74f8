//! Committing a group of writes: one transaction, each waiter told its own
//! result; a refused group runs again write by write.

use std::sync::{Arc, atomic::Ordering};

use super::{
    Held, connection,
    plan::{Mismatch, Step, StepResult, plan_group},
    write::Write,
};
use crate::{
    error::StoreError,
    store::sql::{
        Core,
        backend::{Connection, Dialect},
        statements::Statements,
    },
};

/// Where a write's result goes: the rows it affected.
pub(crate) type Done = tokio::sync::oneshot::Sender<Result<u64, StoreError>>;

/// A write waiting for a group commit.
pub(crate) struct Queued {
    pub(crate) write: Write,
    pub(crate) done: Done,
    /// Its number, to take it back if it waited too long.
    pub(crate) ticket: u64,
}

/// Why a group's statements did not commit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupError {
    /// The database refused a statement; nothing was committed.
    #[error("{0}")]
    Refused(sqlx::Error),
    /// Binding failed, or the connection did (the commit may be unknown).
    #[error("{0}")]
    Failed(sqlx::Error),
    /// The plan and the results did not fit.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    /// No connection (already a request's error: the database is down).
    #[error(transparent)]
    Store(StoreError),
}

impl GroupError {
    /// The error the group's requests report; an outage marks the database down.
    pub(crate) fn into_store_error<B: Dialect>(self, core: &Arc<Core<B>>) -> StoreError {
        match self {
            GroupError::Refused(error) | GroupError::Failed(error) => core.failed(error),
            GroupError::Mismatch(mismatch) => sqlx::Error::Protocol(mismatch.to_string()).into(),
            GroupError::Store(error) => error,
        }
    }
}

/// Commits one group of writes and tells each its result.
pub(crate) async fn commit_group<B: Dialect>(
    core: &Arc<Core<B>>,
    held: &mut Held<B>,
    group: Vec<Queued>,
) {
    core.commits.fetch_add(1, Ordering::Relaxed);
    let (writes, waiting): (Vec<Write>, Vec<Done>) = group
        .into_iter()
        .map(|queued| (queued.write, queued.done))
        .unzip();
    match run_group(core, held, &writes).await {
        Ok(results) => {
            for (done, rows) in waiting.into_iter().zip(results) {
                let _ = done.send(Ok(rows));
            }
        }
        // The database refused a statement and the group was rolled back
        // as a whole: one request's bad value (a NUL byte PostgreSQL
        // rejects, say) must not fail the others. Each write runs again
        // alone, and only the culprit hears of the error. Any other
        // failure (a lost connection) may have left the commit unknown:
        // nothing is run twice.
        Err(GroupError::Refused(_)) if writes.len() > 1 => {
            for (write, done) in writes.iter().zip(waiting) {
                let result = run_group(core, held, std::slice::from_ref(write))
                    .await
                    .map(|rows| rows.first().copied().unwrap_or(0))
                    .map_err(|error| error.into_store_error(core));
                let _ = done.send(result);
            }
        }
        // Every waiter gets the same error, its source kept.
        Err(error) => {
            let error = error.into_store_error(core);
            for done in waiting {
                let _ = done.send(Err(error.share()));
            }
        }
    }
}

/// Runs `writes` as one group on the held connection: the rows each affected.
pub(crate) async fn run_group<B: Dialect>(
    core: &Arc<Core<B>>,
    held: &mut Held<B>,
    writes: &[Write],
) -> Result<Vec<u64>, GroupError> {
    let mut attempt = 1;
    let (readings, caps, results) = loop {
        let plan = plan_group::<B>(&core.statements, writes)
            .map_err(|error| GroupError::Failed(sqlx::Error::Encode(error)))?;
        let connection = connection::<B>(core, held)
            .await
            .map_err(GroupError::Store)?;
        match execute_steps::<B>(connection, &core.statements, plan.steps).await {
            Ok(results) => break (plan.readings, plan.caps, results),
            // A deadlock or serialization failure rolled the whole
            // transaction back: running it again is safe, and what the
            // database asks for.
            Err(error) if attempt < MAX_GROUP_ATTEMPTS && must_retry(&error) => {
                attempt += 1;
            }
            Err(error) => {
                // Rolled back as a whole; a connection in an unknown state
                // is not kept.
                *held = None;
                return Err(match error {
                    sqlx::Error::Database(_) => GroupError::Refused(error),
                    error => GroupError::Failed(error),
                });
            }
        }
    };
    B::after_commit(core);
    report_caps(core, &caps, &results);
    let rows = readings
        .iter()
        .enumerate()
        .map(|(write, reading)| reading.rows(write, &results))
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Reports the sessions each cap destroyed.
fn report_caps<B: Dialect>(
    core: &Core<B>,
    caps: &[(usize, &super::write::Cap)],
    results: &[StepResult],
) {
    let Some(events) = &core.options.events else {
        return;
    };
    for (step, cap) in caps {
        if let Some(StepResult::Affected(count @ 1..)) = results.get(*step) {
            let schema = core.statements.schema();
            events.emit(crate::events::SessionEvent {
                kind: crate::events::EventKind::Capped {
                    count: *count,
                    max: cap.max,
                },
                session: schema.struct_name,
                id: Some(cap.keep),
                indexed: vec![(schema.column(cap.field).name, cap.key.clone())],
                at: chrono::Utc::now(),
            });
        }
    }
}

/// How many times a group is run when the database rolls it back for a
/// deadlock or a serialization failure.
const MAX_GROUP_ATTEMPTS: u32 = 3;

/// Whether the database rolled the transaction back and asks to run it
/// again: SQLSTATE 40001 (serialization failure; MySQL's deadlock) or
/// 40P01 (PostgreSQL's deadlock).
fn must_retry(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(error)
        if error.code().is_some_and(|code| code == "40001" || code == "40P01"))
}

/// Runs the steps in one transaction (a single step runs on its own),
/// returning what each did; any failure rolls all of them back.
async fn execute_steps<B: Dialect>(
    connection: &mut Connection<B>,
    statements: &Statements<B>,
    mut steps: Vec<Step<'_, B>>,
) -> Result<Vec<StepResult>, sqlx::Error> {
    if steps.len() == 1 {
        let step = steps.pop().expect("one step");
        return Ok(vec![
            run_step::<B>(connection, statements, step, true).await?,
        ]);
    }
    let mut transaction = sqlx::Connection::begin(connection).await?;
    let mut results = Vec::with_capacity(steps.len());
    for step in steps {
        results.push(run_step::<B>(&mut transaction, statements, step, false).await?);
    }
    transaction.commit().await?;
    Ok(results)
}

async fn run_step<B: Dialect>(
    connection: &mut Connection<B>,
    statements: &Statements<B>,
    step: Step<'_, B>,
    alone: bool,
) -> Result<StepResult, sqlx::Error> {
    match step {
        Step::Statement { sql, args } => Ok(StepResult::Affected(
            B::execute(connection, sql, args).await?,
        )),
        Step::Merged(rows) => Ok(StepResult::Ids(
            B::merged_update(connection, statements, &rows, alone).await?,
        )),
    }
}
