//! Sessions: what a login starts and a logout ends, and the state that must
//! be shared by every instance of an app — refresh-token families and
//! revoked sessions — behind one store trait, [`SessionStore`].
//!
//! # A session
//!
//! Every login starts a session with a random id, carried in its access
//! tokens as the `sid` claim (and kept by sliding renewal). Logging out
//! revokes the session: the store remembers the id as revoked until every
//! access token that could carry it has expired (at most one access-token
//! lifetime after the revocation: a revoked session is never renewed), and
//! the [`Authenticator`](crate::Authenticator) refuses those tokens from the
//! next request on. The user's other sessions are untouched.
//!
//! # Refresh-token families (RFC 6749 §6, RFC 9700 §4.14)
//!
//! With refresh tokens turned on, a login's session also gets a *family*:
//! the refresh tokens descended from that login. A refresh token is 256
//! random bits, base64url; the store keeps only its BLAKE2b hash
//! ([`TokenHash`]), never the token.
//!
//! - **Rotation.** A refresh gives a new refresh token (the *successor*) and
//!   spends the presented one.
//! - **Reuse.** A spent token presented again is theft or a replay: the whole
//!   family is revoked, with its session (its access tokens stop working).
//! - **Grace.** Within a short window after a token was spent, the same token
//!   presented again (two tabs refreshing at once, a retried request) gets the
//!   *same* successor instead of killing the session. The successor is
//!   derived, not stored: a keyed BLAKE2b of the presented token under the
//!   family's own random key. Only a holder of the presented token can
//!   derive it, the store needs no plaintext, and two instances racing on one
//!   token derive the same successor.
//! - **Lifetime.** A family ends after an idle timeout (no refresh for that
//!   long) or at an absolute lifetime counted from the login (`auth_time`),
//!   whichever comes first; and when it is revoked (reuse, logout, the
//!   user disabled or their token version raised, a password change).
//!
//! The store's [`rotate`](SessionStore::rotate) decides rotation, grace and
//! reuse in one atomic step, so two requests (or two instances) racing on
//! one token behave exactly as one would.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::digest::consts::U32;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2b, Blake2bMac};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::credentials::SessionCookie;
use crate::scope::Scopes;
use crate::user::BoxError;

/// Turns refresh tokens on, and says how long their families live; see the
/// [module docs](self). Give it to
/// [`AuthenticatorBuilder::refresh_tokens`](crate::AuthenticatorBuilder::refresh_tokens).
///
/// Defaults: a family ends after 14 days without a refresh and 30 days
/// after the login at the latest; a spent token presented again within
/// 5 seconds gets the same successor; tokens travel in the token response's
/// body (`refresh_token`), unless [`cookie`](Self::cookie) is set.
///
/// ```
/// use std::time::Duration;
/// use tower_auth::SessionCookie;
/// use tower_auth::session::RefreshTokens;
///
/// let refresh = RefreshTokens::new()
///     .idle_timeout(Duration::from_secs(7 * 24 * 3600))
///     .absolute_lifetime(Duration::from_secs(30 * 24 * 3600))
///     .grace(Duration::from_secs(10))
///     // Browsers: in an HttpOnly cookie sent to the token endpoint only.
///     .cookie(SessionCookie::new("__Secure-refresh_token").path("/token"));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RefreshTokens {
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_lifetime: Duration,
    pub(crate) grace: Duration,
    pub(crate) cookie: Option<SessionCookie>,
}

impl Default for RefreshTokens {
    fn default() -> Self {
        Self::new()
    }
}

impl RefreshTokens {
    /// Refresh tokens with the defaults above.
    pub fn new() -> Self {
        RefreshTokens {
            idle_timeout: Duration::from_secs(14 * 24 * 3600),
            absolute_lifetime: Duration::from_secs(30 * 24 * 3600),
            grace: Duration::from_secs(5),
            cookie: None,
        }
    }

