//! Statement text: built once per struct, or once per shape, and cached.
//!
//! Every statement with a variable number of rows comes in [`bucket`]
//! sizes, so that each connection prepares a handful of each kind and
//! sqlx's per-connection statement cache never churns.

use std::{collections::HashMap, fmt::Write as _, marker::PhantomData, sync::Arc, sync::RwLock};

use sqlx::error::BoxDynError;

use super::{
    backend::{Arguments, Dialect, Row},
    group::MergedRow,
};
use crate::{
    data::DirtyFields,
    schema::{LIBRARY_COLUMNS, Schema},
    store::Update,
    sync::{read, write},
    token::SessionId,
    value::{SqlType, Value},
};

/// Most rows one multi-row statement (and one group commit) takes. A power
/// of two, like every [`bucket`].
pub(crate) const MAX_GROUP: usize = 256;

/// Library columns a load reads before the fields: version, created_at,
/// expires_at, remember (in that order; see [`Statements::new`]).
pub(crate) const LOADED_LIBRARY_COLUMNS: usize = 4;

/// Parameters a merged UPDATE row binds besides its field values and its
/// optional new expiry: id, now, expected version.
const MERGED_ROW_FIXED_PARAMS: usize = 3;

/// Parameters one statement may bind, under every backend's limit (SQLite:
/// 32766, PostgreSQL: 65535).
const MAX_PARAMS: usize = 30_000;

/// The row count a multi-row statement of `rows` rows is padded to: the
/// next power of two. A connection then prepares at most nine of each kind
/// of statement instead of one per group size. sqlx keeps 100 prepared
/// statements per connection, and an evicted one costs a round trip to
/// close it; on MySQL and MariaDB that close is followed by a 40 ms delayed
/// ACK, because sqlx 0.9 leaves Nagle's algorithm on (sqlx issue 4335).
pub(crate) fn bucket(rows: usize) -> usize {
    rows.next_power_of_two().min(MAX_GROUP)
}

/// `items`, then `filler` repeated until their count reaches its [`bucket`].
pub(crate) fn padded<'a, T: 'a>(
    items: impl ExactSizeIterator<Item = &'a T>,
    filler: &'a T,
) -> impl Iterator<Item = &'a T> {
    let padding = bucket(items.len()) - items.len();
    items.chain(std::iter::repeat_n(filler, padding))
}

/// Rows per multi-row statement of `params_per_row` parameters each, under
/// [`MAX_PARAMS`]; a power of two, like every bucket.
pub(crate) fn max_rows(params_per_row: usize) -> usize {
    let rows = (MAX_PARAMS / params_per_row.max(1)).clamp(1, MAX_GROUP);
    1 << rows.ilog2()
}

/// The id of the rows that pad a merged UPDATE to its bucket: all zeros,
/// the SHA-256 of no token anyone can find, so it matches no row.
pub(crate) const PADDING_ID: SessionId = SessionId::from_bytes([0; 32]);

/// What a lone UPDATE statement's text depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UpdateShape {
    pub(crate) dirty: DirtyFields,
    pub(crate) moves_expiry: bool,
    pub(crate) compare_and_swap: bool,
    pub(crate) renews: bool,
    pub(crate) sets_remember: bool,
}

impl UpdateShape {
    pub(crate) fn of(update: &Update) -> Self {
        Self {
            dirty: update.dirty,
            moves_expiry: update.expires_at.is_some(),
            compare_and_swap: update.expected_version.is_some(),
            renews: update.new_id.is_some(),
            sets_remember: update.remember.is_some(),
        }
    }

    /// Whether the UPDATE only moves the expiry (and leaves `version`).
    fn is_touch(self) -> bool {
        self.dirty.is_empty() && !self.renews && !self.sets_remember
    }
}

/// What a merged UPDATE's text depends on, besides its row count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MergedShape {
    pub(crate) dirty: DirtyFields,
    pub(crate) moves_expiry: bool,
}

