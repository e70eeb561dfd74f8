//! The column model: how a Rust field type maps to one SQL column.
//!
//! Every field of a session struct is converted to a backend-neutral [`Value`]
//! through the [`Column`] trait; each store backend then binds and decodes
//! [`Value`]s in its own module. This keeps the derive free of any database
//! type and keeps every dialect difference inside one file per backend.
//!
//! # Supported field types
//!
//! | Rust type | [`SqlType`] | PostgreSQL | MySQL / MariaDB | SQLite |
//! |---|---|---|---|---|
//! | `bool` | `Bool` | `BOOLEAN` | `BOOLEAN` | `BOOLEAN` |
//! | `i8`, `i16`, `u8` | `I16` | `SMALLINT` | `SMALLINT` | `INTEGER` |
//! | `i32`, `u16` | `I32` | `INTEGER` | `INT` | `INTEGER` |
//! | `i64`, `u32` | `I64` | `BIGINT` | `BIGINT` | `INTEGER` |
//! | `u64` | `U64` | — | `BIGINT UNSIGNED` | — |
//! | `f32` | `F32` | `REAL` | `FLOAT` | `REAL` |
//! | `f64` | `F64` | `DOUBLE PRECISION` | `DOUBLE` | `REAL` |
//! | `String` | `Text` | `TEXT` | `LONGTEXT` | `TEXT` |
//! | `Vec<u8>` | `Bytes` | `BYTEA` | `LONGBLOB` | `BLOB` |
//! | `chrono::DateTime<Utc>` | `Timestamp` | `TIMESTAMPTZ` | `DATETIME(6)` | `TEXT` |
//! | `chrono::NaiveDateTime` | `DateTime` | `TIMESTAMP` | `DATETIME(6)` | `TEXT` |
//! | `chrono::NaiveDate` | `Date` | `DATE` | `DATE` | `TEXT` |
//! | `uuid::Uuid` | `Uuid` | `UUID` | `BINARY(16)` | `BLOB` |
//! | `#[session(json)] T` | `Json` | `JSONB` | `JSON` | `TEXT` |
//! | `Option<T>` of any of the above | same, nullable | | | |
//!
//! Unsigned integers are widened to the next signed SQL type so that every
//! value round-trips on every backend; `u64` has no lossless column on
//! PostgreSQL or SQLite and is a compile error there (store it as `i64` or
//! with `#[session(json)]`). `usize`/`isize` are not mapped because their
//! width depends on the platform. Date-times are stored with microsecond
//! precision on PostgreSQL and MySQL; finer parts are dropped by the database.
//!
//! # Ranges
//!
//! Every value in these ranges round-trips on every write path; a value
//! outside them is refused before it is sent, with
//! [`StoreError::Unstorable`](crate::StoreError::Unstorable) naming the
//! field, and nothing is stored in its place.
//!
//! | type | PostgreSQL | MySQL / MariaDB | SQLite |
//! |---|---|---|---|
//! | `DateTime<Utc>`, `NaiveDateTime`, `NaiveDate` | 4713 BC to chrono's end | years 1000 to 9999 (`DATETIME`, bound as such, never as a 1970–2038 `TIMESTAMP`) | chrono's whole range |
//! | `f32`, `f64` | all, NaN and ±∞ included | finite only | all but NaN (SQLite stores NaN as NULL) |
//! | `String` | no NUL character | any | any |
//! | `#[session(json)]` | no `\u0000` in the JSON (JSONB refuses it) | any | any |
//!
//! The library's own `expires_at` on MySQL is capped at 9999-12-31: a
//! lifetime longer than that lasts until then.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use uuid::Uuid;

/// The backend-neutral SQL type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// A boolean.
    Bool,
    /// A 16-bit signed integer.
    I16,
    /// A 32-bit signed integer.
    I32,
    /// A 64-bit signed integer.
    I64,
    /// A 64-bit unsigned integer (MySQL only).
    U64,
    /// A 32-bit float.
    F32,
    /// A 64-bit float.
    F64,
    /// UTF-8 text of any length.
    Text,
    /// Bytes of any length.
    Bytes,
    /// A JSON document (a `#[session(json)]` field).
    Json,
    /// An instant in UTC (`chrono::DateTime<Utc>`).
    Timestamp,
    /// A date and time without time zone (`chrono::NaiveDateTime`).
    DateTime,
    /// A calendar date (`chrono::NaiveDate`).
    Date,
    /// A UUID.
    Uuid,
}

