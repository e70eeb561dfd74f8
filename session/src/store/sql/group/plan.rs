//! Turning a group of writes into statements, and reading each write's
//! result back from what the statements did.

use std::sync::Arc;

use sqlx::error::BoxDynError;

use super::write::{Cap, MergedRow, Param, Write, bind_all};
use crate::{
    schema::LIBRARY_COLUMNS,
    store::sql::{
        backend::{Arguments, Dialect},
        statements::{MergedShape, Statements, max_rows},
    },
    token::SessionId,
};

/// One statement of a group commit.
pub(crate) enum Step<'a, B: Dialect> {
    /// A bound statement; its result is the rows it affected.
    Statement { sql: Arc<str>, args: Arguments<B> },
    /// A merged UPDATE of these rows (one shape, no id twice), run by
    /// [`Dialect::merged_update`]; its result is the ids updated.
    Merged(Vec<&'a MergedRow>),
}

impl<B: Dialect> std::fmt::Debug for Step<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Statement { sql, .. } => f.debug_tuple("Statement").field(sql).finish(),
            Step::Merged(rows) => f.debug_tuple("Merged").field(&rows.len()).finish(),
        }
    }
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StepResult {
    /// Rows affected.
    Affected(u64),
    /// Ids updated.
    Ids(Vec<SessionId>),
}

/// How a write learns its result from its group's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Its step.
    step: usize,
    read_as: ReadAs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadAs {
    /// The step's affected rows.
    Affected,
    /// A merged UPDATE: whether it returned this id.
    Returned(SessionId),
    /// A row of a multi-row INSERT, which inserts all its rows or fails.
    Inserted,
}

/// The steps and the readings did not fit: a bug, reported as such rather
/// than read as "no row matched".
#[derive(Debug, thiserror::Error)]
#[error("group commit: write {write} expected {expected} from step {step}, which answered {found}")]
pub(crate) struct Mismatch {
    write: usize,
    step: usize,
    expected: &'static str,
    found: String,
}

impl Reading {
    /// The rows this write affected (0 or 1 for the merged and inserted ones).
    pub(crate) fn rows(&self, write: usize, results: &[StepResult]) -> Result<u64, Mismatch> {
        let mismatch = |expected, found: String| Mismatch {
            write,
            step: self.step,
            expected,
            found,
        };
        match (results.get(self.step), self.read_as) {
            (Some(StepResult::Affected(rows)), ReadAs::Affected) => Ok(*rows),
            (Some(StepResult::Affected(_)), ReadAs::Inserted) => Ok(1),
            (Some(StepResult::Ids(ids)), ReadAs::Returned(id)) => Ok(u64::from(ids.contains(&id))),
            (found, ReadAs::Affected | ReadAs::Inserted) => {
                Err(mismatch("a row count", format!("{found:?}")))
            }
            (found, ReadAs::Returned(_)) => Err(mismatch("ids", format!("{found:?}"))),
        }
    }
}

/// The statements of a group and how each write reads its result.
pub(crate) struct Plan<'a, B: Dialect> {
    pub(crate) steps: Vec<Step<'a, B>>,
    /// One per write, in the group's order.
    pub(crate) readings: Vec<Reading>,
    /// The caps' deletes: their step and cap, to report what they destroyed.
    pub(crate) caps: Vec<(usize, &'a Cap)>,
}

/// Writes placed in one statement, with their position in the group.
type Chunk<'a, W> = Vec<(usize, &'a W)>;

/// Merged rows by shape, each shape in chunks of one statement.
type MergedChunks<'a> = Vec<(MergedShape, Vec<Chunk<'a, MergedRow>>)>;

/// Writes not yet placed in a step: new rows in chunks that fit one
/// INSERT, merged rows by shape in chunks that fit one UPDATE.
struct Pending<'a> {
    inserts: Vec<Vec<(usize, &'a [Param])>>,
    merged: MergedChunks<'a>,
}