impl MergedShape {
    /// Parameters one row of this shape binds.
    pub(crate) fn params_per_row(self) -> usize {
        MERGED_ROW_FIXED_PARAMS + usize::from(self.moves_expiry) + self.dirty.iter().count()
    }
}

/// The statements whose text varies, by what they vary with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StatementKey {
    /// `SELECT … WHERE id IN (…)` of this many ids.
    LoadMany(usize),
    /// A multi-row INSERT of this many rows.
    Insert(usize),
    /// A lone UPDATE.
    Update(UpdateShape),
    /// A merged UPDATE of this many rows.
    Merged(MergedShape, usize),
    /// The live sessions whose field holds a key.
    FindBy(usize),
    /// Deleting the sessions whose field holds a key, sparing one id or not.
    DeleteBy(usize, bool),
    /// Deleting the sessions beyond a cap of `max`, keeping a bucket of ids.
    Cap(usize, u32, usize),
    /// A dialect's own statement of this kind and row count (MySQL's locked
    /// update); the kind is the dialect's to number.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    Dialect(u8, Option<MergedShape>, usize),
}

/// Adds the numbered parameter placeholders as a statement is built.
pub(crate) struct Placeholders<B> {
    next: usize,
    _backend: PhantomData<B>,
}

impl<B: Dialect> Placeholders<B> {
    pub(crate) fn new() -> Self {
        Self {
            next: 1,
            _backend: PhantomData,
        }
    }

    /// Appends the next placeholder.
    pub(crate) fn push(&mut self, sql: &mut String, ty: Option<SqlType>) {
        B::push_placeholder(sql, self.next, ty);
        self.next += 1;
    }

    /// Appends `count` placeholders separated by commas.
    pub(crate) fn push_list(&mut self, sql: &mut String, count: usize) {
        for position in 0..count {
            if position > 0 {
                sql.push_str(", ");
            }
            self.push(sql, None);
        }
    }
}

/// `name` quoted for the dialect.
pub(crate) fn quote<B: Dialect>(name: &str) -> String {
    format!("{q}{name}{q}", q = B::QUOTE)
}

/// `items` joined by `", "`.
pub(crate) fn comma_list(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// A session id column of a row.
pub(crate) fn decode_id<B: Dialect>(row: &Row<B>, index: usize) -> Result<SessionId, sqlx::Error> {
    match B::decode(row, index, SqlType::Bytes)? {
        Value::Bytes(bytes) => <[u8; 32]>::try_from(bytes.as_ref())
            .map(SessionId::from_bytes)
            .map_err(|_| sqlx::Error::ColumnDecode {
                index: index.to_string(),
                source: "a session id is 32 bytes".into(),
            }),
        other => Err(sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!("a session id is 32 bytes, found {other:?}").into(),
        }),
    }
}

/// One struct's statements on one dialect.
pub struct Statements<B> {
    schema: Schema,
    /// `SELECT <library columns>, <fields> FROM t WHERE id = ? AND expires_at > ?`.
    pub(crate) load: Arc<str>,
    /// `SELECT <the load columns>, id FROM t`: the start of a grouped load.
    load_many: String,
    pub(crate) delete: Arc<str>,
    pub(crate) purge: Arc<str>,
    /// The statements whose text varies: a handful per app, each built once
    /// and then prepared once per connection.
    varying: RwLock<HashMap<StatementKey, Arc<str>>>,
    _backend: PhantomData<B>,
}

impl<B> std::fmt::Debug for Statements<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements")
            .field("table", &self.schema.table)
            .field("cached", &read(&self.varying).len())
            .finish()
    }
}