    /// How long a family lives without a refresh.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// How long a family lives after the login (`auth_time`), whatever
    /// happens.
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = lifetime;
        self
    }

    /// How long after a refresh token was spent a concurrent refresh with
    /// it (two tabs, a retried request) gets the same successor instead of
    /// being treated as reuse. Keep it to a few seconds: within it, a thief
    /// holding the spent token is not detected.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sends refresh tokens to browsers in this `HttpOnly` cookie instead
    /// of the response body, and reads the refresh grant's token from it.
    /// Scope it to the token endpoint's path
    /// ([`SessionCookie::path`]) so that no other request carries it; a
    /// `__Host-` name cannot have a path, so use `__Secure-`. A refresh
    /// grant whose token comes from the cookie must pass the Origin guard
    /// as a cookie-authenticated `POST` does.
    pub fn cookie(mut self, cookie: SessionCookie) -> Self {
        self.cookie = Some(cookie);
        self
    }

    pub(crate) fn validate(&self, access_lifetime: Duration) -> Result<(), ConfigError> {
        if self.idle_timeout.as_secs() == 0 || self.absolute_lifetime < access_lifetime {
            return Err(ConfigError::Lifetime(
                "refresh tokens need a positive idle timeout and an absolute lifetime of at least the access-token lifetime",
            ));
        }
        if self.grace >= self.idle_timeout || self.grace > Duration::from_secs(60) {
            return Err(ConfigError::Lifetime(
                "the refresh grace window must be at most a minute and shorter than the idle timeout",
            ));
        }
        if let Some(cookie) = &self.cookie {
            cookie.validate()?;
        }
        Ok(())
    }
}

/// The length of a refresh token's random part, in bytes (256 bits).
const TOKEN_BYTES: usize = 32;

/// A refresh token: 256 bits, base64url without padding (43 characters).
/// `Debug` hides it; nothing in this crate logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

impl RefreshToken {
    /// A fresh random token.
    pub(crate) fn generate() -> Result<Self, StoreError> {
        Ok(Self::from_bytes(&random_bytes()?))
    }

    /// A token as a client presented it, if it has the shape of one (so a
    /// malformed token never reaches the store).
    pub fn parse(presented: &str) -> Option<Self> {
        let mut bytes = [0u8; TOKEN_BYTES];
        let decoded = Base64UrlUnpadded::decode(presented, &mut bytes).ok()?;
        (decoded.len() == TOKEN_BYTES).then(|| Self(presented.to_owned()))
    }

    /// The token text, to send to its client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps instead of the token.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Blake2b::<U32>::digest(self.0.as_bytes()).into())
    }

    /// The token that replaces this one in `family`: a keyed BLAKE2b of this
    /// token under the family's key. The same token always has the same
    /// successor, which is what lets a concurrent refresh within the grace
    /// window get it too.
    pub(crate) fn successor(&self, family_key: &FamilyKey) -> Self {
        // A 32-byte key is within BLAKE2b's 64-byte limit: this cannot fail.
        let mut mac = <Blake2bMac<U32> as KeyInit>::new_from_slice(&family_key.0)
            .unwrap_or_else(|_| unreachable!("a 32-byte BLAKE2b key is valid"));
        mac.update(self.0.as_bytes());
        Self::from_bytes(&mac.finalize().into_bytes().into())
    }

    fn from_bytes(bytes: &[u8; TOKEN_BYTES]) -> Self {
        Self(Base64UrlUnpadded::encode_string(bytes))
    }
}

/// The BLAKE2b-256 hash of a refresh token: what a [`SessionStore`] keys
/// refresh tokens by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

impl fmt::Display for TokenHash {
    /// base64url, for store keys and logs (a hash reveals nothing usable).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Base64UrlUnpadded::encode_string(&self.0))
    }
}

/// A family's own random key, from which successors are derived. `Debug`
/// hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyKey(pub [u8; 32]);

impl fmt::Debug for FamilyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FamilyKey([redacted])")
    }
}

impl FamilyKey {
    pub(crate) fn generate() -> Result<Self, StoreError> {
        Ok(Self(random_bytes()?))
    }
}

fn random_bytes() -> Result<[u8; TOKEN_BYTES], StoreError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| StoreError::new(format!("no randomness: {err}")))?;
    Ok(bytes)
}

