//! Access tokens: keys, the [`TokenCodec`] that issues and verifies them, and
//! their [`Claims`].
//!
//! # What a token must be to pass
//!
//! - Its header has `typ: at+jwt` (RFC 9068; `application/at+jwt` too), so a
//!   different kind of token signed with the same key is never taken for an
//!   access token, and no `crit` (RFC 7515 §4.1.11: this crate understands no
//!   extension). `jku`, `x5u`, `jwk` and `x5c` are ignored: nothing a token
//!   names is fetched or trusted.
//! - Its `kid` names a configured key (a token without `kid` matches a key
//!   without one), and its `alg` is exactly that key's algorithm: the
//!   algorithm is pinned by the key, so `none` and algorithm confusion are
//!   refused.
//! - Its signature verifies.
//! - Its claims have the right types: `sub` (string) and `exp` (integer) are
//!   required; `iss` must be one string, `aud` a string or an array of
//!   strings, `scope` a space-separated string, `scp` an array (not both).
//! - Now is before `exp` and not before `nbf`, give or take the configured
//!   leeway, which is **0 s by default** (jsonwebtoken's own default is 60 s).
//!   Set [`TokenCodecBuilder::leeway`] when tokens cross machines.
//! - `iat` and `auth_time`, when present, are not in the future (beyond the
//!   same leeway), and `auth_time` is not after `iat`: sliding expiry counts
//!   the absolute lifetime from them, so a token that claims a login in
//!   2036 would otherwise be renewed until then
//!   ([`TokenRejection::IssuedInFuture`],
//!   [`TokenRejection::AuthTimeAfterIssue`]).
//! - When an issuer or audience is configured, `iss` / `aud` must be present
//!   and match. A token carrying `aud` is refused by a codec configured with
//!   no audience (RFC 7519 §4.1.3).
//!
//! # Crypto backend
//!
//! jsonwebtoken needs a process-wide crypto provider. With the `aws_lc_rs`
//! feature (the default) the codec installs aws-lc-rs's provider when it is
//! built, also when `rust_crypto` is enabled too (as with `--all-features`);
//! with only `rust_crypto`, the pure-Rust provider. An app that already
//! installed a provider keeps it. With neither feature, the codec uses the
//! provider jsonwebtoken has (one backend feature enabled on jsonwebtoken
//! itself, or a provider the app installed or passes to
//! [`TokenCodecBuilder::crypto_provider`]); with none at all, building fails
//! with [`ConfigError::NoCryptoBackend`] — never a panic on a request. (The
//! build-time self-test finds out; jsonwebtoken's panic message is printed
//! before the error.)

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::scope::Scopes;

mod cache;
pub(crate) use cache::VerifiedTokens;

/// Why a token was refused. Each has a stable reason code for logs and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Longer than the configured cap; refused before decoding.
    TooLong,
    /// Not a well-formed JWT, or its claims have the wrong shape.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// The header names an algorithm other than its key's.
    AlgorithmMismatch,
    /// The header's `kid` names no configured key.
    UnknownKey,
    /// The header carries `crit` (RFC 7515 §4.1.11).
    CriticalHeader,
    /// Not an access token (`typ` is not `at+jwt`).
    WrongType,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iat` or `auth_time` lies in the future, beyond the leeway: no token
    /// this server would issue says it was issued, or its user logged in,
    /// later than now (a token minted with a key that is still trusted
    /// could otherwise push its absolute lifetime out by years).
    IssuedInFuture,
    /// `auth_time` is later than `iat`: the user cannot have logged in after
    /// the token was issued.
    AuthTimeAfterIssue,
    /// `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// `aud` is missing or names none of the configured audiences.
    WrongAudience,
    /// Both `scope` and `scp` are present.
    ConflictingScopes,
    /// The subject is not in the user store.
    UnknownUser,
    /// The user is disabled.
    InactiveUser,
    /// The token's version is older than the user's (password change,
    /// "log out everywhere").
    Revoked,
    /// The token's session (`sid`) was logged out, or ended by
    /// refresh-token reuse.
    SessionRevoked,
}