impl<B: Dialect> Statements<B> {
    pub(crate) fn new(schema: Schema) -> Self {
        let table = quote::<B>(schema.table);
        let mut columns = format!(
            "SELECT {}, {}, {}, {}",
            quote::<B>("version"),
            quote::<B>("created_at"),
            quote::<B>("expires_at"),
            quote::<B>("remember")
        );
        for column in schema.columns {
            columns.push_str(", ");
            B::push_select(&mut columns, &quote::<B>(column.name), column.sql_type);
        }
        let load_many = format!("{columns}, {} FROM {table}", quote::<B>("id"));

        let mut load = columns;
        let mut placeholders = Placeholders::<B>::new();
        let _ = write!(load, " FROM {table} WHERE {} = ", quote::<B>("id"));
        placeholders.push(&mut load, None);
        let _ = write!(load, " AND {} > ", quote::<B>("expires_at"));
        placeholders.push(&mut load, None);

        let mut delete = format!("DELETE FROM {table} WHERE {} = ", quote::<B>("id"));
        Placeholders::<B>::new().push(&mut delete, None);

        Self {
            schema,
            load: load.into(),
            load_many,
            delete: delete.into(),
            purge: B::purge_statement(&table).into(),
            varying: RwLock::default(),
            _backend: PhantomData,
        }
    }

    pub(crate) fn schema(&self) -> Schema {
        self.schema
    }

    /// The statement for `key`, built by `build` the first time it is asked for.
    pub(crate) fn cached(&self, key: StatementKey, build: impl FnOnce() -> String) -> Arc<str> {
        if let Some(sql) = read(&self.varying).get(&key) {
            return sql.clone();
        }
        let sql: Arc<str> = build().into();
        write(&self.varying).insert(key, sql.clone());
        sql
    }

    /// `SELECT … WHERE id IN (<count ids>) AND expires_at > ?`.
    pub(crate) fn load_many(&self, count: usize) -> Arc<str> {
        self.cached(StatementKey::LoadMany(count), || {
            let mut sql = format!("{} WHERE {} IN (", self.load_many, quote::<B>("id"));
            let mut placeholders = Placeholders::<B>::new();
            placeholders.push_list(&mut sql, count);
            let _ = write!(sql, ") AND {} > ", quote::<B>("expires_at"));
            placeholders.push(&mut sql, None);
            sql
        })
    }

    /// `SELECT <load columns>, id FROM t WHERE <field> = ? AND expires_at > ?`.
    pub(crate) fn find_by(&self, field: usize) -> Arc<str> {
        self.cached(StatementKey::FindBy(field), || {
            let mut sql = format!(
                "{} WHERE {} = ",
                self.load_many,
                quote::<B>(self.schema.column(field).name)
            );
            let mut placeholders = Placeholders::<B>::new();
            placeholders.push(&mut sql, Some(self.schema.column(field).sql_type));
            let _ = write!(sql, " AND {} > ", quote::<B>("expires_at"));
            placeholders.push(&mut sql, None);
            sql
        })
    }

    /// `DELETE FROM t WHERE <field> = ? [AND id <> ?]`.
    pub(crate) fn delete_by(&self, field: usize, sparing: bool) -> Arc<str> {
        self.cached(StatementKey::DeleteBy(field, sparing), || {
            let mut sql = format!(
                "DELETE FROM {} WHERE {} = ",
                quote::<B>(self.schema.table),
                quote::<B>(self.schema.column(field).name)
            );
            let mut placeholders = Placeholders::<B>::new();
            placeholders.push(&mut sql, Some(self.schema.column(field).sql_type));
            if sparing {
                let _ = write!(sql, " AND {} <> ", quote::<B>("id"));
                placeholders.push(&mut sql, None);
            }
            sql
        })
    }