/// A new random session id (128 bits, hex): the `sid` claim.
pub(crate) fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A refresh-token family: one login's chain of refresh tokens, as a
/// [`SessionStore`] keeps it. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    /// The session the family belongs to (the access tokens' `sid`).
    pub sid: String,
    /// The user (`sub`).
    pub subject: String,
    /// The scopes granted at login; a refresh may narrow them, never widen.
    pub scope: Scopes,
    /// The user's token version at login; a raised version ends the family.
    pub token_version: u64,
    /// When the user logged in with a password.
    pub auth_time: u64,
    /// When the family ends, whatever happens: `auth_time` + the absolute
    /// lifetime.
    pub absolute_expiry: u64,
    /// The idle timeout in seconds: the family ends this long after its last
    /// refresh (or the login).
    pub idle_timeout: u64,
    /// When the family last issued a token.
    pub last_used: u64,
    /// The key successors are derived with.
    pub key: FamilyKey,
    /// The token that may be used now.
    pub current: TokenHash,
    /// The token spent last, and when: presented again within the grace
    /// window it gets the current token again.
    pub previous: Option<SpentToken>,
    /// Every token the family spent before `previous`: presented again, they
    /// are reuse.
    pub spent: Vec<TokenHash>,
}

/// A spent refresh token and when it was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpentToken {
    /// The token's hash.
    pub hash: TokenHash,
    /// When it was spent.
    pub at: u64,
}

impl Family {
    /// When the family ends unless it is used: the earlier of the idle
    /// deadline and the absolute expiry.
    pub fn expires_at(&self) -> u64 {
        self.last_used
            .saturating_add(self.idle_timeout)
            .min(self.absolute_expiry)
    }

    /// Whether `token` is, or was, one of this family's.
    pub fn holds(&self, token: &TokenHash) -> bool {
        self.current == *token
            || self.previous.is_some_and(|spent| spent.hash == *token)
            || self.spent.contains(token)
    }

    /// The atomic decision of [`SessionStore::rotate`] on this family's
    /// state, for stores that hold the family in memory (or under a lock or
    /// transaction): the outcome, and the family as it must be kept (`None`:
    /// removed). Stores that decide elsewhere (a Redis script) follow the
    /// same rules.
    pub fn rotate(
        mut self,
        presented: &TokenHash,
        successor: &TokenHash,
        now: u64,
        grace: Duration,
    ) -> (Rotation, Option<Family>) {
        if now >= self.expires_at() {
            return (Rotation::Expired, None);
        }
        if self.current == *presented {
            if let Some(previous) = self.previous.take() {
                self.spent.push(previous.hash);
            }
            self.previous = Some(SpentToken {
                hash: *presented,
                at: now,
            });
            self.current = *successor;
            self.last_used = now;
            return (Rotation::Rotated(self.clone()), Some(self));
        }
        // Whole seconds, inclusive: a grace of N s lasts N to N+1 s, never
        // less; zero turns it off.
        if let Some(previous) = self.previous
            && previous.hash == *presented
            && self.current == *successor
            && !grace.is_zero()
            && now <= previous.at.saturating_add(grace.as_secs())
        {
            return (Rotation::Replayed(self.clone()), Some(self));
        }
        if self.holds(presented) {
            return (Rotation::Reused(self), None);
        }
        (Rotation::Unknown, Some(self))
    }
}

/// What [`SessionStore::rotate`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current: it is spent now, and the successor
    /// is current. The family as it is now.
    Rotated(Family),
    /// The presented token was spent within the grace window and the
    /// successor is still current: the same successor again.
    Replayed(Family),
    /// A spent token presented after the grace window (or after its successor
    /// was spent too): the family and its session are revoked.
    Reused(Family),
    /// The family has expired (idle or absolute); it is gone.
    Expired,
    /// No family holds the token (never issued, or its family ended).
    Unknown,
}