/// Turns a group of writes into statements: plain ones as they are, new
/// rows in multi-row INSERTs, merged UPDATEs one statement per shape —
/// split so that no id appears twice in one statement, which keeps each
/// row's compare-and-swap exact.
pub(crate) fn plan_group<'a, B: Dialect>(
    statements: &Statements<B>,
    writes: &'a [Write],
) -> Result<Plan<'a, B>, BoxDynError> {
    let mut plan = Plan {
        steps: Vec::new(),
        readings: Vec::with_capacity(writes.len()),
        caps: Vec::new(),
    };
    let mut pending = Pending {
        inserts: Vec::new(),
        merged: Vec::new(),
    };
    let insert_rows = max_rows(LIBRARY_COLUMNS.len() + statements.schema().columns.len());
    // The caps' locks come first, so that concurrent transactions setting
    // the same value take turns; their deletes come last.
    let caps = Caps::of(writes);
    for cap in &caps.by_value {
        if let Some((sql, params)) = B::cap_lock(statements, cap.field, &cap.key) {
            plan.push_step(sql, &params)?;
        }
    }
    for (position, write) in writes.iter().enumerate() {
        let write = match write {
            Write::Capped(inner, _) => &**inner,
            other => other,
        };
        let read_as = match write {
            Write::Statement { sql, params } => {
                plan.push_statement(sql.clone(), params)?;
                continue;
            }
            Write::Insert(params) => {
                pending.add_insert(position, params, insert_rows);
                ReadAs::Inserted
            }
            Write::Merged(row) => {
                pending.add_merged(position, row);
                ReadAs::Returned(row.id)
            }
            // Unwrapped above; a cap inside a cap is not built.
            Write::Capped(..) => return Err("a capped write inside a capped write".into()),
        };
        // Its step is known once the pending ones are placed.
        plan.readings.push(Reading {
            step: usize::MAX,
            read_as,
        });
    }
    plan.place_inserts(statements, pending.inserts)?;
    plan.place_merged(pending.merged);
    for cap in &caps.by_value {
        let keep: Vec<&SessionId> = caps.keep(cap);
        let (sql, params) = statements.cap(cap.field, cap.max, &cap.key, &keep);
        plan.caps.push((plan.steps.len(), *cap));
        plan.push_step(sql, &params)?;
    }
    Ok(plan)
}

impl<'a> Pending<'a> {
    fn add_insert(&mut self, position: usize, params: &'a [Param], per_statement: usize) {
        match self
            .inserts
            .last_mut()
            .filter(|chunk| chunk.len() < per_statement)
        {
            Some(chunk) => chunk.push((position, params)),
            None => self.inserts.push(vec![(position, params)]),
        }
    }

    fn add_merged(&mut self, position: usize, row: &'a MergedRow) {
        let shape = row.shape();
        let per_statement = max_rows(shape.params_per_row());
        let chunks = match self.merged.iter().position(|(other, _)| *other == shape) {
            Some(index) => &mut self.merged[index].1,
            None => {
                self.merged.push((shape, Vec::new()));
                &mut self.merged.last_mut().expect("just pushed").1
            }
        };
        let fits = |chunk: &&mut Vec<(usize, &MergedRow)>| {
            chunk.len() < per_statement && chunk.iter().all(|(_, other)| other.id != row.id)
        };
        match chunks.iter_mut().find(fits) {
            Some(chunk) => chunk.push((position, row)),
            None => chunks.push(vec![(position, row)]),
        }
    }
}

/// The caps of a group, one per field and value, with every session the
/// group writes with that value (all of them are kept).
struct Caps<'a> {
    by_value: Vec<&'a Cap>,
    all: Vec<&'a Cap>,
}

impl<'a> Caps<'a> {
    fn of(writes: &'a [Write]) -> Self {
        let all: Vec<&Cap> = writes
            .iter()
            .filter_map(|write| match write {
                Write::Capped(_, caps) => Some(caps.iter()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut by_value: Vec<&Cap> = Vec::new();
        for cap in &all {
            if !by_value
                .iter()
                .any(|other| other.field == cap.field && other.key == cap.key)
            {
                by_value.push(cap);
            }
        }
        Caps { by_value, all }
    }

    /// The sessions to keep under `cap`: those the group writes with its value.
    fn keep(&self, cap: &Cap) -> Vec<&'a SessionId> {
        self.all
            .iter()
            .filter(|other| other.field == cap.field && other.key == cap.key)
            .map(|other| &other.keep)
            .collect()
    }
}

impl<'a, B: Dialect> Plan<'a, B> {
    /// A step no write reads (a cap's lock or delete).
    fn push_step(&mut self, sql: Arc<str>, params: &[Param]) -> Result<(), BoxDynError> {
        let mut args = Arguments::<B>::default();
        bind_all::<B>(&mut args, params)?;
        self.steps.push(Step::Statement { sql, args });
        Ok(())
    }

    fn push_statement(&mut self, sql: Arc<str>, params: &[Param]) -> Result<(), BoxDynError> {
        let mut args = Arguments::<B>::default();
        bind_all::<B>(&mut args, params)?;
        self.readings.push(Reading {
            step: self.steps.len(),
            read_as: ReadAs::Affected,
        });
        self.steps.push(Step::Statement { sql, args });
        Ok(())
    }

    /// New rows cannot be padded: each chunk is split into pieces of bucket
    /// sizes, largest first (at most one statement per bit of its count).
    fn place_inserts(
        &mut self,
        statements: &Statements<B>,
        chunks: Vec<Vec<(usize, &[Param])>>,
    ) -> Result<(), BoxDynError> {
        for chunk in chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(1 << rest.len().ilog2());
                let mut args = Arguments::<B>::default();
                for (position, params) in piece {
                    self.readings[*position].step = self.steps.len();
                    bind_all::<B>(&mut args, params)?;
                }
                let sql = statements.insert(piece.len());
                self.steps.push(Step::Statement { sql, args });
                rest = tail;
            }
        }
        Ok(())
    }

