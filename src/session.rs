//! Sessions: what a login starts and a logout ends, and the refresh tokens
//! that keep it alive. What must be shared by every instance of an app —
//! revoked sessions, refresh-token families — lives in the
//! [`store`](crate::store).
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
//! The store's [`rotate`](crate::store::SharedStore::rotate) decides rotation, grace and
//! reuse in one atomic step, so two requests (or two instances) racing on
//! one token behave exactly as one would.

use std::fmt;
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::digest::consts::U32;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2b, Blake2bMac};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::credentials::SessionCookie;
use crate::scope::Scopes;

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
    pub(crate) fn generate() -> Result<Self, NoRandomness> {
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

/// The BLAKE2b-256 hash of a refresh token: what a [`SharedStore`](crate::store::SharedStore) keys
/// refresh tokens by. Serialized as its base64url text (43 characters; a
/// family's JSON in a shared store holds one per token it ever spent, and
/// serde's array of 32 numbers took about 100 bytes each).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        match Base64UrlUnpadded::decode(text.as_bytes(), &mut bytes) {
            Ok(decoded) if decoded.len() == 32 => Ok(TokenHash(bytes)),
            _ => Err(serde::de::Error::custom("not a base64url BLAKE2b-256 hash")),
        }
    }
}

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
    pub(crate) fn generate() -> Result<Self, NoRandomness> {
        Ok(Self(random_bytes()?))
    }
}

/// The operating system gave no random bytes: no refresh token can be made
/// (a server fault, answered 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system gave no random bytes")]
pub struct NoRandomness;

fn random_bytes() -> Result<[u8; TOKEN_BYTES], NoRandomness> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| NoRandomness)?;
    Ok(bytes)
}

/// A new random session id (128 bits, hex): the `sid` claim.
pub(crate) fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A refresh-token family: one login's chain of refresh tokens, as a
/// [`SharedStore`](crate::store::SharedStore) keeps it. Times are seconds since the Unix epoch.
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

    /// The atomic decision of [`SharedStore::rotate`](crate::store::SharedStore::rotate) on this family's
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

/// What [`SharedStore::rotate`](crate::store::SharedStore::rotate) decided.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn token_hashes_serialize_as_base64url_text() {
        let hash = RefreshToken::generate().unwrap().hash();
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{hash}\""));
        assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), hash);
        for bad in ["\"\"", "\"abc\"", "[1,2,3]", &format!("\"{hash}A\"")] {
            assert!(serde_json::from_str::<TokenHash>(bad).is_err(), "{bad}");
        }
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

    #[test]
    fn secrets_print_as_their_type_only_and_hashes_as_base64url() {
        let token = RefreshToken::generate().unwrap();
        assert_eq!(format!("{token:?}"), "RefreshToken([redacted])");
        let key = FamilyKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "FamilyKey([redacted])");
        let hash = TokenHash([0xfb; 32]);
        let encoded = Base64UrlUnpadded::encode_string(&[0xfb; 32]);
        assert_eq!(hash.to_string(), encoded);
        assert_eq!(format!("{hash:?}"), format!("TokenHash({encoded})"));
    }

    /// A store that hands `rotate` a family by mistake (a stale index, a
    /// custom store's bug) must not revoke it for a stranger's token.
    #[test]
    fn a_token_the_family_never_held_is_unknown_to_it() {
        let first = RefreshToken::generate().unwrap();
        let key = FamilyKey::generate().unwrap();
        let second = first.successor(&key);
        let family = Family {
            sid: "s".to_owned(),
            subject: "u".to_owned(),
            scope: Scopes::parse("me").unwrap(),
            token_version: 0,
            auth_time: 0,
            absolute_expiry: 3600,
            idle_timeout: 600,
            last_used: 0,
            key,
            current: first.hash(),
            previous: None,
            spent: Vec::new(),
        };
        let stranger = RefreshToken::generate().unwrap().hash();
        let grace = Duration::from_secs(5);
        let (rotation, _) = family.clone().rotate(&stranger, &second.hash(), 10, grace);
        assert_eq!(rotation, Rotation::Unknown);
        let Rotation::Rotated(rotated) = family.rotate(&first.hash(), &second.hash(), 10, grace).0
        else {
            panic!("the current token rotates");
        };
        assert!(rotated.holds(&first.hash()) && rotated.holds(&second.hash()));
        assert!(!rotated.holds(&stranger));
        let (rotation, kept) = rotated.rotate(&stranger, &stranger, 20, grace);
        assert_eq!(rotation, Rotation::Unknown);
        assert!(kept.is_some(), "the family is kept");
    }

    #[test]
    fn impossible_refresh_policies_are_refused_at_startup() {
        let access = Duration::from_secs(1800);
        let secs = Duration::from_secs;
        let accepted = |refresh: RefreshTokens| refresh.validate(access).is_ok();
        assert!(accepted(RefreshTokens::new()));
        // The absolute lifetime must cover an access token's, no more.
        assert!(accepted(RefreshTokens::new().absolute_lifetime(access)));
        assert!(!accepted(
            RefreshTokens::new().absolute_lifetime(access - secs(1))
        ));
        // A zero idle timeout, whatever the absolute lifetime.
        assert!(!accepted(RefreshTokens::new().idle_timeout(secs(0))));
        // The grace window: at most a minute, shorter than the idle timeout.
        assert!(accepted(RefreshTokens::new().grace(secs(60))));
        assert!(!accepted(RefreshTokens::new().grace(secs(61))));
        assert!(accepted(
            RefreshTokens::new().idle_timeout(secs(11)).grace(secs(10))
        ));
        assert!(!accepted(
            RefreshTokens::new().idle_timeout(secs(10)).grace(secs(10))
        ));
    }
}
