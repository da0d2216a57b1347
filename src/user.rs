//! The application's users: the [`AuthUser`] and [`UserStore`] traits, and
//! [`MemoryUserStore`] for tests and examples.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use crate::scope::Scopes;

/// A boxed error from the application's user store: logged, never sent to
/// a client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the crate needs to know about a user.
///
/// ```
/// use tower_auth::{AuthUser, Scopes};
///
/// struct User { id: String, name: String, hash: String, disabled: bool }
///
/// impl AuthUser for User {
///     fn subject(&self) -> &str { &self.id }
///     fn username(&self) -> &str { &self.name }
///     fn password_hash(&self) -> Option<&str> { Some(&self.hash) }
///     fn is_active(&self) -> bool { !self.disabled }
///     fn allowed_scopes(&self) -> Scopes { Scopes::parse("me items").unwrap() }
/// }
/// ```
pub trait AuthUser: Send + Sync + 'static {
    /// The stable id that goes into a token's `sub`.
    fn subject(&self) -> &str;

    /// The name the user logs in with. Defaults to the subject.
    fn username(&self) -> &str {
        self.subject()
    }

    /// The stored argon2 PHC string, or `None` for a user who cannot log in
    /// with a password.
    fn password_hash(&self) -> Option<&str>;

    /// Whether the user may log in and use tokens. Defaults to `true`.
    fn is_active(&self) -> bool {
        true
    }

    /// The scopes the login endpoint may grant this user, and the most a
    /// token of theirs may use: on every request the scopes in effect are
    /// the token's scopes that this still lists (see
    /// [the scopes in effect](crate::scope#the-scopes-in-effect-for-a-request)).
    /// Called on every request whose token carries scopes: return a clone of
    /// a stored [`Scopes`] (one `Arc`), not a freshly parsed one. Defaults
    /// to none.
    fn allowed_scopes(&self) -> Scopes {
        Scopes::none()
    }

    /// The current token version. Raise it (on a password change, "log out
    /// everywhere") and every token issued before is revoked. Defaults to 0.
    fn token_version(&self) -> u64 {
        0
    }

    /// A copy of this user whose stored password hash is `phc`, everything
    /// else (subject, username, token version) unchanged; `None` (the
    /// default) when the type cannot hold a new hash. [`MemoryUserStore`]
    /// uses it to keep the hash a login rehashed with the current argon2
    /// parameters (see [`UserStore::update_password_hash`]); a store backed
    /// by a database writes the hash itself and needs nothing here.
    fn with_password_hash(&self, phc: String) -> Option<Self>
    where
        Self: Sized,
    {
        let _ = phc;
        None
    }
}

/// What [`UserStore::update_password_hash`] did with a new hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordUpdate {
    /// The user's stored hash is now the new one.
    Updated,
    /// The user's stored hash is no longer the one that was verified (the
    /// password changed meanwhile, or the user is gone): nothing was
    /// written.
    Stale,
    /// This store does not keep new hashes (the default): the
    /// authenticator stops rehashing for it.
    Unsupported,
}

/// Where the application keeps its users. Implement it with `async fn`s:
///
/// ```
/// use std::sync::Arc;
/// use tower_auth::{SimpleUser, UserStore};
///
/// struct Db;
///
/// impl UserStore for Db {
///     type User = SimpleUser;
///     type Error = std::io::Error;
///
///     async fn find_by_subject(&self, sub: &str) -> Result<Option<Arc<SimpleUser>>, std::io::Error> {
///         Ok(None) // SELECT … WHERE id = $1, then `.map(Arc::new)`
///     }
///
///     async fn find_by_username(&self, username: &str) -> Result<Option<Arc<SimpleUser>>, std::io::Error> {
///         Ok(None) // SELECT … WHERE username = $1
///     }
/// }
/// ```
///
/// Users come back behind an [`Arc`]: the one loaded user is shared by the
/// request's [`Authenticated`](crate::Authenticated), every extractor that
/// hands it to a handler and any cache the store keeps, without copying its
/// fields. A store that holds its users in memory (or caches them) returns
/// a clone of its `Arc`; one that reads a database wraps the row it read.
pub trait UserStore: Send + Sync + 'static {
    /// The user type.
    type User: AuthUser;
    /// The store's error; logged, never sent to a client. Any error that
    /// converts into [`BoxError`]: every `std::error::Error + Send + Sync`,
    /// `Box<dyn Error + Send + Sync>` itself (what most database layers
    /// return) and `anyhow::Error`.
    type Error: Into<BoxError> + Send + 'static;

    /// Loads the user a token's `sub` names. Runs on every authenticated
    /// request.
    fn find_by_subject(
        &self,
        sub: &str,
    ) -> impl Future<Output = Result<Option<Arc<Self::User>>, Self::Error>> + Send;

    /// Loads the user a login names.
    fn find_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<Arc<Self::User>>, Self::Error>> + Send;

    /// Replaces `user`'s stored password hash by `new_hash`, a PHC string of
    /// the same password made with the current argon2 parameters, after a
    /// successful login found the stored one outdated
    /// ([`PasswordHasher::needs_rehash`](crate::PasswordHasher::needs_rehash)).
    /// Runs in a task of its own, after the login was answered; it must not
    /// raise the token version (the user stays logged in everywhere).
    ///
    /// Write only if the stored hash is still `user.password_hash()`, the
    /// one that was verified, and answer [`PasswordUpdate::Stale`]
    /// otherwise: a password changed meanwhile must not be reverted. In SQL:
    /// `UPDATE users SET password_hash = $new WHERE id = $id AND
    /// password_hash = $old`.
    ///
    /// The default writes nothing and answers
    /// [`PasswordUpdate::Unsupported`]; the authenticator then stops
    /// rehashing for this store after that first attempt.
    fn update_password_hash(
        &self,
        user: &Self::User,
        new_hash: String,
    ) -> impl Future<Output = Result<PasswordUpdate, Self::Error>> + Send {
        let _ = (user, new_hash);
        std::future::ready(Ok(PasswordUpdate::Unsupported))
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`UserStore`] with its store type erased, so an
/// [`Authenticator`](crate::Authenticator) is generic over the user only.
pub(crate) trait DynUserStore<U>: Send + Sync {
    fn find_by_subject<'a>(
        &'a self,
        sub: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<U>>, BoxError>>;
    fn find_by_username<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<U>>, BoxError>>;
    fn update_password_hash<'a>(
        &'a self,
        user: &'a U,
        new_hash: String,
    ) -> BoxFuture<'a, Result<PasswordUpdate, BoxError>>;
}

