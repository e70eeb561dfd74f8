//! Names the derive and the runtime crate must agree on, defined once here
//! and handed to the runtime crate through hidden macros (`lib.rs`).

/// The library's own columns, in every session table before the fields.
pub(crate) const LIBRARY_COLUMNS: [&str; 5] =
    ["id", "expires_at", "version", "created_at", "remember"];

/// The inherent methods of `Session<T>`. A generated accessor with one of
/// these names would be hidden by it: `Session<T>` derefs to the accessors,
/// and method lookup finds the inherent method first. The runtime crate's
/// tests check this list against the methods `extract.rs` defines.
pub(crate) const SESSION_METHODS: [&str; 12] = [
    "get",
    "update",
    "id",
    "expires_at",
    "created_at",
    "is_stored",
    "set_remember",
    "is_remembered",
    "set_store",
    "is_storable",
    "destroy",
    "renew",
];
