//! One session as one Redis hash: a field per struct field, plus the
//! library's own, each value as text a person can read with `HGETALL`
//! (integers as decimal text, times as RFC 3339, JSON as JSON), bytes as
//! they are.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

use super::scripts::Call;
use crate::{
    data::{DecodeError, SessionData},
    error::StoreError,
    store::Record,
    token::SessionId,
    value::{SqlType, Value, ValueError},
};

/// The library's own hash fields. The derive reserves these names, so no
/// struct field can take them.
pub(crate) const VERSION: &str = "version";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const EXPIRES_AT: &str = "expires_at";
pub(crate) const REMEMBER: &str = "remember";
/// Set on a session being moved to a new id on Redis Cluster (renew across
/// slots): a hyphen no SQL identifier, hence no column, can contain.
pub(crate) const MOVED_TO: &str = "moved-to";

/// A field value as stored; `None` for NULL (the hash field is removed).
pub(crate) fn encode(value: &Value<'_>) -> Option<Vec<u8>> {
    Some(match value {
        Value::Null(_) => return None,
        Value::Bool(v) => {
            if *v {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            }
        }
        Value::I16(v) => v.to_string().into_bytes(),
        Value::I32(v) => v.to_string().into_bytes(),
        Value::I64(v) => v.to_string().into_bytes(),
        Value::U64(v) => v.to_string().into_bytes(),
        // Rust's shortest form that parses back to the same number.
        Value::F32(v) => v.to_string().into_bytes(),
        Value::F64(v) => v.to_string().into_bytes(),
        Value::Text(v) | Value::Json(v) => v.as_bytes().to_vec(),
        Value::Bytes(v) => v.to_vec(),
        Value::Timestamp(v) => v.to_rfc3339_opts(SecondsFormat::AutoSi, true).into_bytes(),
        Value::DateTime(v) => v.format("%Y-%m-%dT%H:%M:%S%.f").to_string().into_bytes(),
        Value::Date(v) => v.format("%Y-%m-%d").to_string().into_bytes(),
        Value::Uuid(v) => v.hyphenated().to_string().into_bytes(),
    })
}

/// A field value (not NULL) as [`encode`] stores it, written into a script
/// call: integers, text and bytes straight into the command's buffer, the
/// rest through [`encode`].
pub(crate) fn arg_value(call: &mut Call, value: &Value<'_>) {
    match value {
        Value::I16(v) => call.arg(*v),
        Value::I32(v) => call.arg(*v),
        Value::I64(v) => call.arg(*v),
        Value::U64(v) => call.arg(*v),
        Value::Text(v) | Value::Json(v) => call.arg(v.as_bytes()),
        Value::Bytes(v) => call.arg(&v[..]),
        other => call.arg(encode(other).unwrap_or_default()),
    };
}

/// A stored field back into a value of `sql_type`.
pub(crate) fn decode(sql_type: SqlType, stored: Vec<u8>) -> Result<Value<'static>, ValueError> {
    fn text(stored: Vec<u8>) -> Result<String, ValueError> {
        String::from_utf8(stored).map_err(|error| {
            ValueError::Unparsable(format!("{:?}", String::from_utf8_lossy(error.as_bytes())))
        })
    }
    fn parse<V: std::str::FromStr>(stored: Vec<u8>) -> Result<V, ValueError> {
        let text = text(stored)?;
        text.parse()
            .map_err(|_| ValueError::Unparsable(format!("{text:?}")))
    }
    Ok(match sql_type {
        SqlType::Bool => match stored.as_slice() {
            b"1" => Value::Bool(true),
            b"0" => Value::Bool(false),
            _ => {
                return Err(ValueError::Unparsable(format!(
                    "{:?}",
                    String::from_utf8_lossy(&stored)
                )));
            }
        },
        SqlType::I16 => Value::I16(parse(stored)?),
        SqlType::I32 => Value::I32(parse(stored)?),
        SqlType::I64 => Value::I64(parse(stored)?),
        SqlType::U64 => Value::U64(parse(stored)?),
        SqlType::F32 => Value::F32(parse(stored)?),
        SqlType::F64 => Value::F64(parse(stored)?),
        SqlType::Text => Value::Text(text(stored)?.into()),
        SqlType::Json => Value::Json(text(stored)?.into()),
        SqlType::Bytes => Value::Bytes(stored.into()),
        SqlType::Timestamp => {
            let text = text(stored)?;
            // `FromStr` reads RFC 3339 and the signed, longer years beyond it.
            Value::Timestamp(
                text.parse::<DateTime<Utc>>()
                    .map_err(|_| ValueError::Unparsable(format!("{text:?}")))?,
            )
        }
        SqlType::DateTime => {
            let text = text(stored)?;
            Value::DateTime(
                NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
                    .map_err(|_| ValueError::Unparsable(format!("{text:?}")))?,
            )
        }
        SqlType::Date => {
            let text = text(stored)?;
            Value::Date(
                NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                    .map_err(|_| ValueError::Unparsable(format!("{text:?}")))?,
            )
        }
        SqlType::Uuid => Value::Uuid(parse(stored)?),
    })
}