impl TokenRejection {
    /// A stable, machine-readable code for logs and metrics.
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::UnknownKey => "unknown_key",
            Self::CriticalHeader => "critical_header",
            Self::WrongType => "wrong_type",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::AuthTimeAfterIssue => "auth_time_after_iat",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::ConflictingScopes => "conflicting_scopes",
            Self::UnknownUser => "unknown_user",
            Self::InactiveUser => "inactive_user",
            Self::Revoked => "revoked",
            Self::SessionRevoked => "session_revoked",
        }
    }
}

/// Signing a token failed (jsonwebtoken refused the claims or the key). A
/// server-side fault, never caused by a client: rendered as 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing the access token failed")]
pub struct SigningError;

/// The `typ` header of every access token this crate issues (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The shortest HMAC secret a [`Key`] accepts, in bytes (RFC 7518 §3.2 asks
/// for at least the hash size; 32 bytes covers HS256).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// The bounds an application's own claims type must meet. Implemented for
/// every type that meets them; `()` means "no extra claims".
pub trait ExtraClaims: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> ExtraClaims for T {}

/// The `aud` claim: one audience or several (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "api"`.
    One(String),
    /// `"aud": ["api", "admin"]`.
    Many(Vec<String>),
}

impl Audience {
    fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::One(aud) => accepted.contains(aud),
            Audience::Many(auds) => auds.iter().any(|aud| accepted.contains(aud)),
        }
    }
}

/// The claims of an access token: the registered claims this crate checks,
/// the login time, the user's token version, and the app's own claims `X`
/// flattened beside them (their names must not clash with the ones here).
///
/// `scp` (an array, as some issuers send) is read into `scope`; a token
/// carrying both is refused.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Claims<X = ()> {
    /// The subject: the user's id in the [`UserStore`](crate::UserStore).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// A unique id for this token. Anything that must identify a token
    /// (revocation, rate keys) uses this or the token version, never the
    /// token's bytes: ES256 signatures are malleable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Granted scopes.
    #[serde(skip_serializing_if = "Scopes::is_empty")]
    pub scope: Scopes,
    /// When the user logged in (OpenID Connect's `auth_time`); kept unchanged
    /// when a token is renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// The user's token version when the token was issued; a token older than
    /// the user's current version is revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_version: Option<u64>,
    /// The session the token belongs to (OpenID Connect's `sid`): set by
    /// every login, kept by renewals and refreshes, and what a logout
    /// revokes (see [`session`](crate::session)). A token without one
    /// belongs to no session and is not affected by logouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The application's own claims.
    #[serde(flatten)]
    pub extra: X,
}

/// What a token's payload is read into before it becomes [`Claims`]: the
/// same fields, plus `scp`, so the two scope spellings can be told apart.
#[derive(Deserialize)]
#[serde(bound(deserialize = "X: DeserializeOwned"))]
struct RawClaims<X> {
    sub: String,
    exp: u64,
    iat: Option<u64>,
    nbf: Option<u64>,
    iss: Option<String>,
    aud: Option<Audience>,
    jti: Option<String>,
    scope: Option<Scopes>,
    scp: Option<Vec<String>>,
    auth_time: Option<u64>,
    token_version: Option<u64>,
    sid: Option<String>,
    #[serde(flatten)]
    extra: X,
}