/// The shared state failed (unreachable, or too stale to trust): answered
/// as 503 `temporarily_unavailable`. The source is logged, never sent.
#[derive(Debug, thiserror::Error)]
#[error("session store failed")]
pub struct StoreError(#[source] pub BoxError);

impl StoreError {
    /// A store error with this message (logged, never sent to a client).
    pub fn new(message: impl Into<String>) -> Self {
        StoreError(message.into().into())
    }
}

/// Whether a session may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Not revoked (as far as the store knows, within its staleness bound).
    Active,
    /// Logged out, or ended by refresh-token reuse.
    Revoked,
}

/// Where the state shared by an app's instances lives: refresh-token
/// families and revoked sessions. [`MemorySessionStore`] is the default;
/// a store shared by several instances (Redis) implements the same trait.
///
/// Every method but [`session_status`](Self::session_status) may wait on the
/// network. `session_status` runs on every authenticated request that
/// carries a `sid` and must answer from memory: a shared store keeps a local
/// copy of the revoked sessions, fed by the shared one, and answers
/// [`StoreError`] when that copy may be staler than its stated bound.
pub trait SessionStore: Send + Sync + 'static {
    /// Whether session `sid` may be used. Called on the request path: it
    /// must not wait.
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError>;

    /// Revokes session `sid` until `until` (when the last access token that
    /// could carry it expires), and ends its refresh-token family if it has
    /// one.
    fn revoke_session(
        &self,
        sid: &str,
        until: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps a new family until it expires. A store may bound the families
    /// a subject keeps (see [`MemorySessionStore`]); it then ends the oldest,
    /// revoking its session until `revoke_until`.
    fn create_family(
        &self,
        family: Family,
        revoke_until: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The family that holds `token` (current or spent), if any.
    fn find_family(
        &self,
        token: &TokenHash,
    ) -> impl Future<Output = Result<Option<Family>, StoreError>> + Send;

    /// In one atomic step: [`Family::rotate`] on the family that holds
    /// `presented` (`Unknown` when none does). On
    /// [`Reused`](Rotation::Reused) the store also revokes the family's
    /// session until `revoke_until`.
    fn rotate(
        &self,
        presented: &TokenHash,
        successor: &TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> impl Future<Output = Result<Rotation, StoreError>> + Send;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`SessionStore`] with its type erased, for the
/// [`Authenticator`](crate::Authenticator).
pub(crate) trait DynSessionStore: Send + Sync {
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError>;
    fn revoke_session<'a>(
        &'a self,
        sid: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn create_family(
        &self,
        family: Family,
        revoke_until: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    fn find_family<'a>(
        &'a self,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Family>, StoreError>>;
    fn rotate<'a>(
        &'a self,
        presented: &'a TokenHash,
        successor: &'a TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>>;
}

impl<S: SessionStore> DynSessionStore for S {
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError> {
        SessionStore::session_status(self, sid)
    }

    fn revoke_session<'a>(
        &'a self,
        sid: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SessionStore::revoke_session(self, sid, until))
    }

    fn create_family(
        &self,
        family: Family,
        revoke_until: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(SessionStore::create_family(self, family, revoke_until))
    }

    fn find_family<'a>(
        &'a self,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Family>, StoreError>> {
        Box::pin(SessionStore::find_family(self, token))
    }

    fn rotate<'a>(
        &'a self,
        presented: &'a TokenHash,
        successor: &'a TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        Box::pin(SessionStore::rotate(
            self,
            presented,
            successor,
            now,
            grace,
            revoke_until,
        ))
    }
}

/// The default families a subject may keep in a [`MemorySessionStore`].
pub const DEFAULT_MAX_FAMILIES_PER_SUBJECT: usize = 100;

/// How often, at most, a [`MemorySessionStore`] sweeps out what has expired
/// (seconds).
const SWEEP_INTERVAL: u64 = 60;

/// Sessions and families in this process's memory: the default store, for
/// an app that runs as one instance. Cheap to clone (clones share the state).
///
/// Memory stays bounded under a flood of logins and logouts: a revoked
/// session is forgotten once its last access token has expired, a family
/// when it expires or ends, expired entries are swept out at most once a
/// minute by the next write, and a subject keeps at most
/// [`DEFAULT_MAX_FAMILIES_PER_SUBJECT`] families (configurable): a login
/// beyond that ends the subject's oldest family and revokes its session.
#[derive(Clone, Default)]
pub struct MemorySessionStore {
    state: Arc<Mutex<MemoryState>>,
}