/// A time as the library stores it: microseconds since the epoch.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The `PEXPIREAT` of an expiry: milliseconds, rounded up, so Redis never
/// drops a session before its `expires_at`.
pub(crate) fn expire_at_ms(at: DateTime<Utc>) -> i64 {
    let micros = at.timestamp_micros();
    micros.div_euclid(1000) + i64::from(micros.rem_euclid(1000) != 0)
}

/// The hash of a new session: every field set, the library's fields too.
pub(crate) fn fields_of<T: SessionData>(
    record: &Record<T>,
) -> Result<Vec<(&'static str, Value<'_>)>, StoreError> {
    let columns = T::SCHEMA.columns;
    let mut fields = Vec::with_capacity(4 + columns.len());
    fields.extend([
        (VERSION, Value::I64(record.version)),
        (CREATED_AT, Value::I64(micros(record.created_at))),
        (EXPIRES_AT, Value::I64(micros(record.expires_at))),
        (
            REMEMBER,
            Value::Text(if record.remember { "1" } else { "0" }.into()),
        ),
    ]);
    for (index, column) in columns.iter().enumerate() {
        match record.data.encode_column(index)? {
            Value::Null(_) => {}
            value => fields.push((column.name, value)),
        }
    }
    Ok(fields)
}

/// The library's fields a load reads first, in this order; the struct's
/// columns follow, in schema order.
const LOADED: [&str; 5] = [VERSION, CREATED_AT, EXPIRES_AT, REMEMBER, MOVED_TO];

/// The load of a session at `key`: one `HMGET` of the fields
/// [`record_of`] decodes, by position. Not `HGETALL`: its reply carries
/// every field's name too, twice the values to parse and a map to build.
pub(crate) fn load_command<T: SessionData>(key: &str) -> redis::Cmd {
    let columns = T::SCHEMA.columns;
    let mut cmd = redis::Cmd::with_capacity(
        2 + LOADED.len() + columns.len(),
        64 + key.len() + columns.iter().map(|c| c.name.len()).sum::<usize>(),
    );
    cmd.arg("HMGET").arg(key).arg(&LOADED[..]);
    for column in columns {
        cmd.arg(column.name);
    }
    cmd
}

/// The reply of a [`load_command`], or `None` when it is not a live
/// session: absent, expired, or being moved to a new id.
pub(crate) fn record_of<T: SessionData>(
    id: SessionId,
    reply: redis::Value,
    now: DateTime<Utc>,
) -> Result<Option<Record<T>>, StoreError> {
    let redis::Value::Array(values) = reply else {
        return Err(unexpected::<T>(&reply));
    };
    if values.len() != LOADED.len() + T::SCHEMA.columns.len() {
        return Err(unexpected::<T>(&redis::Value::Array(values)));
    }
    let mut values = values.into_iter().map(|value| match value {
        redis::Value::Nil => Ok(None),
        redis::Value::BulkString(bytes) => Ok(Some(bytes)),
        other => Err(unexpected::<T>(&other)),
    });
    let mut next = || values.next().expect("one value per field asked for");
    let library = |name: &'static str, stored: Option<Vec<u8>>| -> Result<i64, StoreError> {
        let stored = stored.ok_or_else(|| library_error::<T>(name, ValueError::MissingColumn))?;
        match decode(SqlType::I64, stored) {
            Ok(Value::I64(value)) => Ok(value),
            Ok(_) => unreachable!("decode answers the type asked for"),
            Err(error) => Err(library_error::<T>(name, error)),
        }
    };
    let (version, created_at, expires_at, remember, moved) =
        (next()?, next()?, next()?, next()?, next()?);
    if moved.is_some() {
        return Ok(None);
    }
    if version.is_none() && created_at.is_none() && expires_at.is_none() && remember.is_none() {
        // No such hash (or not one of ours: none of the library's fields).
        return Ok(None);
    }
    let version = library(VERSION, version)?;
    let created_at = time_of::<T>(CREATED_AT, library(CREATED_AT, created_at)?)?;
    let expires_at = time_of::<T>(EXPIRES_AT, library(EXPIRES_AT, expires_at)?)?;
    let remember = library(REMEMBER, remember)? == 1;
    if expires_at <= now {
        return Ok(None);
    }
    // A field the hash lacks was added to the struct after the session was
    // written: NULL for an `Option`, else the struct's `Default` for it, as
    // `migrate()` adds a column on the SQL stores.
    // Built only if a field is missing: most loads never need it.
    let mut defaults = None;
    let mut decoded = Vec::with_capacity(T::SCHEMA.columns.len());
    for (index, column) in T::SCHEMA.columns.iter().enumerate() {
        let value = match next()? {
            Some(stored) => decode(column.sql_type, stored).map_err(|source| DecodeError {
                table: T::SCHEMA.table,
                column: column.name,
                field: column.field,
                source,
            })?,
            None if column.nullable => Value::Null(column.sql_type),
            None => defaults
                .get_or_insert_with(T::default)
                .encode_column(index)?
                .into_owned(),
        };
        decoded.push(value);
    }
    let data = T::decode_columns(&mut decoded.into_iter())?;
    Ok(Some(Record {
        id,
        data,
        version,
        expires_at,
        created_at,
        remember,
    }))
}

