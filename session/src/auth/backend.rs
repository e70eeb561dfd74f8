//! The backend traits, with axum-login 0.18's names and signatures: a
//! backend written for axum-login implements these unchanged.

use std::{
    collections::HashSet,
    fmt::{Debug, Display},
    future::Future,
    hash::Hash,
};

use serde::{Serialize, de::DeserializeOwned};

/// The id type of a backend's users.
pub type UserId<B> = <<B as AuthnBackend>::User as AuthUser>::Id;

/// A user that can sign in.
///
/// ```
/// use axum_typed_session::auth::AuthUser;
///
/// #[derive(Clone)]
/// struct User {
///     id: i64,
///     name: String,
///     password_hash: String,
/// }
///
/// // Debug by hand, so that no log line can show the password's hash.
/// impl std::fmt::Debug for User {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.debug_struct("User").field("id", &self.id).finish_non_exhaustive()
///     }
/// }
///
/// impl AuthUser for User {
///     type Id = i64;
///
///     fn id(&self) -> i64 {
///         self.id
///     }
///
///     // Changes when the password does: every session signed in with the
///     // old password is signed out on its next request.
///     fn session_auth_hash(&self) -> &[u8] {
///         self.password_hash.as_bytes()
///     }
/// }
/// ```
pub trait AuthUser: Debug + Clone + Send + Sync {
    /// What identifies the user. It is stored, as its JSON text, in the
    /// session's indexed `user_id` column (`42`, or `"ada"` with the
    /// quotes), so "the sessions of user 42" is one indexed query.
    type Id: Debug + Display + Clone + Send + Sync + Serialize + DeserializeOwned;

    /// The user's id.
    fn id(&self) -> Self::Id;

    /// Bytes that change when the user's credentials do (the password hash,
    /// or a value derived from it). Stored with the session at sign-in and
    /// compared, in constant time, on every request: a mismatch signs the
    /// session out.
    fn session_auth_hash(&self) -> &[u8];
}

/// Checks credentials and finds users.
///
/// ```
/// use std::collections::HashMap;
/// use axum_typed_session::auth::{AuthUser, AuthnBackend, UserId};
///
/// #[derive(Clone, Debug)]
/// struct User {
///     id: i64,
///     password: String,
/// }
///
/// impl AuthUser for User {
///     type Id = i64;
///     fn id(&self) -> i64 { self.id }
///     fn session_auth_hash(&self) -> &[u8] { self.password.as_bytes() }
/// }
///
/// #[derive(Clone)]
/// struct Backend {
///     users: HashMap<i64, User>,
/// }
///
/// struct Credentials {
///     id: i64,
///     password: String,
/// }
///
/// impl AuthnBackend for Backend {
///     type User = User;
///     type Credentials = Credentials;
///     type Error = std::convert::Infallible;
///
///     async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, Self::Error> {
///         // A real backend compares a password hash (see the `auth` example).
///         Ok(self.users.get(&creds.id).filter(|user| user.password == creds.password).cloned())
///     }
///
///     async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Self::Error> {
///         Ok(self.users.get(id).cloned())
///     }
/// }
/// ```
pub trait AuthnBackend: Clone + Send + Sync {
    /// The backend's user type.
    type User: AuthUser;

    /// What a sign-in form or API call submits.
    type Credentials: Send + Sync;

    /// The backend's own failure (a database error, say). Wrong credentials
    /// are not an error: [`authenticate`](Self::authenticate) answers `None`.
    type Error: std::error::Error + Send + Sync;

    /// The user these credentials belong to, or `None` if they are wrong.
    fn authenticate(
        &self,
        creds: Self::Credentials,
    ) -> impl Future<Output = Result<Option<Self::User>, Self::Error>> + Send;

    /// The user with this id, or `None` if there is none (any more).
    fn get_user(
        &self,
        user_id: &UserId<Self>,
    ) -> impl Future<Output = Result<Option<Self::User>, Self::Error>> + Send;
}

/// Permissions, for [`permission_required`](crate::permission_required!).
/// Every method has a default, so an implementation names only what it has.
///
/// ```
/// use std::collections::HashSet;
/// # use axum_typed_session::auth::{AuthUser, AuthnBackend, UserId};
/// use axum_typed_session::auth::AuthzBackend;
/// # #[derive(Clone, Debug)]
/// # struct User { id: i64, admin: bool }
/// # impl AuthUser for User {
/// #     type Id = i64;
/// #     fn id(&self) -> i64 { self.id }
/// #     fn session_auth_hash(&self) -> &[u8] { &[] }
/// # }
/// # #[derive(Clone)]
/// # struct Backend;
/// # impl AuthnBackend for Backend {
/// #     type User = User;
/// #     type Credentials = ();
/// #     type Error = std::convert::Infallible;
/// #     async fn authenticate(&self, _: ()) -> Result<Option<User>, Self::Error> { Ok(None) }
/// #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
/// # }
///
/// impl AuthzBackend for Backend {
///     type Permission = &'static str;
///
///     async fn get_user_permissions(&self, user: &User) -> Result<HashSet<&'static str>, Self::Error> {
///         Ok(if user.admin { HashSet::from(["admin.read"]) } else { HashSet::new() })
///     }
/// }
/// ```
pub trait AuthzBackend: AuthnBackend {
    /// One permission.
    type Permission: Hash + Eq + Send + Sync;

    /// The permissions granted to the user directly.
    fn get_user_permissions(
        &self,
        _user: &Self::User,
    ) -> impl Future<Output = Result<HashSet<Self::Permission>, Self::Error>> + Send {
        async { Ok(HashSet::new()) }
    }

    /// The permissions the user has through its groups.
    fn get_group_permissions(
        &self,
        _user: &Self::User,
    ) -> impl Future<Output = Result<HashSet<Self::Permission>, Self::Error>> + Send {
        async { Ok(HashSet::new()) }
    }

    /// Both of the above.
    fn get_all_permissions(
        &self,
        user: &Self::User,
    ) -> impl Future<Output = Result<HashSet<Self::Permission>, Self::Error>> + Send {
        async move {
            let mut all = self.get_user_permissions(user).await?;
            all.extend(self.get_group_permissions(user).await?);
            Ok(all)
        }
    }

    /// Whether the user has `perm`, directly or through a group.
    fn has_perm(
        &self,
        user: &Self::User,
        perm: Self::Permission,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        async move { Ok(self.get_all_permissions(user).await?.contains(&perm)) }
    }
}