    /// `DELETE FROM t WHERE <field> = ? AND id NOT IN (the written sessions,
    /// then the newest others, `max` in all)`: the sessions beyond a cap.
    /// The kept ids are padded to a bucket by repeating the last.
    pub(crate) fn cap(
        &self,
        field: usize,
        max: u32,
        key: &Value<'static>,
        keep: &[&SessionId],
    ) -> (Arc<str>, Vec<super::group::Param>) {
        use super::group::Param;
        let count = bucket(keep.len().max(1));
        let sql = self.cached(StatementKey::Cap(field, max, count), || {
            let table = quote::<B>(self.schema.table);
            let column = quote::<B>(self.schema.column(field).name);
            let ty = Some(self.schema.column(field).sql_type);
            let (id, expires_at, created_at) = (
                quote::<B>("id"),
                quote::<B>("expires_at"),
                quote::<B>("created_at"),
            );
            let mut placeholders = Placeholders::<B>::new();
            let mut sql = format!("DELETE FROM {table} WHERE {column} = ");
            placeholders.push(&mut sql, ty);
            // The derived table lets MySQL read the table it deletes from.
            let _ = write!(
                sql,
                " AND {id} NOT IN (SELECT {id} FROM (SELECT {id} FROM {table} WHERE {column} = "
            );
            placeholders.push(&mut sql, ty);
            let _ = write!(sql, " AND {expires_at} > ");
            placeholders.push(&mut sql, None);
            let _ = write!(sql, " ORDER BY CASE WHEN {id} IN (");
            placeholders.push_list(&mut sql, count);
            let _ = write!(
                sql,
                ") THEN 0 ELSE 1 END, {created_at} DESC, {id} DESC LIMIT {max}) AS keep_newest)"
            );
            sql
        });
        let mut params = vec![
            Param::Value(key.clone()),
            Param::Value(key.clone()),
            Param::Time(chrono::Utc::now()),
        ];
        let last = keep
            .last()
            .copied()
            .copied()
            .unwrap_or(super::statements::PADDING_ID);
        params.extend(
            keep.iter()
                .map(|id| **id)
                .chain(std::iter::repeat(last))
                .take(count)
                .map(Param::Id),
        );
        (sql, params)
    }

    /// A multi-row INSERT of `rows` rows.
    pub(crate) fn insert(&self, rows: usize) -> Arc<str> {
        self.cached(StatementKey::Insert(rows), || {
            build_insert::<B>(self.schema, rows)
        })
    }

    /// The lone UPDATE of `update`'s shape.
    pub(crate) fn update(&self, update: &Update) -> Arc<str> {
        let shape = UpdateShape::of(update);
        self.cached(StatementKey::Update(shape), || {
            build_update::<B>(self.schema, shape)
        })
    }

    /// The merged UPDATE of `rows` (all of one shape, none twice), padded to
    /// its bucket, with its arguments.
    pub(crate) fn merged_update(
        &self,
        rows: &[&MergedRow],
    ) -> Result<(Arc<str>, Arguments<B>), BoxDynError> {
        let first = rows.first().ok_or("a merged update of no rows")?;
        let shape = first.shape();
        let count = bucket(rows.len());
        let sql = self.cached(StatementKey::Merged(shape, count), || {
            build_merged_update::<B>(self.schema, shape, count)
        });
        let mut args = Arguments::<B>::default();
        let padding = first.padding();
        for row in padded(rows.iter().copied(), &padding) {
            row.bind_merged::<B>(&mut args)?;
        }
        Ok((sql, args))
    }
}

