//! The contract between `#[derive(Session)]` and the runtime.

use crate::{
    request::Handle,
    schema::Schema,
    sync::catch_panic,
    value::{Column, SqlType, StorableColumn, Value, ValueError},
};

/// The fields of a session struct that a request changed, by position.
///
/// A session struct has at most 64 fields (the derive says so at compile
/// time); group related values in a `#[session(json)]` field beyond that.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DirtyFields(u64);

impl DirtyFields {
    /// No field changed.
    pub const NONE: Self = Self(0);

    /// Marks field `index` as changed.
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    /// Whether field `index` changed.
    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    /// Whether no field changed.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets together.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The changed field positions, in order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |index| self.contains(*index))
    }

    /// The bits, e.g. to key a statement cache.
    pub fn bits(self) -> u64 {
        self.0
    }
}

/// Why a session struct could not be written as columns.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode field `{field}` of `{struct_name}` as JSON: {source}")]
pub struct EncodeError {
    /// The struct.
    pub struct_name: &'static str,
    /// The field.
    pub field: &'static str,
    /// What serde said.
    #[source]
    pub source: serde_json::Error,
}

/// Why a stored row could not become the session struct.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}` of table `{table}` does not decode into field `{field}`: {source}")]
pub struct DecodeError {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// The field.
    pub field: &'static str,
    /// What went wrong.
    #[source]
    pub source: ValueError,
}

/// Where the derive's decoder takes column values from, in column order.
pub trait ColumnSource {
    /// The value of the next column, `None` if the row has no more columns.
    fn next_value(&mut self) -> Option<Value<'static>>;
}

impl<I: Iterator<Item = Value<'static>>> ColumnSource for I {
    fn next_value(&mut self) -> Option<Value<'static>> {
        self.next()
    }
}

/// How the generated code handles one field of type `F`: its column type and
/// the functions that encode, decode and clone it.
///
/// The derive builds one per field, as a constant under the span of the
/// field's type, through [`column`](Self::column) or [`json`](Self::json): the
/// only places where the field type's traits are required. Everything else
/// goes through these function pointers, so a type that does not fit is
/// reported once, at the field.
#[doc(hidden)]
pub struct FieldCodec<F> {
    /// The column's SQL type.
    pub sql_type: SqlType,
    /// Whether the column is nullable.
    pub nullable: bool,
    /// Field to column value.
    pub encode: for<'a> fn(&'a F) -> Result<Value<'a>, serde_json::Error>,
    /// Column value to field.
    pub decode: fn(Value<'static>) -> Result<F, ValueError>,
    /// Field clone.
    pub clone: fn(&F) -> F,
}

impl<F> FieldCodec<F> {
    /// A field stored in its own SQL type.
    pub const fn column() -> Self
    where
        F: StorableColumn,
    {
        fn encode<F: Column>(field: &F) -> Result<Value<'_>, serde_json::Error> {
            Ok(field.to_value())
        }
        Self {
            sql_type: F::SQL_TYPE,
            nullable: F::NULLABLE,
            encode: encode::<F>,
            decode: F::from_value,
            clone: F::clone,
        }
    }

    /// A `#[session(json)]` field. Its serde code is the app's: a panic in
    /// it becomes this field's encode or decode error, so that it fails only
    /// the request (or the row) it belongs to, never a task that serves
    /// other sessions too.
    pub const fn json() -> Self
    where
        F: JsonField,
    {
        fn encode<F: JsonField>(field: &F) -> Result<Value<'static>, serde_json::Error> {
            catch_panic(|| crate::value::json::to_value(field)).unwrap_or_else(|message| {
                Err(serde::ser::Error::custom(format_args!(
                    "its Serialize panicked: {message}"
                )))
            })
        }
        fn decode<F: JsonField>(value: Value<'static>) -> Result<F, ValueError> {
            catch_panic(|| crate::value::json::from_value::<F>(value))
                .unwrap_or_else(|message| Err(ValueError::Panicked(message)))
        }
        Self {
            sql_type: SqlType::Json,
            nullable: false,
            encode: encode::<F>,
            decode: decode::<F>,
            clone: F::clone,
        }
    }
}

impl<F> std::fmt::Debug for FieldCodec<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCodec")
            .field("sql_type", &self.sql_type)
            .field("nullable", &self.nullable)
            .finish_non_exhaustive()
    }
}

/// Encodes field `index` (called by generated code).
#[doc(hidden)]
pub fn encode_field<'a, F>(
    codec: &FieldCodec<F>,
    field: &'a F,
    schema: &Schema,
    index: usize,
) -> Result<Value<'a>, EncodeError> {
    (codec.encode)(field).map_err(|source| EncodeError {
        struct_name: schema.struct_name,
        field: schema.column(index).field,
        source,
    })
}

/// Decodes the next column into field `index` (called by generated code).
#[doc(hidden)]
pub fn decode_field<F>(
    codec: &FieldCodec<F>,
    source: &mut dyn ColumnSource,
    schema: &Schema,
    index: usize,
) -> Result<F, DecodeError> {
    let column = schema.column(index);
    let error = |source| DecodeError {
        table: schema.table,
        column: column.name,
        field: column.field,
        source,
    };
    let value = source
        .next_value()
        .ok_or_else(|| error(ValueError::MissingColumn))?;
    (codec.decode)(value).map_err(error)
}

/// A struct that `#[derive(Session)]` turned into a session.
///
/// Do not implement this by hand: the derive generates it, together with the
/// accessors reached through [`Session<T>`](struct@crate::Session).
pub trait SessionData: Default + Send + Sync + Sized + 'static {
    /// The generated type that carries the getters, setters and
    /// `update_<field>` methods; [`Session<T>`](struct@crate::Session) derefs to it.
    type Accessors: From<Handle<Self>> + AsRef<Handle<Self>> + Send + Sync + 'static;

    /// The table and its columns.
    const SCHEMA: Schema;

    /// The value of field `index` as a column value.
    fn encode_column(&self, index: usize) -> Result<Value<'_>, EncodeError>;

    /// Builds the struct from its columns, in field order.
    fn decode_columns(source: &mut dyn ColumnSource) -> Result<Self, DecodeError>;

    /// A field-by-field clone (fields are `Clone`; the struct need not be).
    fn duplicate(&self) -> Self;

    /// Copies the fields in `fields` from `self` into `target`.
    fn copy_fields(&self, target: &mut Self, fields: DirtyFields);
}

/// A field type that can be stored with `#[session(json)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored as JSON: it is not `Serialize + DeserializeOwned + Clone`",
    label = "`#[session(json)]` needs serde on this type",
    note = "add `#[derive(serde::Serialize, serde::Deserialize, Clone)]` to the type, or remove `#[session(json)]` if it has a column mapping"
)]
pub trait JsonField: serde::Serialize + serde::de::DeserializeOwned + Clone {}
impl<T: serde::Serialize + serde::de::DeserializeOwned + Clone> JsonField for T {}