impl<S: UserStore> DynUserStore<S::User> for S {
    fn find_by_subject<'a>(
        &'a self,
        sub: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<S::User>>, BoxError>> {
        Box::pin(async move {
            UserStore::find_by_subject(self, sub)
                .await
                .map_err(Into::into)
        })
    }

    fn find_by_username<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<S::User>>, BoxError>> {
        Box::pin(async move {
            UserStore::find_by_username(self, username)
                .await
                .map_err(Into::into)
        })
    }

    fn update_password_hash<'a>(
        &'a self,
        user: &'a S::User,
        new_hash: String,
    ) -> BoxFuture<'a, Result<PasswordUpdate, BoxError>> {
        Box::pin(async move {
            UserStore::update_password_hash(self, user, new_hash)
                .await
                .map_err(Into::into)
        })
    }
}

/// A ready-made user for examples and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleUser {
    /// The subject and login name.
    pub username: String,
    /// The argon2 PHC string.
    pub password_hash: String,
    /// Whether the user may log in.
    pub active: bool,
    /// The scopes the user may be granted.
    pub scopes: Scopes,
    /// The token version.
    pub token_version: u64,
}

impl SimpleUser {
    /// An active user with no scopes and token version 0.
    pub fn new(username: impl Into<String>, password_hash: impl Into<String>) -> Self {
        SimpleUser {
            username: username.into(),
            password_hash: password_hash.into(),
            active: true,
            scopes: Scopes::none(),
            token_version: 0,
        }
    }

    /// Sets the scopes the user may be granted.
    pub fn with_scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }
}

impl AuthUser for SimpleUser {
    fn subject(&self) -> &str {
        &self.username
    }

    fn password_hash(&self) -> Option<&str> {
        Some(&self.password_hash)
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn allowed_scopes(&self) -> Scopes {
        self.scopes.clone()
    }

    fn token_version(&self) -> u64 {
        self.token_version
    }

    fn with_password_hash(&self, phc: String) -> Option<Self> {
        Some(SimpleUser {
            password_hash: phc,
            ..self.clone()
        })
    }
}

/// Users held in memory, keyed by subject, with a username index. Cheap to
/// clone: clones share the same users, so a test can change a user while a
/// server runs. Each user is kept behind an [`Arc`], so a lookup copies no
/// fields.
///
/// ```
/// use tower_auth::{MemoryUserStore, SimpleUser};
///
/// let store = MemoryUserStore::new();
/// store.insert(SimpleUser::new("johndoe", "$argon2id$…"));
/// store.update("johndoe", |u| u.active = false);
/// ```
#[derive(Clone)]
pub struct MemoryUserStore<U> {
    users: Arc<RwLock<Users<U>>>,
}

/// Hashed with foldhash, randomly seeded: the subject of every
/// authenticated request is looked up here. Only the application inserts.
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

struct Users<U> {
    by_subject: Map<Arc<U>>,
    subject_by_username: Map<String>,
}

impl<U: AuthUser> Users<U> {
    fn insert(&mut self, user: U) {
        let subject = user.subject().to_owned();
        if let Some(old) = self.by_subject.get(&subject) {
            let old_name = old.username().to_owned();
            self.subject_by_username.remove(&old_name);
        }
        self.subject_by_username
            .insert(user.username().to_owned(), subject.clone());
        self.by_subject.insert(subject, Arc::new(user));
    }
}

impl<U: AuthUser> Default for MemoryUserStore<U> {
    fn default() -> Self {
        Self::new()
    }
}

impl<U: AuthUser> MemoryUserStore<U> {
    /// An empty store.
    pub fn new() -> Self {
        MemoryUserStore {
            users: Arc::new(RwLock::new(Users {
                by_subject: Map::default(),
                subject_by_username: Map::default(),
            })),
        }
    }