/// Builds a lone UPDATE. Placeholders in the order the store binds: dirty
/// fields, expires_at, remember, new id, id, now, version. An empty update
/// never gets here (the store answers it without a statement).
pub(crate) fn build_update<B: Dialect>(schema: Schema, shape: UpdateShape) -> String {
    let mut placeholders = Placeholders::<B>::new();
    let mut set = |column: &str, ty: Option<SqlType>| {
        let mut assignment = format!("{} = ", quote::<B>(column));
        placeholders.push(&mut assignment, ty);
        assignment
    };
    let mut assignments: Vec<String> = shape
        .dirty
        .iter()
        .map(|index| {
            set(
                schema.column(index).name,
                Some(schema.column(index).sql_type),
            )
        })
        .collect();
    if !shape.is_touch() {
        assignments.push(format!("{v} = {v} + 1", v = quote::<B>("version")));
    }
    if shape.moves_expiry {
        assignments.push(set("expires_at", None));
    }
    if shape.sets_remember {
        assignments.push(set("remember", None));
    }
    if shape.renews {
        assignments.push(set("id", None));
    }
    let mut sql = format!(
        "UPDATE {} SET {} WHERE {} = ",
        quote::<B>(schema.table),
        comma_list(assignments),
        quote::<B>("id")
    );
    placeholders.push(&mut sql, None);
    let _ = write!(sql, " AND {} > ", quote::<B>("expires_at"));
    placeholders.push(&mut sql, None);
    if shape.compare_and_swap {
        let _ = write!(sql, " AND {} = ", quote::<B>("version"));
        placeholders.push(&mut sql, None);
    }
    sql
}

/// `INSERT INTO t (every column) VALUES (...), ...` of `rows` rows, the
/// library columns first, in the order [`insert_params`](super::group::insert_params) gives them.
pub(crate) fn build_insert<B: Dialect>(schema: Schema, rows: usize) -> String {
    let columns = LIBRARY_COLUMNS
        .iter()
        .copied()
        .chain(schema.columns.iter().map(|column| column.name))
        .map(quote::<B>);
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote::<B>(schema.table),
        comma_list(columns)
    );
    let mut placeholders = Placeholders::<B>::new();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for position in 0..LIBRARY_COLUMNS.len() + schema.columns.len() {
            if position > 0 {
                sql.push_str(", ");
            }
            let ty = position
                .checked_sub(LIBRARY_COLUMNS.len())
                .map(|field| schema.columns[field].sql_type);
            placeholders.push(&mut sql, ty);
        }
        sql.push(')');
    }
    sql
}

/// The name a merged UPDATE gives the value of field `index` in its row
/// source `v` (always qualified by `v.`, so a field named `c0` is no clash).
pub(crate) fn merged_value_column<B: Dialect>(index: usize) -> String {
    quote::<B>(&format!("c{index}"))
}

/// The SET list of a merged UPDATE of `shape` from the rows of `v`: the
/// dirty fields, the version, and the expiry if it moves; `target`
/// qualifies the updated columns (`"t."`, or `""`).
pub(crate) fn merged_assignments<B: Dialect>(
    schema: Schema,
    shape: MergedShape,
    target: &str,
) -> String {
    let mut assignments: Vec<String> = shape
        .dirty
        .iter()
        .map(|index| {
            format!(
                "{target}{} = v.{}",
                quote::<B>(schema.column(index).name),
                merged_value_column::<B>(index)
            )
        })
        .collect();
    if !shape.dirty.is_empty() {
        assignments.push(format!(
            "{target}{v} = {target}{v} + 1",
            v = quote::<B>("version")
        ));
    }
    if shape.moves_expiry {
        assignments.push(format!(
            "{target}{} = v.{}",
            quote::<B>("expires_at"),
            quote::<B>("__expires_at")
        ));
    }
    comma_list(assignments)
}