    fn place_merged(&mut self, shapes: MergedChunks<'a>) {
        for chunk in shapes.into_iter().flat_map(|(_, chunks)| chunks) {
            for (position, _) in &chunk {
                self.readings[*position].step = self.steps.len();
            }
            self.steps.push(Step::Merged(
                chunk.into_iter().map(|(_, row)| row).collect(),
            ));
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{
        data::DirtyFields,
        schema::{ColumnDef, Schema},
        store::sql::Sqlite,
        value::{SqlType, Value},
    };

    const COLUMNS: [ColumnDef; 1] = [ColumnDef {
        name: "count",
        field: "count",
        sql_type: SqlType::I64,
        nullable: false,
        indexed: false,
    }];
    const SCHEMA: Schema = Schema {
        table: "visits",
        struct_name: "Visit",
        columns: &COLUMNS,
    };

    fn id(byte: u8) -> SessionId {
        SessionId::from_bytes([byte; 32])
    }

    fn merged(byte: u8, moves_expiry: bool) -> Write {
        let mut dirty = DirtyFields::NONE;
        dirty.insert(0);
        Write::Merged(MergedRow {
            dirty,
            id: id(byte),
            expires_at: moves_expiry.then(Utc::now),
            now: Utc::now(),
            expected_version: Some(1),
            values: vec![Value::I64(1)],
        })
    }

    fn insert(byte: u8) -> Write {
        Write::Insert(vec![
            Param::Id(id(byte)),
            Param::Time(Utc::now()),
            Param::I64(1),
            Param::Time(Utc::now()),
            Param::Value(Value::Bool(false)),
            Param::Value(Value::I64(0)),
        ])
    }

    fn steps_of(plan: &Plan<'_, Sqlite>) -> Vec<String> {
        plan.steps
            .iter()
            .map(|step| match step {
                Step::Statement { sql, .. } => sql.split(" (").next().unwrap_or("").to_owned(),
                Step::Merged(rows) => format!("merged x{}", rows.len()),
            })
            .collect()
    }

    #[test]
    fn new_rows_share_inserts_in_bucket_sized_pieces() {
        let statements = Statements::<Sqlite>::new(SCHEMA);
        let writes: Vec<Write> = (1..=5).map(insert).collect();
        let plan = plan_group(&statements, &writes).unwrap();
        assert_eq!(plan.steps.len(), 2, "5 rows: a piece of 4 and one of 1");
        let steps: Vec<usize> = plan.readings.iter().map(|reading| reading.step).collect();
        assert_eq!(steps, [0, 0, 0, 0, 1]);
    }

    #[test]
    fn merged_updates_group_by_shape_and_never_hold_an_id_twice() {
        let statements = Statements::<Sqlite>::new(SCHEMA);
        let writes = vec![
            merged(1, false),
            merged(2, false),
            merged(1, false), // the same session again: its own statement
            merged(3, true),  // another shape
        ];
        let plan = plan_group(&statements, &writes).unwrap();
        assert_eq!(steps_of(&plan), ["merged x2", "merged x1", "merged x1"]);
        let steps: Vec<usize> = plan.readings.iter().map(|reading| reading.step).collect();
        assert_eq!(steps, [0, 0, 1, 2]);
    }

    #[test]
    fn each_write_reads_its_own_result() {
        let statements = Statements::<Sqlite>::new(SCHEMA);
        let writes = vec![insert(9), merged(1, false), merged(2, false)];
        let plan = plan_group(&statements, &writes).unwrap();
        let results = [StepResult::Affected(1), StepResult::Ids(vec![id(2)])];
        let rows: Vec<u64> = plan
            .readings
            .iter()
            .enumerate()
            .map(|(write, reading)| reading.rows(write, &results).unwrap())
            .collect();
        assert_eq!(rows, [1, 0, 1], "session 1 lost its compare-and-swap");
    }

    #[test]
    fn results_that_do_not_fit_the_plan_are_an_error() {
        let statements = Statements::<Sqlite>::new(SCHEMA);
        let writes = vec![merged(1, false)];
        let plan = plan_group(&statements, &writes).unwrap();
        let error = plan.readings[0]
            .rows(0, &[StepResult::Affected(1)])
            .unwrap_err();
        assert!(error.to_string().contains("expected ids"), "{error}");
        assert!(plan.readings[0].rows(0, &[]).is_err(), "a missing step");
    }
}