impl fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemorySessionStore")
            .field("revoked_sessions", &state.revoked.len())
            .field("families", &state.families.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct MemoryState {
    /// Revoked session id -> until when it must stay revoked.
    revoked: HashMap<String, u64>,
    /// Family, by session id.
    families: HashMap<String, Family>,
    /// Every token hash a family holds or held -> its session id.
    tokens: HashMap<TokenHash, String>,
    /// A subject's session ids with families, oldest first.
    by_subject: HashMap<String, VecDeque<String>>,
    /// The most families a subject keeps; 0 means the default.
    max_per_subject: usize,
    /// The Unix time after which the next write sweeps.
    next_sweep: u64,
}

impl MemorySessionStore {
    /// An empty store keeping at most [`DEFAULT_MAX_FAMILIES_PER_SUBJECT`]
    /// families per subject.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most families (refresh-token logins) one subject may keep; a
    /// login beyond that ends their oldest. At least 1.
    pub fn max_families_per_subject(self, max: usize) -> Self {
        self.lock().max_per_subject = max.max(1);
        self
    }

    /// How many revoked sessions and families the store holds now.
    pub fn len(&self) -> (usize, usize) {
        let state = self.lock();
        (state.revoked.len(), state.families.len())
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every change below leaves the maps consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryState {
    fn max_per_subject(&self) -> usize {
        if self.max_per_subject == 0 {
            DEFAULT_MAX_FAMILIES_PER_SUBJECT
        } else {
            self.max_per_subject
        }
    }

    /// Forgets family `sid` and its tokens.
    fn remove_family(&mut self, sid: &str) -> Option<Family> {
        let family = self.families.remove(sid)?;
        self.tokens.remove(&family.current);
        if let Some(previous) = family.previous {
            self.tokens.remove(&previous.hash);
        }
        for spent in &family.spent {
            self.tokens.remove(spent);
        }
        if let Some(sids) = self.by_subject.get_mut(&family.subject) {
            sids.retain(|other| other != sid);
            if sids.is_empty() {
                self.by_subject.remove(&family.subject);
            }
        }
        Some(family)
    }

    fn revoke(&mut self, sid: &str, until: u64) {
        let entry = self.revoked.entry(sid.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        self.remove_family(sid);
    }

    fn sweep_if_due(&mut self, now: u64) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        self.revoked.retain(|_, until| *until > now);
        let expired: Vec<String> = self
            .families
            .iter()
            .filter(|(_, family)| family.expires_at() <= now)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in expired {
            self.remove_family(&sid);
        }
    }
}

impl SessionStore for MemorySessionStore {
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError> {
        let state = self.lock();
        Ok(match state.revoked.get(sid) {
            Some(until) if *until > crate::token::unix_now() => SessionStatus::Revoked,
            _ => SessionStatus::Active,
        })
    }

    async fn revoke_session(&self, sid: &str, until: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.sweep_if_due(crate::token::unix_now());
        state.revoke(sid, until);
        Ok(())
    }

    async fn create_family(&self, family: Family, revoke_until: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.sweep_if_due(crate::token::unix_now());
        let max = state.max_per_subject();
        let sids = state.by_subject.entry(family.subject.clone()).or_default();
        sids.push_back(family.sid.clone());
        let evicted: Vec<String> = sids.drain(..sids.len().saturating_sub(max)).collect();
        for sid in evicted {
            state.revoke(&sid, revoke_until);
        }
        state.tokens.insert(family.current, family.sid.clone());
        state.families.insert(family.sid.clone(), family);
        Ok(())
    }

    async fn find_family(&self, token: &TokenHash) -> Result<Option<Family>, StoreError> {
        let state = self.lock();
        Ok(state
            .tokens
            .get(token)
            .and_then(|sid| state.families.get(sid))
            .cloned())
    }

    async fn rotate(
        &self,
        presented: &TokenHash,
        successor: &TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> Result<Rotation, StoreError> {
        let mut state = self.lock();
        state.sweep_if_due(now);
        let Some(sid) = state.tokens.get(presented).cloned() else {
            return Ok(Rotation::Unknown);
        };
        let Some(family) = state.families.get(&sid).cloned() else {
            return Ok(Rotation::Unknown);
        };
        let (rotation, kept) = family.rotate(presented, successor, now, grace);
        match kept {
            Some(family) => {
                state.tokens.insert(family.current, sid.clone());
                state.families.insert(sid, family);
            }
            None => {
                if matches!(rotation, Rotation::Reused(_)) {
                    state.revoke(&sid, revoke_until);
                } else {
                    state.remove_family(&sid);
                }
            }
        }
        Ok(rotation)
    }
}

#[cfg(test)]
mod tests {
    // Not `super::*`: `DynSessionStore`'s methods would shadow the trait's.
    use super::{
        Duration, Family, FamilyKey, MemorySessionStore, RefreshToken, Rotation, Scopes,
        SessionStatus, SessionStore,
    };

    const GRACE: Duration = Duration::from_secs(5);

    fn family(token: &RefreshToken, sid: &str, subject: &str, now: u64) -> Family {
        Family {
            sid: sid.to_owned(),
            subject: subject.to_owned(),
            scope: Scopes::parse("me").unwrap(),
            token_version: 0,
            auth_time: now,
            absolute_expiry: now + 3600,
            idle_timeout: 600,
            last_used: now,
            key: FamilyKey::generate().unwrap(),
            current: token.hash(),
            previous: None,
            spent: Vec::new(),
        }
    }

    #[test]
    fn tokens_are_256_random_bits_and_parse_back() {
        let a = RefreshToken::generate().unwrap();
        let b = RefreshToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 43, "32 bytes in unpadded base64url");
        assert_eq!(RefreshToken::parse(a.as_str()), Some(a.clone()));
        for malformed in ["", "short", &format!("{}=", a.as_str()), &a.as_str()[1..]] {
            assert_eq!(RefreshToken::parse(malformed), None, "{malformed:?}");
        }
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn successors_are_derived_under_the_family_key() {
        let token = RefreshToken::generate().unwrap();
        let key = FamilyKey::generate().unwrap();
        let other_key = FamilyKey::generate().unwrap();
        assert_eq!(token.successor(&key), token.successor(&key));
        assert_ne!(token.successor(&key), token.successor(&other_key));
        assert_ne!(token.successor(&key), token);
        assert!(RefreshToken::parse(token.successor(&key).as_str()).is_some());
    }

    #[tokio::test]
    async fn rotation_grace_and_reuse() {
        let store = MemorySessionStore::new();
        let now = 1_000;
        let first = RefreshToken::generate().unwrap();
        let fam = family(&first, "s1", "u", now);
        let second = first.successor(&fam.key);
        store.create_family(fam.clone(), now + 1800).await.unwrap();

        let rotate = |presented: &RefreshToken, successor: &RefreshToken, at: u64| {
            let store = store.clone();
            let (p, s) = (presented.hash(), successor.hash());
            async move { store.rotate(&p, &s, at, GRACE, at + 1800).await.unwrap() }
        };
        assert!(matches!(
            rotate(&first, &second, now + 10).await,
            Rotation::Rotated(_)
        ));
        // The same token again within the grace window: the same successor.
        assert!(matches!(
            rotate(&first, &second, now + 14).await,
            Rotation::Replayed(_)
        ));
        // The successor works, and is spent in turn.
        let third = second.successor(&fam.key);
        assert!(matches!(
            rotate(&second, &third, now + 20).await,
            Rotation::Rotated(_)
        ));
        assert_eq!(
            SessionStore::session_status(&store, "s1").unwrap(),
            SessionStatus::Active
        );
        // The first token after its successor was spent: reuse, even
        // within the grace window.
        assert!(matches!(
            rotate(&first, &second, now + 21).await,
            Rotation::Reused(_)
        ));
        assert_eq!(
            store.len(),
            (1, 0),
            "the family is gone, its session revoked"
        );
        assert!(matches!(
            rotate(&third, &third.successor(&fam.key), now + 22).await,
            Rotation::Unknown
        ));
    }

    #[tokio::test]
    async fn a_spent_token_after_the_grace_window_is_reuse() {
        let store = MemorySessionStore::new();
        let first = RefreshToken::generate().unwrap();
        let fam = family(&first, "s1", "u", 0);
        let second = first.successor(&fam.key);
        store.create_family(fam, 1800).await.unwrap();
        let (a, b) = (first.hash(), second.hash());
        assert!(matches!(
            store.rotate(&a, &b, 10, GRACE, 1810).await.unwrap(),
            Rotation::Rotated(_)
        ));
        // Spent at 10 with a 5 s grace: 15 is the window's last second.
        assert!(matches!(
            store.rotate(&a, &b, 15, GRACE, 1815).await.unwrap(),
            Rotation::Replayed(_)
        ));
        assert!(matches!(
            store.rotate(&a, &b, 16, GRACE, 1816).await.unwrap(),
            Rotation::Reused(_)
        ));
    }

    #[tokio::test]
    async fn families_expire_when_idle_or_at_their_absolute_lifetime() {
        let store = MemorySessionStore::new();
        let first = RefreshToken::generate().unwrap();
        let fam = family(&first, "s1", "u", 0);
        let (a, b) = (first.hash(), first.successor(&fam.key).hash());
        store.create_family(fam.clone(), 1800).await.unwrap();
        assert_eq!(
            store.rotate(&a, &b, 600, GRACE, 2400).await.unwrap(),
            Rotation::Expired
        );

        let mut fam = fam;
        fam.idle_timeout = 10_000;
        fam.absolute_expiry = 100;
        store.create_family(fam, 1800).await.unwrap();
        assert_eq!(
            store.rotate(&a, &b, 100, GRACE, 1900).await.unwrap(),
            Rotation::Expired
        );
    }

    #[tokio::test]
    async fn logout_revokes_one_session_and_its_family_only() {
        let store = MemorySessionStore::new();
        let (t1, t2) = (
            RefreshToken::generate().unwrap(),
            RefreshToken::generate().unwrap(),
        );
        let now = crate::token::unix_now();
        store
            .create_family(family(&t1, "s1", "u", now), now + 1800)
            .await
            .unwrap();
        store
            .create_family(family(&t2, "s2", "u", now), now + 1800)
            .await
            .unwrap();
        store.revoke_session("s1", now + 1800).await.unwrap();
        assert_eq!(
            SessionStore::session_status(&store, "s1").unwrap(),
            SessionStatus::Revoked
        );
        assert_eq!(
            SessionStore::session_status(&store, "s2").unwrap(),
            SessionStatus::Active
        );
        assert_eq!(store.find_family(&t1.hash()).await.unwrap(), None);
        assert!(store.find_family(&t2.hash()).await.unwrap().is_some());
        // A revocation is forgotten once the tokens it covers have expired.
        store.revoke_session("s3", now - 1).await.unwrap();
        assert_eq!(
            SessionStore::session_status(&store, "s3").unwrap(),
            SessionStatus::Active
        );
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_flood_of_logins() {
        let store = MemorySessionStore::new().max_families_per_subject(3);
        let now = crate::token::unix_now();
        let mut tokens = Vec::new();
        for i in 0..10 {
            let token = RefreshToken::generate().unwrap();
            store
                .create_family(family(&token, &format!("s{i}"), "u", now), now + 1800)
                .await
                .unwrap();
            tokens.push(token);
        }
        let (revoked, families) = store.len();
        assert_eq!(families, 3);
        assert_eq!(revoked, 7, "the evicted families' sessions are revoked");
        assert_eq!(
            SessionStore::session_status(&store, "s0").unwrap(),
            SessionStatus::Revoked
        );
        assert!(
            store
                .find_family(&tokens[9].hash())
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.find_family(&tokens[0].hash()).await.unwrap(), None);
    }
}