/// A reply of another shape than a load's (a key of another type gives
/// `WRONGTYPE`, which fails before this).
fn unexpected<T: SessionData>(reply: &redis::Value) -> StoreError {
    StoreError::Redis(std::sync::Arc::new(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply to a session's load",
        format!("{reply:?} (table {})", T::SCHEMA.table),
    ))))
}

fn time_of<T: SessionData>(name: &'static str, micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| library_error::<T>(name, ValueError::OutOfRange(micros.to_string())))
}

fn library_error<T: SessionData>(name: &'static str, source: ValueError) -> StoreError {
    StoreError::Decode(DecodeError {
        table: T::SCHEMA.table,
        column: name,
        field: name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_as_written() {
        let at = DateTime::parse_from_rfc3339("2038-01-19T03:14:08.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let values = [
            Value::Bool(true),
            Value::I16(i16::MIN),
            Value::I32(-7),
            Value::I64(i64::MAX),
            Value::U64(u64::MAX),
            Value::F32(0.1),
            Value::F64(-1.0e-300),
            Value::F64(f64::INFINITY),
            Value::Text("ünïcode\0nul".into()),
            Value::Json(r#"{"a":[1,2]}"#.into()),
            Value::Bytes(vec![0, 255, 10].into()),
            Value::Timestamp(at),
            Value::DateTime(at.naive_utc()),
            Value::Date(at.date_naive()),
            Value::Uuid(uuid::Uuid::new_v4()),
        ];
        for value in values {
            let stored = encode(&value).expect("not NULL");
            // A write puts the same bytes into its command.
            let mut call = super::super::scripts::UPDATE_FIELDS_TEXT.call("k");
            arg_value(&mut call, &value);
            let (cmd, _) = call.into_evalsha();
            assert_eq!(
                cmd.args_iter().last(),
                Some(redis::Arg::Simple(&stored[..])),
                "{value:?}"
            );
            let sql_type = value.sql_type();
            assert_eq!(decode(sql_type, stored).unwrap(), value);
        }
        // The far ends of chrono's range: signed, more than four digits.
        for text in [
            "+10000-01-01T00:00:00Z",
            "-0001-12-31T23:59:59.999999Z",
            "+262142-12-31T23:59:59Z",
        ] {
            let at = text.parse::<DateTime<Utc>>().expect(text);
            for value in [
                Value::Timestamp(at),
                Value::DateTime(at.naive_utc()),
                Value::Date(at.date_naive()),
            ] {
                let sql_type = value.sql_type();
                let stored = encode(&value).unwrap();
                assert_eq!(
                    decode(sql_type, stored.clone()).unwrap(),
                    value,
                    "{}",
                    String::from_utf8_lossy(&stored)
                );
            }
        }
        assert_eq!(encode(&Value::Null(SqlType::I64)), None);
        assert!(matches!(
            decode(SqlType::I64, b"12x".to_vec()),
            Err(ValueError::Unparsable(_))
        ));
        assert!(matches!(
            decode(SqlType::Text, vec![0xff]),
            Err(ValueError::Unparsable(_))
        ));
    }

    #[test]
    fn redis_never_expires_a_session_early() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap();
        assert_eq!(expire_at_ms(at), 1_700_000_000_001);
        let exact = DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap();
        assert_eq!(expire_at_ms(exact), 1_700_000_000_000);
    }
}