impl<X> RawClaims<X> {
    fn into_claims(self) -> Result<Claims<X>, TokenRejection> {
        let scope = match (self.scope, self.scp) {
            (Some(_), Some(_)) => return Err(TokenRejection::ConflictingScopes),
            (Some(scope), None) => scope,
            (None, Some(scp)) => {
                Scopes::try_from_iter(scp).map_err(|_| TokenRejection::Malformed)?
            }
            (None, None) => Scopes::none(),
        };
        Ok(Claims {
            sub: self.sub,
            exp: self.exp,
            iat: self.iat,
            nbf: self.nbf,
            iss: self.iss,
            aud: self.aud,
            jti: self.jti,
            scope,
            auth_time: self.auth_time,
            token_version: self.token_version,
            sid: self.sid,
            extra: self.extra,
        })
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh `jti`.
pub(crate) fn new_jti() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One signing or verification key, with the algorithm it is pinned to and
/// an optional `kid`.
///
/// `Debug` shows the algorithm and `kid`, never key material.
///
/// ```
/// use tower_auth::Key;
///
/// let key = Key::hs256(b"0123456789abcdef0123456789abcdef").unwrap().with_kid("2026-11");
/// assert!(Key::hs256(b"too short").is_err());
/// ```
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// An HS256 key from a shared secret of at least
    /// [`MIN_HMAC_SECRET_LEN`] bytes.
    pub fn hs256(secret: &[u8]) -> Result<Key, ConfigError> {
        Key::hmac(Algorithm::HS256, secret)
    }

    /// An HMAC key (HS256, HS384 or HS512) from a secret of at least
    /// [`MIN_HMAC_SECRET_LEN`] bytes.
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Key, ConfigError> {
        if algorithm.family() != AlgorithmFamily::Hmac {
            return Err(ConfigError::WrongKeyType(algorithm));
        }
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(ConfigError::SecretTooShort);
        }
        Ok(Key {
            kid: None,
            algorithm,
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
        })
    }

    /// A signing key pair from PEM files: RS256/384/512 and PS256/384/512
    /// take RSA keys, ES256/ES384 EC keys, EdDSA Ed25519 keys. The pair is
    /// checked when the [`TokenCodec`] is built.
    pub fn from_pem(
        algorithm: Algorithm,
        private_pem: &[u8],
        public_pem: &[u8],
    ) -> Result<Key, ConfigError> {
        let bad = || ConfigError::InvalidKey(algorithm);
        let encoding = match algorithm.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(private_pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(private_pem),
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(private_pem),
            AlgorithmFamily::Hmac => return Err(ConfigError::WrongKeyType(algorithm)),
        }
        .map_err(|_| bad())?;
        Ok(Key {
            encoding: Some(encoding),
            ..Key::verify_only_pem(algorithm, public_pem)?
        })
    }

