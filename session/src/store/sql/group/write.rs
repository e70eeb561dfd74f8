//! The write model: what a queued write does, kept as data (not yet bound)
//! so that it can be bound again, alone, after a group it was in failed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;

use crate::{
    data::{DirtyFields, SessionData},
    error::StoreError,
    schema::LIBRARY_COLUMNS,
    store::{
        Record,
        sql::backend::{Arguments, Dialect},
        sql::statements::{MergedShape, PADDING_ID},
    },
    token::SessionId,
    value::{SqlType, Value},
};

/// One write of a session.
pub(crate) enum Write {
    /// Any statement, run as it is; its result is the rows it affected.
    Statement { sql: Arc<str>, params: Vec<Param> },
    /// A new row (its [`insert_params`]): a group's new rows share one
    /// multi-row INSERT.
    Insert(Vec<Param>),
    /// An UPDATE that shares one statement with the group's others of its shape.
    Merged(MergedRow),
    /// A write that sets capped fields: after it, in the same transaction,
    /// the sessions beyond each cap are deleted.
    Capped(Box<Write>, Vec<Cap>),
}

/// A cap to enforce after a write: at most `max` live sessions hold `key`
/// in field `field`; `keep` (the written session) is never the one deleted.
#[derive(Clone, Debug)]
pub(crate) struct Cap {
    pub(crate) field: usize,
    pub(crate) key: Value<'static>,
    pub(crate) keep: SessionId,
    pub(crate) max: u32,
}

/// A bound value, in the backend's own encoding.
#[derive(Debug)]
pub enum Param {
    Id(SessionId),
    Time(DateTime<Utc>),
    I64(i64),
    Value(Value<'static>),
}

impl Param {
    pub(crate) fn bind<B: Dialect>(&self, args: &mut Arguments<B>) -> Result<(), BoxDynError> {
        match self {
            Param::Id(id) => B::bind_id(args, id),
            Param::Time(time) => B::bind_time(args, *time),
            Param::I64(value) => B::bind_i64(args, *value),
            Param::Value(value) => B::bind(args, value.reborrow()),
        }
    }
}

/// Binds `params` in order.
pub(crate) fn bind_all<B: Dialect>(
    args: &mut Arguments<B>,
    params: &[Param],
) -> Result<(), BoxDynError> {
    params.iter().try_for_each(|param| param.bind::<B>(args))
}

/// A record's parameters in the column order of
/// [`build_insert`](crate::store::sql::statements::build_insert).
pub(crate) fn insert_params<T: SessionData>(
    record: &Record<T>,
    encode: impl Fn(&T, usize) -> Result<Value<'static>, StoreError>,
) -> Result<Vec<Param>, StoreError> {
    let mut params = Vec::with_capacity(LIBRARY_COLUMNS.len() + T::SCHEMA.columns.len());
    params.extend([
        Param::Id(record.id),
        Param::Time(record.expires_at),
        Param::I64(record.version),
        Param::Time(record.created_at),
        Param::Value(Value::Bool(record.remember)),
    ]);
    for index in 0..T::SCHEMA.columns.len() {
        params.push(Param::Value(encode(&record.data, index)?));
    }
    Ok(params)
}

/// One row of a merged UPDATE: a plain UPDATE (no renew, no remember change).
#[derive(Clone, Debug)]
pub struct MergedRow {
    pub(crate) dirty: DirtyFields,
    pub(crate) id: SessionId,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) now: DateTime<Utc>,
    pub(crate) expected_version: Option<i64>,
    /// The dirty fields' values, in field order.
    pub(crate) values: Vec<Value<'static>>,
}

impl MergedRow {
    pub(crate) fn shape(&self) -> MergedShape {
        MergedShape {
            dirty: self.dirty,
            moves_expiry: self.expires_at.is_some(),
        }
    }

    /// A row that pads a merged UPDATE: this row's shape and values, an id
    /// no row has ([`PADDING_ID`]).
    pub(crate) fn padding(&self) -> MergedRow {
        MergedRow {
            id: PADDING_ID,
            expected_version: None,
            ..self.clone()
        }
    }

    /// Binds the row in the column order of
    /// [`build_merged_update`](crate::store::sql::statements::build_merged_update).
    pub(crate) fn bind_merged<B: Dialect>(
        &self,
        args: &mut Arguments<B>,
    ) -> Result<(), BoxDynError> {
        B::bind_id(args, &self.id)?;
        if let Some(expires_at) = self.expires_at {
            B::bind_time(args, expires_at)?;
        }
        B::bind_time(args, self.now)?;
        match self.expected_version {
            Some(version) => B::bind_i64(args, version)?,
            None => B::bind(args, Value::Null(SqlType::I64))?,
        }
        self.bind_values::<B>(args)
    }

    /// Binds the dirty fields' values.
    pub(crate) fn bind_values<B: Dialect>(
        &self,
        args: &mut Arguments<B>,
    ) -> Result<(), BoxDynError> {
        self.values
            .iter()
            .try_for_each(|value| B::bind(args, value.reborrow()))
    }
}