/// One column value, borrowed from the session struct when written and owned
/// when read back.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// SQL `NULL` of a column of the given type (PostgreSQL needs the type to bind it).
    Null(SqlType),
    /// See [`SqlType::Bool`].
    Bool(bool),
    /// See [`SqlType::I16`].
    I16(i16),
    /// See [`SqlType::I32`].
    I32(i32),
    /// See [`SqlType::I64`].
    I64(i64),
    /// See [`SqlType::U64`].
    U64(u64),
    /// See [`SqlType::F32`].
    F32(f32),
    /// See [`SqlType::F64`].
    F64(f64),
    /// See [`SqlType::Text`].
    Text(Cow<'a, str>),
    /// See [`SqlType::Bytes`].
    Bytes(Cow<'a, [u8]>),
    /// See [`SqlType::Json`]: the serialized document.
    Json(Cow<'a, str>),
    /// See [`SqlType::Timestamp`].
    Timestamp(DateTime<Utc>),
    /// See [`SqlType::DateTime`].
    DateTime(NaiveDateTime),
    /// See [`SqlType::Date`].
    Date(NaiveDate),
    /// See [`SqlType::Uuid`].
    Uuid(Uuid),
}

impl Value<'_> {
    /// The same value, owning its text and bytes.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null(ty) => Value::Null(ty),
            Value::Bool(v) => Value::Bool(v),
            Value::I16(v) => Value::I16(v),
            Value::I32(v) => Value::I32(v),
            Value::I64(v) => Value::I64(v),
            Value::U64(v) => Value::U64(v),
            Value::F32(v) => Value::F32(v),
            Value::F64(v) => Value::F64(v),
            Value::Text(v) => Value::Text(Cow::Owned(v.into_owned())),
            Value::Bytes(v) => Value::Bytes(Cow::Owned(v.into_owned())),
            Value::Json(v) => Value::Json(Cow::Owned(v.into_owned())),
            Value::Timestamp(v) => Value::Timestamp(v),
            Value::DateTime(v) => Value::DateTime(v),
            Value::Date(v) => Value::Date(v),
            Value::Uuid(v) => Value::Uuid(v),
        }
    }

    /// The same value, borrowing its text and bytes: binding it copies
    /// them once, where binding a clone would copy them twice.
    pub fn reborrow(&self) -> Value<'_> {
        match self {
            Value::Text(v) => Value::Text(Cow::Borrowed(v)),
            Value::Bytes(v) => Value::Bytes(Cow::Borrowed(v)),
            Value::Json(v) => Value::Json(Cow::Borrowed(v)),
            Value::Null(ty) => Value::Null(*ty),
            Value::Bool(v) => Value::Bool(*v),
            Value::I16(v) => Value::I16(*v),
            Value::I32(v) => Value::I32(*v),
            Value::I64(v) => Value::I64(*v),
            Value::U64(v) => Value::U64(*v),
            Value::F32(v) => Value::F32(*v),
            Value::F64(v) => Value::F64(*v),
            Value::Timestamp(v) => Value::Timestamp(*v),
            Value::DateTime(v) => Value::DateTime(*v),
            Value::Date(v) => Value::Date(*v),
            Value::Uuid(v) => Value::Uuid(*v),
        }
    }

    /// The SQL type this value belongs to.
    pub fn sql_type(&self) -> SqlType {
        match self {
            Value::Null(ty) => *ty,
            Value::Bool(_) => SqlType::Bool,
            Value::I16(_) => SqlType::I16,
            Value::I32(_) => SqlType::I32,
            Value::I64(_) => SqlType::I64,
            Value::U64(_) => SqlType::U64,
            Value::F32(_) => SqlType::F32,
            Value::F64(_) => SqlType::F64,
            Value::Text(_) => SqlType::Text,
            Value::Bytes(_) => SqlType::Bytes,
            Value::Json(_) => SqlType::Json,
            Value::Timestamp(_) => SqlType::Timestamp,
            Value::DateTime(_) => SqlType::DateTime,
            Value::Date(_) => SqlType::Date,
            Value::Uuid(_) => SqlType::Uuid,
        }
    }
}