    /// A key that only verifies, from a public-key PEM file: for a key being
    /// rotated out, or tokens issued by another service.
    pub fn verify_only_pem(algorithm: Algorithm, public_pem: &[u8]) -> Result<Key, ConfigError> {
        let decoding = match algorithm.family() {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(public_pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(public_pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(public_pem),
            AlgorithmFamily::Hmac => return Err(ConfigError::WrongKeyType(algorithm)),
        }
        .map_err(|_| ConfigError::InvalidKey(algorithm))?;
        Ok(Key {
            kid: None,
            algorithm,
            decoding,
            encoding: None,
        })
    }

    /// Names the key; tokens it signs carry this `kid`.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Key {
        self.kid = Some(kid.into());
        self
    }

    /// The algorithm this key is pinned to.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// Builds a [`TokenCodec`]; every check runs in [`build`](Self::build).
#[must_use]
pub struct TokenCodecBuilder {
    signing: Key,
    verify_only: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    access_lifetime: Duration,
    crypto_provider: Option<&'static CryptoProvider>,
}

impl TokenCodecBuilder {
    /// Also verifies tokens signed by `key` (a key being rotated out). Every
    /// key in a set of several needs a distinct `kid`.
    pub fn also_verify(mut self, key: Key) -> Self {
        self.verify_only.push(key);
        self
    }

    /// Issues tokens with this `iss` and refuses tokens without it.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Issues tokens with this `aud` and refuses tokens that do not name it.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock-skew allowance for `exp` and `nbf`. Default: 0 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long issued access tokens live. Default: 30 minutes.
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_lifetime = lifetime;
        self
    }

    /// The jsonwebtoken crypto provider to install when the crate is built
    /// without the `aws_lc_rs` and `rust_crypto` features (see the
    /// [module docs](self)).
    pub fn crypto_provider(mut self, provider: &'static CryptoProvider) -> Self {
        self.crypto_provider = Some(provider);
        self
    }

    /// Checks the configuration: a provider exists, kids are unique, the
    /// signing key signs and verifies, the lifetime is positive.
    pub fn build(self) -> Result<TokenCodec, ConfigError> {
        install_crypto_provider(self.crypto_provider);
        if self.access_lifetime.as_secs() == 0 {
            return Err(ConfigError::Lifetime(
                "the access lifetime must be at least one second",
            ));
        }
        if self.signing.encoding.is_none() {
            return Err(ConfigError::NotASigningKey);
        }
        let mut keys = Vec::with_capacity(1 + self.verify_only.len());
        keys.push(self.signing);
        keys.extend(self.verify_only);
        for (i, key) in keys.iter().enumerate() {
            if keys.len() > 1 && key.kid.is_none() {
                return Err(ConfigError::MissingKid);
            }
            if keys[..i].iter().any(|other| other.kid == key.kid) {
                return Err(ConfigError::DuplicateKid);
            }
        }
        let codec = TokenCodec {
            inner: Arc::new(CodecInner {
                key_set: next_key_set_id(),
                keys,
                issuer: self.issuer,
                audience: self.audience.map(|aud| vec![aud]),
                leeway: self.leeway.as_secs(),
                access_lifetime: self.access_lifetime,
            }),
        };
        codec.self_test()?;
        Ok(codec)
    }
}

fn install_crypto_provider(chosen: Option<&'static CryptoProvider>) {
    #[cfg(feature = "aws_lc_rs")]
    let chosen = chosen.or(Some(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER));
    #[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
    let chosen = chosen.or(Some(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER));
    if let Some(provider) = chosen {
        // An error means a provider is installed already (by the app or an
        // earlier codec): that one stays, as the app chose it. The self-test
        // finds out whether it works.
        let _ = provider.install_default();
    }
}

/// A process-unique identity for the key set of each codec built: what the
/// verified-token cache is tied to. Clones of a codec share it; a codec
/// built again, even from the same keys, gets a new one.
fn next_key_set_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct CodecInner {
    key_set: u64,
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<Vec<String>>,
    leeway: u64,
    access_lifetime: Duration,
}

/// Issues and verifies access tokens. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use tower_auth::{Key, Scopes, TokenCodec};
///
/// let codec = TokenCodec::builder(Key::hs256(&[7; 32]).unwrap())
///     .issuer("https://auth.example")
///     .access_lifetime(Duration::from_secs(1800))
///     .build()
///     .unwrap();
/// let claims = codec.new_claims("johndoe", Scopes::parse("me").unwrap(), 0, ());
/// let token = codec.issue(&claims).unwrap();
/// let verified = codec.verify::<()>(&token).unwrap();
/// assert_eq!(verified.sub, "johndoe");
/// ```
#[derive(Clone)]
pub struct TokenCodec {
    inner: Arc<CodecInner>,
}

impl fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCodec")
            .field("keys", &self.inner.keys)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("leeway", &self.inner.leeway)
            .field("access_lifetime", &self.inner.access_lifetime)
            .finish()
    }
}

impl TokenCodec {
    /// Starts a codec that signs with `signing_key`.
    pub fn builder(signing_key: Key) -> TokenCodecBuilder {
        TokenCodecBuilder {
            signing: signing_key,
            verify_only: Vec::new(),
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
            access_lifetime: Duration::from_secs(30 * 60),
            crypto_provider: None,
        }
    }

    /// How long issued access tokens live.
    pub fn access_lifetime(&self) -> Duration {
        self.inner.access_lifetime
    }

    /// How long after now every token this codec issued or would accept has
    /// expired: the access lifetime plus the leeway (and a second, as
    /// `exp` is whole seconds). A revoked session is remembered that long.
    pub fn longest_token_life(&self) -> Duration {
        self.inner.access_lifetime + Duration::from_secs(self.inner.leeway + 1)
    }