/// `WITH v(...) AS (VALUES (...), ...) UPDATE t SET ... FROM v WHERE ...
/// RETURNING id`: many sessions' UPDATEs of one shape in one statement, each
/// row with its own expiry check and compare-and-swap.
pub(crate) fn build_merged_update<B: Dialect>(
    schema: Schema,
    shape: MergedShape,
    rows: usize,
) -> String {
    let table = quote::<B>(schema.table);
    // The VALUES columns get names no field can have, in the order
    // `MergedRow::bind_merged` binds.
    let mut names = vec![quote::<B>("__id")];
    let mut types = vec![B::ID_TYPE];
    if shape.moves_expiry {
        names.push(quote::<B>("__expires_at"));
        types.push(B::TIME_TYPE);
    }
    names.extend([quote::<B>("__now"), quote::<B>("__expected")]);
    types.extend([B::TIME_TYPE, "BIGINT"]);
    for index in shape.dirty.iter() {
        names.push(merged_value_column::<B>(index));
        types.push(B::column_type(schema.column(index).sql_type));
    }
    let mut sql = format!("WITH v({}) AS (VALUES ", comma_list(names));
    let mut placeholders = Placeholders::<B>::new();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for (position, ty) in types.iter().enumerate() {
            if position > 0 {
                sql.push_str(", ");
            }
            placeholders.push(&mut sql, None);
            B::push_cast(&mut sql, ty);
        }
        sql.push(')');
    }
    let _ = write!(
        sql,
        ") UPDATE {table} SET {} FROM v WHERE {table}.{id} = v.{nid} AND {table}.{e} > v.{now} \
         AND (v.{expected} IS NULL OR {table}.{version} = v.{expected}) ",
        merged_assignments::<B>(schema, shape, ""),
        e = quote::<B>("expires_at"),
        id = quote::<B>("id"),
        nid = quote::<B>("__id"),
        now = quote::<B>("__now"),
        expected = quote::<B>("__expected"),
        version = quote::<B>("version"),
    );
    B::push_returning_id(&mut sql, &table);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnDef;

    const COLUMNS: [ColumnDef; 2] = [
        ColumnDef {
            name: "count",
            field: "count",
            sql_type: SqlType::I64,
            nullable: false,
            indexed: false,
        },
        ColumnDef {
            name: "cart",
            field: "cart",
            sql_type: SqlType::Json,
            nullable: false,
            indexed: false,
        },
    ];
    const SCHEMA: Schema = Schema {
        table: "visits",
        struct_name: "Visit",
        columns: &COLUMNS,
    };

    fn dirty(fields: &[usize]) -> DirtyFields {
        let mut dirty = DirtyFields::NONE;
        fields.iter().for_each(|field| dirty.insert(*field));
        dirty
    }

    fn shape(fields: &[usize], moves_expiry: bool, compare_and_swap: bool) -> UpdateShape {
        UpdateShape {
            dirty: dirty(fields),
            moves_expiry,
            compare_and_swap,
            renews: false,
            sets_remember: false,
        }
    }

    #[test]
    fn buckets_are_powers_of_two_up_to_the_group_limit() {
        let buckets: Vec<usize> = [1, 2, 3, 5, 100, 256, 300].map(bucket).to_vec();
        assert_eq!(buckets, [1, 2, 4, 8, 128, 256, 256]);
        let items = [1, 2, 3];
        let filled: Vec<i32> = padded(items.iter(), &9).copied().collect();
        assert_eq!(filled, [1, 2, 3, 9], "padded to the bucket with the filler");
    }

    #[test]
    fn rows_per_statement_stay_under_the_parameter_limit() {
        assert_eq!(max_rows(1), MAX_GROUP);
        assert_eq!(max_rows(200), 128, "30000 / 200 = 150, down to 128");
        assert_eq!(max_rows(40_000), 1, "one row even past the limit");
        for params in 1..500 {
            let rows = max_rows(params);
            assert!(rows.is_power_of_two() && (rows * params <= MAX_PARAMS || rows == 1));
        }
    }

    #[test]
    fn merged_rows_count_their_parameters() {
        let shape = MergedShape {
            dirty: dirty(&[0, 1]),
            moves_expiry: true,
        };
        assert_eq!(
            shape.params_per_row(),
            6,
            "id, expiry, now, version, 2 values"
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_statements() {
        use crate::store::sql::Postgres;
        assert_eq!(
            build_update::<Postgres>(SCHEMA, shape(&[0, 1], true, true)),
            r#"UPDATE "visits" SET "count" = $1, "cart" = $2::jsonb, "version" = "version" + 1, "expires_at" = $3 WHERE "id" = $4 AND "expires_at" > $5 AND "version" = $6"#
        );
        assert_eq!(
            build_update::<Postgres>(SCHEMA, shape(&[], true, false)),
            r#"UPDATE "visits" SET "expires_at" = $1 WHERE "id" = $2 AND "expires_at" > $3"#,
            "a touch leaves the version alone"
        );
        assert_eq!(
            build_insert::<Postgres>(SCHEMA, 2),
            r#"INSERT INTO "visits" ("id", "expires_at", "version", "created_at", "remember", "count", "cart") VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb), ($8, $9, $10, $11, $12, $13, $14::jsonb)"#
        );
        let merged = MergedShape {
            dirty: dirty(&[0]),
            moves_expiry: false,
        };
        assert_eq!(
            build_merged_update::<Postgres>(SCHEMA, merged, 2),
            r#"WITH v("__id", "__now", "__expected", "c0") AS (VALUES ($1::BYTEA, $2::TIMESTAMPTZ, $3::BIGINT, $4::BIGINT), ($5::BYTEA, $6::TIMESTAMPTZ, $7::BIGINT, $8::BIGINT)) UPDATE "visits" SET "count" = v."c0", "version" = "version" + 1 FROM v WHERE "visits"."id" = v."__id" AND "visits"."expires_at" > v."__now" AND (v."__expected" IS NULL OR "visits"."version" = v."__expected") RETURNING "visits"."id""#
        );
        let statements = Statements::<Postgres>::new(SCHEMA);
        assert_eq!(
            &*statements.load,
            r#"SELECT "version", "created_at", "expires_at", "remember", "count", "cart"::text FROM "visits" WHERE "id" = $1 AND "expires_at" > $2"#
        );
        assert_eq!(
            &*statements.load_many(2),
            r#"SELECT "version", "created_at", "expires_at", "remember", "count", "cart"::text, "id" FROM "visits" WHERE "id" IN ($1, $2) AND "expires_at" > $3"#
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_statements() {
        use crate::store::sql::Sqlite;
        assert_eq!(
            build_update::<Sqlite>(SCHEMA, shape(&[1], false, true)),
            r#"UPDATE "visits" SET "cart" = ?, "version" = "version" + 1 WHERE "id" = ? AND "expires_at" > ? AND "version" = ?"#
        );
        let merged = MergedShape {
            dirty: dirty(&[0]),
            moves_expiry: true,
        };
        assert!(
            build_merged_update::<Sqlite>(SCHEMA, merged, 1).ends_with(r#"RETURNING "id""#),
            "SQLite's RETURNING names the column unqualified"
        );
        let statements = Statements::<Sqlite>::new(SCHEMA);
        assert_eq!(
            &*statements.purge,
            r#"DELETE FROM "visits" WHERE "id" IN (SELECT "id" FROM "visits" WHERE "expires_at" <= ? LIMIT ?)"#
        );
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_statements() {
        use crate::store::sql::MySql;
        assert_eq!(
            build_update::<MySql>(
                SCHEMA,
                UpdateShape {
                    renews: true,
                    sets_remember: true,
                    ..shape(&[0], true, false)
                }
            ),
            "UPDATE `visits` SET `count` = ?, `version` = `version` + 1, `expires_at` = ?, `remember` = ?, `id` = ? WHERE `id` = ? AND `expires_at` > ?"
        );
    }

    #[test]
    fn statements_are_built_once_per_key() {
        #[cfg(feature = "sqlite")]
        {
            let statements = Statements::<crate::store::sql::Sqlite>::new(SCHEMA);
            let first = statements.insert(4);
            assert!(Arc::ptr_eq(&first, &statements.insert(4)));
            assert!(!Arc::ptr_eq(&first, &statements.insert(8)));
        }
    }
}