    /// Adds or replaces a user.
    pub fn insert(&self, user: U) {
        self.write().insert(user);
    }

    /// Changes a copy of the user with this subject and stores it in the
    /// user's place (requests already holding the user keep the old one);
    /// returns whether the user exists.
    pub fn update(&self, subject: &str, change: impl FnOnce(&mut U)) -> bool
    where
        U: Clone,
    {
        let Some(user) = self.get(subject) else {
            return false;
        };
        let mut user = U::clone(&user);
        change(&mut user);
        self.insert(user);
        true
    }

    /// Removes the user with this subject.
    pub fn remove(&self, subject: &str) -> Option<Arc<U>> {
        let mut users = self.write();
        let user = users.by_subject.remove(subject)?;
        users.subject_by_username.remove(user.username());
        Some(user)
    }

    /// The user with this subject.
    pub fn get(&self, subject: &str) -> Option<Arc<U>> {
        self.read().by_subject.get(subject).cloned()
    }

    // A panic elsewhere while holding the lock leaves the maps consistent
    // (every change is one insert or remove), so a poisoned lock is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Users<U>> {
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Users<U>> {
        self.users
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<U: AuthUser> UserStore for MemoryUserStore<U> {
    type User = U;
    type Error = Infallible;

    async fn find_by_subject(&self, sub: &str) -> Result<Option<Arc<U>>, Infallible> {
        Ok(self.get(sub))
    }

    async fn find_by_username(&self, username: &str) -> Result<Option<Arc<U>>, Infallible> {
        let users = self.read();
        Ok(users
            .subject_by_username
            .get(username)
            .and_then(|sub| users.by_subject.get(sub))
            .cloned())
    }

    /// Stores the new hash through [`AuthUser::with_password_hash`] if the
    /// user's hash is still the one `user` holds ([`PasswordUpdate::Stale`]
    /// otherwise); [`PasswordUpdate::Unsupported`] when `U` cannot hold a
    /// new hash.
    async fn update_password_hash(
        &self,
        user: &U,
        new_hash: String,
    ) -> Result<PasswordUpdate, Infallible> {
        let mut users = self.write();
        let Some(current) = users.by_subject.get(user.subject()) else {
            return Ok(PasswordUpdate::Stale);
        };
        if current.password_hash() != user.password_hash() {
            return Ok(PasswordUpdate::Stale);
        }
        let Some(updated) = current.with_password_hash(new_hash) else {
            return Ok(PasswordUpdate::Unsupported);
        };
        users.insert(updated);
        Ok(PasswordUpdate::Updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lookups_share_the_stored_user_and_updates_replace_it() {
        let store = MemoryUserStore::new();
        store.insert(SimpleUser::new("johndoe", "$argon2id$…"));
        let by_subject = UserStore::find_by_subject(&store, "johndoe")
            .await
            .unwrap()
            .unwrap();
        let by_username = UserStore::find_by_username(&store, "johndoe")
            .await
            .unwrap()
            .unwrap();
        assert!(
            Arc::ptr_eq(&by_subject, &by_username),
            "a lookup copied the user"
        );

        assert!(store.update("johndoe", |u| u.active = false));
        assert!(
            by_subject.active,
            "a user already handed out changed under its holder"
        );
        let after = UserStore::find_by_subject(&store, "johndoe")
            .await
            .unwrap()
            .unwrap();
        assert!(!after.active);
        assert!(!store.update("nobody", |u| u.active = false));
    }

    #[tokio::test]
    async fn a_new_hash_replaces_only_the_hash_that_was_verified() {
        let store = MemoryUserStore::new();
        store.insert(SimpleUser::new("johndoe", "old"));
        let verified = store.get("johndoe").unwrap();
        assert_eq!(
            UserStore::update_password_hash(&store, &verified, "new".into()).await,
            Ok(PasswordUpdate::Updated)
        );
        let now = store.get("johndoe").unwrap();
        assert_eq!(now.password_hash, "new");
        assert_eq!((now.active, now.token_version), (true, 0));
        // The password changed since `verified` was loaded: not reverted.
        assert_eq!(
            UserStore::update_password_hash(&store, &verified, "newer".into()).await,
            Ok(PasswordUpdate::Stale)
        );
        assert_eq!(store.get("johndoe").unwrap().password_hash, "new");
        store.remove("johndoe");
        assert_eq!(
            UserStore::update_password_hash(&store, &now, "newer".into()).await,
            Ok(PasswordUpdate::Stale)
        );
    }

    #[tokio::test]
    async fn users_that_cannot_hold_a_new_hash_are_unsupported() {
        struct Fixed;
        impl AuthUser for Fixed {
            fn subject(&self) -> &str {
                "fixed"
            }
            fn password_hash(&self) -> Option<&str> {
                Some("old")
            }
        }
        let store = MemoryUserStore::new();
        store.insert(Fixed);
        assert_eq!(
            UserStore::update_password_hash(&store, &Fixed, "new".into()).await,
            Ok(PasswordUpdate::Unsupported)
        );
    }
}