    /// The identity of this codec's key set (see [`VerifiedTokens`]).
    pub(crate) fn key_set_id(&self) -> u64 {
        self.inner.key_set
    }

    /// Claims for a new access token: issued now, expiring after the access
    /// lifetime, with a fresh `jti`, `auth_time` = now, the configured
    /// issuer and audience, and no session (`sid`; a login sets one).
    pub fn new_claims<X>(
        &self,
        sub: impl Into<String>,
        scope: Scopes,
        token_version: u64,
        extra: X,
    ) -> Claims<X> {
        let now = unix_now();
        Claims {
            sub: sub.into(),
            exp: now + self.inner.access_lifetime.as_secs(),
            iat: Some(now),
            nbf: None,
            iss: self.inner.issuer.clone(),
            aud: self
                .inner
                .audience
                .as_ref()
                .and_then(|a| a.first().cloned())
                .map(Audience::One),
            jti: Some(new_jti()),
            scope,
            auth_time: Some(now),
            token_version: Some(token_version),
            sid: None,
            extra,
        }
    }

    /// Signs `claims` as an access token (`typ: at+jwt`) with the signing
    /// key, naming its `kid`.
    pub fn issue<X: Serialize>(&self, claims: &Claims<X>) -> Result<String, SigningError> {
        let key = &self.inner.keys[0];
        let mut header = Header::new(key.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid.clone_from(&key.kid);
        // The builder refuses a signing key without its private part.
        let encoding = key.encoding.as_ref().ok_or(SigningError)?;
        jsonwebtoken::encode(&header, claims, encoding).map_err(|_| SigningError)
    }

    /// Verifies an access token and returns its claims; see the
    /// [module docs](self) for every check. Errors carry a reason code, never
    /// jsonwebtoken's message (which echoes attacker input).
    pub fn verify<X: DeserializeOwned>(&self, token: &str) -> Result<Claims<X>, TokenRejection> {
        self.verify_at(token, unix_now())
    }

    fn verify_at<X: DeserializeOwned>(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Claims<X>, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenRejection::CriticalHeader);
        }
        let is_access_token = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
                || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !is_access_token {
            return Err(TokenRejection::WrongType);
        }
        let index = self
            .inner
            .keys
            .iter()
            .position(|key| key.kid.as_deref() == header.kid.as_deref())
            .ok_or(TokenRejection::UnknownKey)?;
        let key = &self.inner.keys[index];
        if header.alg != key.algorithm {
            return Err(TokenRejection::AlgorithmMismatch);
        }
        // jsonwebtoken checks the signature, with the algorithm pinned just
        // above; this module checks every claim itself, with strict types.
        // (`jsonwebtoken::decode` would parse the header twice more and the
        // claims twice, once for checks this module does not ask of it.)
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenRejection::Malformed)?;
        match jsonwebtoken::crypto::verify(
            signature,
            signed.as_bytes(),
            &key.decoding,
            key.algorithm,
        ) {
            Ok(true) => {}
            Ok(false) => return Err(TokenRejection::BadSignature),
            Err(_) => return Err(TokenRejection::Malformed),
        }
        // "Dangerous" means unverified: the signature over exactly these
        // bytes has just been verified.
        let raw: RawClaims<X> = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| TokenRejection::Malformed)?;
        let claims = raw.into_claims()?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// The checks of verified claims against the clock and this codec's
    /// issuer and audience: run on every verification and every cache hit.
    pub(crate) fn check_claims<X>(
        &self,
        claims: &Claims<X>,
        now: u64,
    ) -> Result<(), TokenRejection> {
        let leeway = self.inner.leeway;
        // RFC 7519 §4.1.4: not accepted on or after `exp`.
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenRejection::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
        {
            return Err(TokenRejection::NotYetValid);
        }
        let latest_past = now.saturating_add(leeway);
        if claims.iat.is_some_and(|iat| iat > latest_past)
            || claims.auth_time.is_some_and(|at| at > latest_past)
        {
            return Err(TokenRejection::IssuedInFuture);
        }
        if let (Some(iat), Some(auth_time)) = (claims.iat, claims.auth_time)
            && auth_time > iat
        {
            return Err(TokenRejection::AuthTimeAfterIssue);
        }
        if let Some(issuer) = &self.inner.issuer
            && claims.iss.as_ref() != Some(issuer)
        {
            return Err(TokenRejection::WrongIssuer);
        }
        match (&self.inner.audience, &claims.aud) {
            (Some(accepted), Some(aud)) if aud.contains_any(accepted) => {}
            (None, None) => {}
            _ => return Err(TokenRejection::WrongAudience),
        }
        Ok(())
    }

    /// Signs a probe with the signing key and verifies it, so a mismatched
    /// key pair fails at startup rather than on the first request.
    ///
    /// jsonwebtoken offers no way to ask whether it has a crypto provider;
    /// without one it panics on first use. This first use is caught and
    /// becomes [`ConfigError::NoCryptoBackend`] (the panic message is still
    /// printed).
    fn self_test(&self) -> Result<(), ConfigError> {
        let probe = std::panic::AssertUnwindSafe(|| {
            let claims = self.new_claims("tower-auth-self-test", Scopes::none(), 0, ());
            let token = self
                .issue(&claims)
                .map_err(|_| ConfigError::KeyPairMismatch)?;
            self.verify::<()>(&token)
                .map_err(|_| ConfigError::KeyPairMismatch)?;
            Ok(())
        });
        std::panic::catch_unwind(probe).unwrap_or(Err(ConfigError::NoCryptoBackend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn codec() -> TokenCodec {
        TokenCodec::builder(Key::hs256(SECRET).unwrap())
            .build()
            .unwrap()
    }

    fn sign_raw(header: &Header, payload: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, payload, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn at_header() -> Header {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header
    }

    #[test]
    fn round_trips_issued_claims() {
        let codec = codec();
        let claims = codec.new_claims("u1", Scopes::parse("a b").unwrap(), 3, ());
        let token = codec.issue(&claims).unwrap();
        assert_eq!(codec.verify::<()>(&token).unwrap(), claims);
    }

    #[test]
    fn the_signature_covers_header_and_payload_exactly() {
        let codec = codec();
        let token = codec
            .issue(&codec.new_claims("u1", Scopes::none(), 0, ()))
            .unwrap();
        let other = codec
            .issue(&codec.new_claims("admin", Scopes::none(), 0, ()))
            .unwrap();
        let parts = |t: &str| -> Vec<String> { t.split('.').map(str::to_owned).collect() };
        let (mine, theirs) = (parts(&token), parts(&other));
        let spliced = |header: &str, payload: &str, signature: &str| {
            codec.verify_at::<()>(&format!("{header}.{payload}.{signature}"), unix_now())
        };
        // Another token's payload under this token's signature, and back.
        assert_eq!(
            spliced(&mine[0], &theirs[1], &mine[2]).unwrap_err(),
            TokenRejection::BadSignature
        );
        assert_eq!(
            spliced(&mine[0], &mine[1], &theirs[2]).unwrap_err(),
            TokenRejection::BadSignature
        );
        // A signature that is not base64url, and a fourth segment.
        assert_eq!(
            spliced(&mine[0], &mine[1], "*").unwrap_err(),
            TokenRejection::Malformed
        );
        assert_eq!(
            codec
                .verify_at::<()>(&format!("{token}.{}", mine[2]), unix_now())
                .unwrap_err(),
            TokenRejection::Malformed
        );
        assert!(spliced(&mine[0], &mine[1], &mine[2]).is_ok());
    }

    #[test]
    fn exp_boundary_is_exclusive() {
        let codec = codec();
        let token = sign_raw(&at_header(), &serde_json::json!({"sub": "u", "exp": 1000}));
        assert!(codec.verify_at::<()>(&token, 999).is_ok());
        assert_eq!(
            codec.verify_at::<()>(&token, 1000).unwrap_err(),
            TokenRejection::Expired
        );
    }

    #[test]
    fn time_claims_from_the_future_are_refused() {
        let codec = codec();
        let at = |iat: u64, auth_time: u64| {
            let payload = serde_json::json!({
                "sub": "u", "exp": 10_000, "iat": iat, "auth_time": auth_time,
            });
            codec.verify_at::<()>(&sign_raw(&at_header(), &payload), 1000)
        };
        assert!(at(1000, 1000).is_ok(), "issued and logged in now");
        assert!(at(900, 500).is_ok());
        assert_eq!(at(1001, 500).unwrap_err(), TokenRejection::IssuedInFuture);
        assert_eq!(at(900, 1001).unwrap_err(), TokenRejection::IssuedInFuture);
        assert_eq!(
            at(900, 901).unwrap_err(),
            TokenRejection::AuthTimeAfterIssue
        );
        let lenient = TokenCodec::builder(Key::hs256(SECRET).unwrap())
            .leeway(Duration::from_secs(30))
            .build()
            .unwrap();
        let payload =
            serde_json::json!({"sub": "u", "exp": 10_000, "iat": 1030, "auth_time": 1030});
        let token = sign_raw(&at_header(), &payload);
        assert!(
            lenient.verify_at::<()>(&token, 1000).is_ok(),
            "within leeway"
        );
        assert_eq!(
            lenient.verify_at::<()>(&token, 999).unwrap_err(),
            TokenRejection::IssuedInFuture
        );
    }

    #[test]
    fn refuses_other_token_types_and_crit() {
        let codec = codec();
        let payload = serde_json::json!({"sub": "u", "exp": u64::MAX / 2});
        let mut jwt = Header::new(Algorithm::HS256);
        jwt.typ = Some("JWT".into());
        assert_eq!(
            codec
                .verify_at::<()>(&sign_raw(&jwt, &payload), 0)
                .unwrap_err(),
            TokenRejection::WrongType
        );
        let mut crit = at_header();
        crit.crit = Some(vec!["exp".into()]);
        assert_eq!(
            codec
                .verify_at::<()>(&sign_raw(&crit, &payload), 0)
                .unwrap_err(),
            TokenRejection::CriticalHeader
        );
    }

    #[test]
    fn scope_and_scp_together_are_refused() {
        let codec = codec();
        let both = serde_json::json!({"sub": "u", "exp": u64::MAX / 2, "scope": "a", "scp": ["a"]});
        assert_eq!(
            codec
                .verify_at::<()>(&sign_raw(&at_header(), &both), 0)
                .unwrap_err(),
            TokenRejection::ConflictingScopes
        );
        let scp = serde_json::json!({"sub": "u", "exp": u64::MAX / 2, "scp": ["b", "a"]});
        let claims = codec
            .verify_at::<()>(&sign_raw(&at_header(), &scp), 0)
            .unwrap();
        assert_eq!(claims.scope.to_string(), "a b");
    }

    #[test]
    fn a_mismatched_key_pair_fails_when_built() {
        let private = include_bytes!("../tests/keys/rsa_private.pem");
        let other_public = include_bytes!("../tests/keys/rsa2_public.pem");
        let key = Key::from_pem(Algorithm::RS256, private, other_public).unwrap();
        assert_eq!(
            TokenCodec::builder(key).build().unwrap_err(),
            ConfigError::KeyPairMismatch
        );
    }

    #[test]
    fn builder_refuses_bad_configuration() {
        assert!(matches!(
            Key::hs256(b"short"),
            Err(ConfigError::SecretTooShort)
        ));
        let a = Key::hs256(SECRET).unwrap();
        let b = Key::hs256(&[1; 32]).unwrap();
        assert!(matches!(
            TokenCodec::builder(a.clone())
                .also_verify(b.clone())
                .build(),
            Err(ConfigError::MissingKid)
        ));
        assert!(matches!(
            TokenCodec::builder(a.with_kid("k"))
                .also_verify(b.with_kid("k"))
                .build(),
            Err(ConfigError::DuplicateKid)
        ));
    }
}