/// Why a database value could not become the field's Rust type.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// The column held a value of another type than the field maps to.
    #[error("expected a {expected:?} value, found {found:?}")]
    TypeMismatch {
        /// What the field maps to.
        expected: SqlType,
        /// What the row held.
        found: SqlType,
    },
    /// The column held NULL but the field is not an `Option`.
    #[error("found NULL in a column whose field is not an Option")]
    UnexpectedNull,
    /// The row had fewer columns than the struct has fields.
    #[error("the row has no value for this column")]
    MissingColumn,
    /// The value does not fit the field's Rust type (e.g. 300 for a `u8`).
    #[error("value {0} is out of range for the field's type")]
    OutOfRange(String),
    /// A JSON column did not deserialize into the field's type.
    #[error("invalid JSON for the field's type: {0}")]
    Json(#[from] serde_json::Error),
    /// Stored text that does not parse as the field's type (Redis keeps
    /// every value as text).
    #[error("stored value {0} does not parse as the field's type")]
    Unparsable(String),
    /// The field type's own decoding code (its `Deserialize`) panicked.
    #[error("the field type's decoding panicked: {0}")]
    Panicked(String),
}

/// A Rust type that is stored in one SQL column.
///
/// Implemented for every type in the [module table](self); a field of any
/// other type needs `#[session(json)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no SQL column mapping",
    label = "no column type for `{Self}`",
    note = "supported column types: bool, i8, i16, i32, i64, u8, u16, u32, u64 (MySQL only), f32, f64, String, Vec<u8>, chrono::DateTime<Utc>, chrono::NaiveDateTime, chrono::NaiveDate, uuid::Uuid and Option of those",
    note = "to store any serde type, mark the field `#[session(json)]`"
)]
pub trait Column: Sized {
    /// The column's SQL type.
    const SQL_TYPE: SqlType;
    /// Whether the column accepts NULL (only for `Option`).
    const NULLABLE: bool = false;
    /// The value to write.
    fn to_value(&self) -> Value<'_>;
    /// Rebuilds the field from what the database returned.
    fn from_value(value: Value<'static>) -> Result<Self, ValueError>;
}

/// A [`Column`] that is not itself nullable, so that `Option<T>` of it is
/// unambiguous (`Option<Option<T>>` would lose `Some(None)`).
#[diagnostic::on_unimplemented(
    message = "`Option<{Self}>` cannot be stored: `{Self}` is already nullable",
    label = "SQL NULL cannot tell `None` from `Some(None)`",
    note = "use a single `Option`, or mark the field `#[session(json)]` to keep both levels"
)]
pub trait NonNullColumn: Column {}

fn mismatch<T>(expected: SqlType, found: &Value<'_>) -> Result<T, ValueError> {
    match found {
        Value::Null(_) => Err(ValueError::UnexpectedNull),
        other => Err(ValueError::TypeMismatch {
            expected,
            found: other.sql_type(),
        }),
    }
}

/// Implements [`Column`] for a type stored losslessly in a wider SQL type.
macro_rules! widened_column {
    ($rust:ty => $variant:ident($wide:ty)) => {
        impl Column for $rust {
            const SQL_TYPE: SqlType = SqlType::$variant;
            fn to_value(&self) -> Value<'_> {
                Value::$variant(<$wide>::from(*self))
            }
            fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
                match value {
                    Value::$variant(wide) => <$rust>::try_from(wide)
                        .map_err(|_| ValueError::OutOfRange(wide.to_string())),
                    other => mismatch(SqlType::$variant, &other),
                }
            }
        }
        impl NonNullColumn for $rust {}
    };
}

