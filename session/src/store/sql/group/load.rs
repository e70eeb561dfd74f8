//! Grouped loads: the loads waiting at one moment share one
//! `SELECT … WHERE id IN (…)`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{Held, connection};
use crate::{
    data::SessionData,
    error::StoreError,
    store::{
        Record,
        sql::{
            SqlStore,
            backend::{Arguments, Connection, Dialect, Row},
            bound,
            statements::{LOADED_LIBRARY_COLUMNS, bucket, decode_id, padded},
        },
    },
    token::SessionId,
    value::{SqlType, Value},
};

/// Where a load's result goes.
pub(crate) type Loaded<T> = oneshot::Sender<Result<Option<Record<T>>, StoreError>>;

/// What a grouped SELECT found, by id: the rows, still to decode.
type Found<B> = HashMap<SessionId, Row<B>>;

impl<B: Dialect, T: SessionData> SqlStore<B, T> {
    /// One session by id: one SELECT.
    pub(crate) async fn load_one(
        &self,
        connection: &mut Connection<B>,
        id: &SessionId,
        now: DateTime<Utc>,
    ) -> Result<Option<Record<T>>, StoreError> {
        let mut args = Arguments::<B>::default();
        bound(B::bind_id(&mut args, id))?;
        bound(B::bind_time(&mut args, now))?;
        // At most one row: `id` is the key.
        let rows = B::fetch_all(connection, self.core.statements.load.clone(), args)
            .await
            .map_err(|error| self.core.failed(error))?;
        rows.first()
            .map(|row| Self::decode_record(row, *id))
            .transpose()
    }

    /// A loaded row (columns as in the load statements) as a record.
    pub(crate) fn decode_record(row: &Row<B>, id: SessionId) -> Result<Record<T>, StoreError> {
        let columns = T::SCHEMA.columns;
        let mut values = Vec::with_capacity(columns.len());
        for (offset, column) in columns.iter().enumerate() {
            values.push(B::decode(
                row,
                LOADED_LIBRARY_COLUMNS + offset,
                column.sql_type,
            )?);
        }
        let data = T::decode_columns(&mut values.into_iter())?;
        Ok(Record {
            id,
            data,
            version: B::decode_i64(row, 0)?,
            created_at: B::decode_time(row, 1)?,
            expires_at: B::decode_time(row, 2)?,
            remember: B::decode(row, 3, SqlType::Bool)? == Value::Bool(true),
        })
    }

    /// Answers one group of loads: a lone one with the one-row SELECT,
    /// several with one `SELECT … WHERE id IN (…)`. Each waiter decodes its
    /// own row, so a row that does not decode fails only its own requests,
    /// with the same typed error it would get loaded alone.
    pub(crate) async fn load_group(&self, held: &mut Held<B>, group: Vec<(SessionId, Loaded<T>)>) {
        let now = Utc::now();
        let connection = match connection::<B>(&self.core, held).await {
            Ok(connection) => connection,
            Err(error) => {
                for (_, done) in group {
                    let _ = done.send(Err(error.share()));
                }
                return;
            }
        };
        if group.len() == 1 {
            let (id, done) = group.into_iter().next().expect("one load");
            let result = self.load_one(connection, &id, now).await;
            if matches!(
                result,
                Err(StoreError::Database(_) | StoreError::Unavailable { .. })
            ) {
                *held = None;
            }
            let _ = done.send(result);
            return;
        }
        let mut ids: Vec<SessionId> = group.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = match self.load_many(connection, &ids, now).await {
            Ok(found) => found,
            Err(error) => {
                *held = None;
                let error = self.core.failed(error);
                for (_, done) in group {
                    let _ = done.send(Err(error.share()));
                }
                return;
            }
        };
        for (id, done) in group {
            let result = match found.get(&id) {
                Some(row) => Self::decode_record(row, id).map(Some),
                None => Ok(None),
            };
            let _ = done.send(result);
        }
    }

    /// Several sessions' rows in one SELECT, by id.
    async fn load_many(
        &self,
        connection: &mut Connection<B>,
        ids: &[SessionId],
        now: DateTime<Utc>,
    ) -> Result<Found<B>, sqlx::Error> {
        let sql = self.core.statements.load_many(bucket(ids.len()));
        let mut args = Arguments::<B>::default();
        // Padded to the bucket by repeating the last id: `IN` ignores repeats.
        let last = ids
            .last()
            .ok_or(sqlx::Error::Protocol("no ids to load".into()))?;
        for id in padded(ids.iter(), last) {
            B::bind_id(&mut args, id).map_err(sqlx::Error::Encode)?;
        }
        B::bind_time(&mut args, now).map_err(sqlx::Error::Encode)?;
        let rows = B::fetch_all(connection, sql, args).await?;
        let id_column = LOADED_LIBRARY_COLUMNS + T::SCHEMA.columns.len();
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(decode_id::<B>(&row, id_column)?, row);
        }
        Ok(found)
    }
}