/// Implements [`Column`] for a `Copy` type held as is in a [`Value`] variant.
macro_rules! copy_column {
    ($rust:ty => $variant:ident) => {
        impl Column for $rust {
            const SQL_TYPE: SqlType = SqlType::$variant;
            fn to_value(&self) -> Value<'_> {
                Value::$variant(*self)
            }
            fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
                match value {
                    Value::$variant(v) => Ok(v),
                    other => mismatch(SqlType::$variant, &other),
                }
            }
        }
        impl NonNullColumn for $rust {}
    };
}

copy_column!(bool => Bool);
copy_column!(i16 => I16);
copy_column!(i32 => I32);
copy_column!(i64 => I64);
copy_column!(u64 => U64);
copy_column!(f32 => F32);
copy_column!(f64 => F64);
copy_column!(DateTime<Utc> => Timestamp);
copy_column!(NaiveDateTime => DateTime);
copy_column!(NaiveDate => Date);
copy_column!(Uuid => Uuid);
widened_column!(i8 => I16(i16));
widened_column!(u8 => I16(i16));
widened_column!(u16 => I32(i32));
widened_column!(u32 => I64(i64));

impl Column for String {
    const SQL_TYPE: SqlType = SqlType::Text;
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Text(text) => Ok(text.into_owned()),
            other => mismatch(SqlType::Text, &other),
        }
    }
}
impl NonNullColumn for String {}

impl Column for Vec<u8> {
    const SQL_TYPE: SqlType = SqlType::Bytes;
    fn to_value(&self) -> Value<'_> {
        Value::Bytes(Cow::Borrowed(self))
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Bytes(bytes) => Ok(bytes.into_owned()),
            other => mismatch(SqlType::Bytes, &other),
        }
    }
}
impl NonNullColumn for Vec<u8> {}

impl<T: NonNullColumn> Column for Option<T> {
    const SQL_TYPE: SqlType = T::SQL_TYPE;
    const NULLABLE: bool = true;
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(inner) => inner.to_value(),
            None => Value::Null(T::SQL_TYPE),
        }
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Null(_) => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Encoding and decoding of `#[session(json)]` fields.
pub mod json {
    use super::{Cow, SqlType, Value, ValueError, mismatch};

    /// Serializes a `#[session(json)]` field.
    pub fn to_value<T: serde::Serialize>(field: &T) -> Result<Value<'static>, serde_json::Error> {
        serde_json::to_string(field).map(|text| Value::Json(Cow::Owned(text)))
    }

    /// Deserializes a `#[session(json)]` field.
    pub fn from_value<T: serde::de::DeserializeOwned>(
        value: Value<'static>,
    ) -> Result<T, ValueError> {
        match value {
            Value::Json(text) | Value::Text(text) => Ok(serde_json::from_str(&text)?),
            other => mismatch(SqlType::Json, &other),
        }
    }
}

/// A column type that every enabled backend stores losslessly.
///
/// The derive requires it of every field without `#[session(json)]`, under the
/// span of the field's type, so an unsupported type is one error at the field.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no SQL column on the enabled backends",
    label = "no column type for `{Self}`",
    note = "column types: bool, i8, i16, i32, i64, u8, u16, u32, f32, f64, String, Vec<u8>, chrono::DateTime<Utc>, chrono::NaiveDateTime, chrono::NaiveDate, uuid::Uuid, and Option of one of those",
    note = "`u64` has a column on MySQL only: PostgreSQL and SQLite integers are signed 64-bit, so with the `postgres` or `sqlite` feature use `i64`",
    note = "to store any other type, derive serde's `Serialize` and `Deserialize` for it and mark the field `#[session(json)]`"
)]
pub trait StorableColumn: Column + Clone {}

macro_rules! storable_everywhere {
    ($($t:ty),*) => {$( impl StorableColumn for $t {} )*};
}
storable_everywhere!(
    bool,
    i8,
    i16,
    i32,
    i64,
    u8,
    u16,
    u32,
    f32,
    f64,
    String,
    Vec<u8>,
    DateTime<Utc>,
    NaiveDateTime,
    NaiveDate,
    Uuid
);
#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
impl StorableColumn for u64 {}
impl<T: StorableColumn + NonNullColumn> StorableColumn for Option<T> {}
