//! [`Authenticator`]: the one road a request travels — credentials, token,
//! user — to an [`Authenticated`] identity. The layer, the extractors, the
//! token endpoint and a plain hyper service all call it.

#[cfg(feature = "axum")]
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::Response;
use http::request::Parts;
use http_body_util::Full;

use crate::config::ConfigError;
use crate::credentials::{CredentialKind, Credentials, UncheckedToken};
use crate::error::{AuthError, ErrorRenderer, RenderError, is_valid_realm};
use crate::origin::OriginGuard;
use crate::password::PasswordHasher;
use crate::refresh::SlidingExpiry;
use crate::scope::{DefaultScopes, Scopes};
use crate::session::RefreshTokens;
use crate::store::{DynSharedStore, MemoryStore, SessionStatus, SharedStore};
use crate::throttle::LoginThrottle;
use crate::token::{Claims, ExtraClaims, TokenCodec, TokenRejection, VerifiedTokens, unix_now};
use crate::user::{AuthUser, DynUserStore, UserStore};

/// An authenticated request's identity: the user as the store returned it
/// and the verified claims. The layer puts it into the request's extensions;
/// the axum extractors hand it to handlers. Cloning it copies two `Arc`s,
/// never the user's fields.
#[derive(Debug)]
pub struct Authenticated<U, X = ()> {
    /// The user the token's `sub` names, freshly loaded for this request.
    pub user: Arc<U>,
    /// The token's verified claims, with the scopes in effect for this
    /// request: the token's scopes that the user still holds (see
    /// [the scopes in effect](crate::scope#the-scopes-in-effect-for-a-request)).
    pub claims: Arc<Claims<X>>,
    /// Where the token was found.
    pub credential: CredentialKind,
}

impl<U, X> Clone for Authenticated<U, X> {
    fn clone(&self) -> Self {
        Authenticated {
            user: Arc::clone(&self.user),
            claims: Arc::clone(&self.claims),
            credential: self.credential,
        }
    }
}

type ClaimsFor<U, X> = dyn Fn(&U) -> X + Send + Sync;

struct Inner<U, X> {
    store: Box<dyn DynUserStore<U>>,
    codec: TokenCodec,
    credentials: Credentials,
    passwords: PasswordHasher,
    renderer: ErrorRenderer,
    origin: OriginGuard,
    extra_claims: Box<ClaimsFor<U, X>>,
    sliding_expiry: Option<SlidingExpiry>,
    /// `None` when the cache is turned off.
    verified_tokens: Option<VerifiedTokens<X>>,
    /// Whether a login with an outdated hash rehashes the password; cleared
    /// for good when the store answers that it keeps no new hashes.
    rehash_on_login: AtomicBool,
    /// `None` when login throttling is turned off.
    login_throttle: Option<LoginThrottle>,
    /// What a login that asks for no scope gets.
    default_scopes: DefaultScopes,
    /// Revoked sessions and refresh-token families.
    shared: Box<dyn DynSharedStore>,
    /// `None` when refresh tokens are off.
    refresh_tokens: Option<RefreshTokens>,
}

/// How many verified tokens an [`Authenticator`] remembers unless told
/// otherwise; see [`AuthenticatorBuilder::token_cache_capacity`].
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 10_000;

/// Authenticates requests and logs users in. Cheap to clone (one `Arc`).
///
/// ```
/// use tower_auth::{Authenticator, Key, MemoryUserStore, SimpleUser, TokenCodec};
///
/// let codec = TokenCodec::builder(Key::hs256(&[42; 32]).unwrap()).build().unwrap();
/// let auth: Authenticator<SimpleUser> = Authenticator::builder(MemoryUserStore::new(), codec)
///     .realm("example")
///     .build()
///     .unwrap();
/// ```
pub struct Authenticator<U, X = ()> {
    inner: Arc<Inner<U, X>>,
}

impl<U, X> Clone for Authenticator<U, X> {
    fn clone(&self) -> Self {
        Authenticator {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<U, X> fmt::Debug for Authenticator<U, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("codec", &self.inner.codec)
            .field("credentials", &self.inner.credentials)
            .field("passwords", &self.inner.passwords)
            .finish_non_exhaustive()
    }
}

/// Configures an [`Authenticator`].
#[must_use]
pub struct AuthenticatorBuilder<U, X = ()> {
    store: Box<dyn DynUserStore<U>>,
    extra_claims: Box<ClaimsFor<U, X>>,
    settings: Settings,
}

/// Everything a builder holds but the parts typed by the user and claims,
/// so that [`AuthenticatorBuilder::extra_claims`] moves it whole.
struct Settings {
    codec: TokenCodec,
    credentials: Credentials,
    passwords: Option<PasswordHasher>,
    realm: String,
    render_hook: Option<Arc<dyn RenderError>>,
    allowed_origins: Vec<String>,
    sliding_expiry: Option<SlidingExpiry>,
    token_cache_capacity: u64,
    rehash_on_login: bool,
    login_throttle: Option<LoginThrottle>,
    default_scopes: DefaultScopes,
    shared: Box<dyn DynSharedStore>,
    refresh_tokens: Option<RefreshTokens>,
}

impl<U: AuthUser, X: ExtraClaims> AuthenticatorBuilder<U, X> {
    /// Whether a successful login whose stored hash is outdated
    /// ([`PasswordHasher::needs_rehash`]) hashes the password again with the
    /// current parameters and hands the new PHC string to
    /// [`UserStore::update_password_hash`]. Default: on. The rehash runs in
    /// a task of its own after the login is answered, through the same
    /// capped hasher (skipped when its queue is full, tried again at the
    /// next login); it never raises the token version. A store that keeps no
    /// new hashes (the trait's default) answers so once, and the
    /// authenticator stops trying. See the
    /// [`password`](crate::password#timing-every-refused-login-costs-the-same)
    /// docs for why hashes should converge.
    pub fn rehash_on_login(mut self, on: bool) -> Self {
        self.settings.rehash_on_login = on;
        self
    }

    /// How failed logins are throttled; see [`throttle`](crate::throttle)
    /// for the policy. Default: [`LoginThrottle::new`] (5 failures per
    /// username and client, 20 per username, 100 per client, per 15
    /// minutes; clients by peer address). Applied by
    /// [`Authenticator::login`] and so by the token endpoint and the session
    /// login.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_auth::{Authenticator, Key, LoginThrottle, MemoryUserStore, SimpleUser, TokenCodec};
    ///
    /// let throttle = LoginThrottle::builder()
    ///     .per_username_and_client(10, Duration::from_secs(3600))
    ///     .build()
    ///     .unwrap();
    /// let codec = TokenCodec::builder(Key::hs256(&[42; 32]).unwrap()).build().unwrap();
    /// let auth: Authenticator<SimpleUser> = Authenticator::builder(MemoryUserStore::new(), codec)
    ///     .login_throttle(throttle)
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn login_throttle(mut self, throttle: LoginThrottle) -> Self {
        self.settings.login_throttle = Some(throttle);
        self
    }

    /// Turns login throttling off: failed logins are limited by nothing but
    /// their argon2 cost. For apps that throttle logins elsewhere (a
    /// gateway, a shared store of their own) and for benchmarks.
    pub fn no_login_throttle(mut self) -> Self {
        self.settings.login_throttle = None;
        self
    }

    /// How many verified tokens to remember, so that a client sending the
    /// same token again does not pay for its signature again (RS256 and
    /// ES256 verification costs tens of microseconds). `0` turns the cache
    /// off. Default: [`DEFAULT_TOKEN_CACHE_CAPACITY`].
    ///
    /// - Keyed by the token's exact bytes and tied to this authenticator's
    ///   codec (its key set): a codec built with other keys starts empty.
    /// - Holds only tokens that verified, with their claims behind an
    ///   `Arc`; a refused token is never remembered.
    /// - A hit re-runs the codec's claim checks (`exp`, `nbf`, `iss`, `aud`)
    ///   against the clock (an entry is never used after its token's `exp`;
    ///   inserts sweep expired entries out once a minute).
    /// - The user is never cached: it is loaded, and checked for being
    ///   active and for its token version, on every request, so disabling a
    ///   user or raising their token version takes effect on the next
    ///   request.
    /// - Memory: at most about `entries` × (token length + claims); tokens
    ///   are capped by [`Credentials::max_token_len`].
    ///
    /// ```
    /// use tower_auth::{Authenticator, Key, MemoryUserStore, SimpleUser, TokenCodec};
    ///
    /// let codec = TokenCodec::builder(Key::hs256(&[42; 32]).unwrap()).build().unwrap();
    /// let auth: Authenticator<SimpleUser> = Authenticator::builder(MemoryUserStore::new(), codec)
    ///     .token_cache_capacity(100_000)
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn token_cache_capacity(mut self, entries: u64) -> Self {
        self.settings.token_cache_capacity = entries;
        self
    }

    /// Renews aging tokens on successful responses; see
    /// [`refresh`](crate::refresh). Applied by [`AuthLayer`](crate::AuthLayer)
    /// or [`Authenticator::apply_sliding_expiry`].
    pub fn sliding_expiry(mut self, policy: SlidingExpiry) -> Self {
        self.settings.sliding_expiry = Some(policy);
        self
    }

    /// Where to look for tokens. Default: [`Credentials::bearer`].
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.settings.credentials = credentials;
        self
    }

    /// The password hasher used by login. Default: [`PasswordHasher::new`].
    pub fn passwords(mut self, passwords: PasswordHasher) -> Self {
        self.settings.passwords = Some(passwords);
        self
    }

    /// Turns refresh tokens on: a login also returns a `refresh_token`, and
    /// the token endpoint takes `grant_type=refresh_token`; see
    /// [`session`](crate::session) for rotation, reuse detection and the
    /// families' lifetimes. Default: off.
    pub fn refresh_tokens(mut self, refresh: RefreshTokens) -> Self {
        self.settings.refresh_tokens = Some(refresh);
        self
    }

    /// Where revoked sessions and refresh-token families are kept. Default:
    /// a [`MemoryStore`], right for an app that runs as one
    /// instance; several instances share a store of their own (Redis). See
    /// [`session`](crate::session).
    pub fn shared_store(mut self, store: impl SharedStore) -> Self {
        self.settings.shared = Box::new(store);
        self
    }

    /// Which scopes a login (or [`Authenticator::issue_tokens`]) that asks
    /// for none is granted; see [`DefaultScopes`]. Default:
    /// [`DefaultScopes::AllAllowed`], every scope the user holds.
    pub fn default_scopes(mut self, policy: DefaultScopes) -> Self {
        self.settings.default_scopes = policy;
        self
    }

    /// The `realm` of every `WWW-Authenticate` challenge. Default:
    /// `"tower-auth"`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.settings.realm = realm.into();
        self
    }

    /// Browser origins allowed to use the session cookie for WebSocket
    /// upgrades and unsafe requests (`POST`, `PUT`, `PATCH`, `DELETE`, ...),
    /// each `scheme://host[:port]`, e.g. `https://app.example.com`; adds to
    /// those given before. Checked when built (a path, a wildcard or `null`
    /// is a [`ConfigError::Origin`]). Default: none, so only same-origin
    /// browser requests (`Sec-Fetch-Site: same-origin`) may use the cookie
    /// that way. See [`origin`](crate::origin) for the rules.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings
            .allowed_origins
            .extend(origins.into_iter().map(Into::into));
        self
    }

    /// Replaces the error responses everywhere; see [`RenderError`].
    pub fn render_errors(mut self, hook: impl RenderError) -> Self {
        self.settings.render_hook = Some(Arc::new(hook));
        self
    }

    /// The app's own claims for a user's new tokens (issued by login).
    /// Changes the claims type to `Y`.
    pub fn extra_claims<Y: ExtraClaims>(
        self,
        claims_for: impl Fn(&U) -> Y + Send + Sync + 'static,
    ) -> AuthenticatorBuilder<U, Y> {
        AuthenticatorBuilder {
            store: self.store,
            extra_claims: Box::new(claims_for),
            settings: self.settings,
        }
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<Authenticator<U, X>, ConfigError> {
        let settings = self.settings;
        settings.credentials.validate()?;
        let origin = OriginGuard::new(&settings.allowed_origins)?;
        if !is_valid_realm(&settings.realm) {
            return Err(ConfigError::InvalidRealm);
        }
        if let Some(policy) = &settings.sliding_expiry {
            policy.validate(&settings.codec, &settings.credentials)?;
        }
        if let Some(refresh) = &settings.refresh_tokens {
            refresh.validate(settings.codec.access_lifetime())?;
        }
        let verified_tokens = (settings.token_cache_capacity > 0)
            .then(|| VerifiedTokens::new(&settings.codec, settings.token_cache_capacity));
        Ok(Authenticator {
            inner: Arc::new(Inner {
                verified_tokens,
                store: self.store,
                codec: settings.codec,
                credentials: settings.credentials,
                passwords: settings.passwords.unwrap_or_default(),
                renderer: ErrorRenderer::new(settings.realm.into(), settings.render_hook),
                origin,
                extra_claims: self.extra_claims,
                sliding_expiry: settings.sliding_expiry,
                rehash_on_login: AtomicBool::new(settings.rehash_on_login),
                login_throttle: settings.login_throttle,
                default_scopes: settings.default_scopes,
                shared: settings.shared,
                refresh_tokens: settings.refresh_tokens,
            }),
        })
    }
}

impl<U: AuthUser> Authenticator<U> {
    /// Starts an authenticator over the app's user store and a token codec.
    pub fn builder<S>(store: S, codec: TokenCodec) -> AuthenticatorBuilder<U>
    where
        S: UserStore<User = U>,
    {
        AuthenticatorBuilder {
            store: Box::new(store),
            extra_claims: Box::new(|_| ()),
            settings: Settings {
                codec,
                credentials: Credentials::bearer(),
                passwords: None,
                realm: "tower-auth".to_owned(),
                render_hook: None,
                allowed_origins: Vec::new(),
                sliding_expiry: None,
                token_cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
                rehash_on_login: true,
                login_throttle: Some(LoginThrottle::new()),
                default_scopes: DefaultScopes::default(),
                shared: Box::new(MemoryStore::new()),
                refresh_tokens: None,
            },
        }
    }
}

impl<U: AuthUser, X: ExtraClaims> Authenticator<U, X> {
    /// Authenticates a request that must carry credentials: none ->
    /// [`AuthError::MissingCredentials`].
    ///
    /// This is all a server without tower needs (a plain hyper
    /// `service_fn`, say):
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::Full;
    /// use tower_auth::{Authenticator, SimpleUser};
    ///
    /// async fn handle<B>(auth: &Authenticator<SimpleUser>, request: Request<B>) -> Response<Full<Bytes>> {
    ///     let (parts, _body) = request.into_parts();
    ///     match auth.authenticate(&parts).await {
    ///         Ok(identity) => {
    ///             let mut response = Response::new(Full::from(identity.claims.sub.clone()));
    ///             auth.apply_sliding_expiry(&identity.claims, identity.credential, &mut response)
    ///                 .await;
    ///             response
    ///         }
    ///         // 401 / 400 / 503 with the RFC 6750 challenge and JSON body.
    ///         Err(err) => auth.error_response(&err),
    ///     }
    /// }
    /// ```
    pub async fn authenticate(&self, parts: &Parts) -> Result<Authenticated<U, X>, AuthError> {
        self.authenticate_optional(parts)
            .await?
            .ok_or_else(|| AuthError::MissingCredentials)
    }

    /// Authenticates a request on which credentials are optional: none ->
    /// `Ok(None)`. Credentials that are present but bad are still an error
    /// (a client holding a broken token must learn it, not be served as
    /// anonymous).
    pub async fn authenticate_optional(
        &self,
        parts: &Parts,
    ) -> Result<Option<Authenticated<U, X>>, AuthError> {
        let result = match self.inner.credentials.find(parts) {
            Ok(Some(found)) => self.authenticate_found(parts, found).await.map(Some),
            Ok(None) => Ok(None),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = &result {
            log_rejection(err);
        }
        result
    }

    /// The road after the credentials, for a token found in `parts`. The
    /// Origin guard runs as soon as the token's source is known, before any
    /// verification: a foreign page's cookie request costs nothing. The
    /// token's syntax is checked only when the cache does not hold it (a
    /// token there was verified, so it is well-formed); a malformed token is
    /// refused before the Origin guard, as it would be without the cache.
    async fn authenticate_found(
        &self,
        parts: &Parts,
        found: UncheckedToken<'_>,
    ) -> Result<Authenticated<U, X>, AuthError> {
        let kind = found.kind();
        if let Some(hit) = self.cached_claims(found.bytes()) {
            self.inner.origin.check(parts, kind)?;
            return self.load_user(hit?, kind).await;
        }
        let found = found.check()?;
        self.inner.origin.check(parts, kind)?;
        let claims = self.verify_new(&found.token)?;
        self.load_user(claims, kind).await
    }

    /// Verifies `token` and loads its user: the part of the road after the
    /// token has been found.
    pub async fn authenticate_token(
        &self,
        token: &str,
        credential: CredentialKind,
    ) -> Result<Authenticated<U, X>, AuthError> {
        let claims = match self.cached_claims(token.as_bytes()) {
            Some(hit) => hit?,
            None => self.verify_new(token)?,
        };
        self.load_user(claims, credential).await
    }

    /// The claims the verified-token cache holds for `token`, re-checked
    /// against the clock; `None` when it does not hold them (or is off).
    fn cached_claims(&self, token: &[u8]) -> Option<Result<Arc<Claims<X>>, AuthError>> {
        let cache = self.inner.verified_tokens.as_ref()?;
        let hit = cache.get(&self.inner.codec, token)?;
        Some(hit.map_err(AuthError::InvalidToken))
    }

    /// Verifies a token the cache does not hold, and caches its claims.
    fn verify_new(&self, token: &str) -> Result<Arc<Claims<X>>, AuthError> {
        let codec = &self.inner.codec;
        match &self.inner.verified_tokens {
            Some(cache) => cache
                .verify_new(codec, token)
                .map_err(AuthError::InvalidToken),
            None => Ok(Arc::new(codec.verify::<X>(token)?)),
        }
    }

    /// Checks again an identity authenticated earlier, for a connection that
    /// outlives its request (a WebSocket): its claims against the clock
    /// (`exp`, `nbf`), then its user, freshly loaded (exists, active, token
    /// version current). The signature is not checked again: it cannot have
    /// changed. Returns the identity with the user as the store has it now,
    /// and the scopes in effect now: the identity's scopes that the user
    /// still holds (a socket that decided its permissions from the scopes
    /// should decide again from the returned identity's).
    ///
    /// Run it on a timer in the socket's loop; map a failure to a close code
    /// with [`CloseReason::for_rejection`](crate::ws::CloseReason::for_rejection):
    /// a user disabled or a token version raised ("log out everywhere")
    /// then closes the user's open sockets within one interval, not at
    /// `exp`. A failing store is an error, not a revocation; the caller
    /// decides whether to keep the socket until the next check.
    ///
    /// ```no_run
    /// # async fn socket_loop(auth: tower_auth::Authenticator<tower_auth::SimpleUser>, identity: tower_auth::Authenticated<tower_auth::SimpleUser>) {
    /// use std::time::Duration;
    /// use tower_auth::ws::CloseReason;
    ///
    /// let mut recheck = tokio::time::interval(Duration::from_secs(30));
    /// loop {
    ///     tokio::select! {
    ///         _ = recheck.tick() => {
    ///             if let Err(err) = auth.recheck(&identity).await {
    ///                 if let Some(reason) = CloseReason::for_rejection(&err) {
    ///                     // send a Close frame with reason.code() and reason.reason()
    ///                     break;
    ///                 }
    ///             }
    ///         }
    ///         // ... the socket's own messages
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn recheck(
        &self,
        identity: &Authenticated<U, X>,
    ) -> Result<Authenticated<U, X>, AuthError> {
        self.inner
            .codec
            .check_claims(&identity.claims, unix_now())
            .map_err(AuthError::InvalidToken)?;
        self.load_user(Arc::clone(&identity.claims), identity.credential)
            .await
    }

    /// Loads the user verified claims name and checks it may use them.
    async fn load_user(
        &self,
        claims: Arc<Claims<X>>,
        credential: CredentialKind,
    ) -> Result<Authenticated<U, X>, AuthError> {
        let user = self.current_user(&claims).await?;
        // The scopes in effect (decision 15). The usual case keeps the
        // verified claims as they are, the cached `Arc` included.
        let claims = match narrowed_scopes(&claims.scope, user.as_ref()) {
            None => claims,
            Some(scope) => {
                tracing::debug!(sub = ?claims.sub, "token scopes narrowed to those the user holds");
                let mut narrowed = Claims::clone(&claims);
                narrowed.scope = scope;
                Arc::new(narrowed)
            }
        };
        tracing::debug!(sub = ?claims.sub, ?credential, "request authenticated");
        Ok(Authenticated {
            user,
            claims,
            credential,
        })
    }

    /// The user `claims` name, as the store has them now, if they may still
    /// use the claims: the session not logged out (checked first, in
    /// memory), the user known, active, and at the token's version.
    async fn current_user(&self, claims: &Claims<X>) -> Result<Arc<U>, AuthError> {
        if let Some(sid) = &claims.sid {
            match self.inner.shared.session_status(sid) {
                Ok(SessionStatus::Active) => {}
                Ok(SessionStatus::Revoked) => {
                    return Err(AuthError::InvalidToken(TokenRejection::SessionRevoked));
                }
                Err(err) => return Err(AuthError::SharedStore(err)),
            }
        }
        let user = self
            .inner
            .store
            .find_by_subject(&claims.sub)
            .await
            .map_err(AuthError::UserStore)?
            .ok_or(AuthError::InvalidToken(TokenRejection::UnknownUser))?;
        if !user.is_active() {
            return Err(AuthError::InvalidToken(TokenRejection::InactiveUser));
        }
        if claims.token_version.unwrap_or(0) != user.token_version() {
            return Err(AuthError::InvalidToken(TokenRejection::Revoked));
        }
        Ok(user)
    }

    /// Adds a renewed token to a successful `response` when the
    /// sliding-expiry policy says one is due for the request's `claims` (and
    /// `credential`, from [`Authenticated`]); does nothing without a policy.
    /// [`AuthLayer`](crate::AuthLayer) calls this for you.
    ///
    /// When a renewal is due, the user is loaded again — the handler may
    /// have just disabled them or raised their token version ("log out
    /// everywhere") — and no token is handed out for a user who is gone,
    /// disabled or whose token version changed; the renewed token carries
    /// the scopes the user holds now. That lookup happens at most once per
    /// client per half-life; a request with nothing due costs a few integer
    /// comparisons and no lookup. A failing store skips the renewal (logged
    /// as a warning): the response itself is not changed.
    /// See [`refresh`](crate::refresh) for the rules and delivery.
    pub async fn apply_sliding_expiry<B>(
        &self,
        claims: &Claims<X>,
        credential: CredentialKind,
        response: &mut Response<B>,
    ) {
        let Some(policy) = &self.inner.sliding_expiry else {
            return;
        };
        let codec = &self.inner.codec;
        let credentials = &self.inner.credentials;
        let now = unix_now();
        let Some(due) = policy.due_for(
            claims,
            codec.access_lifetime(),
            now,
            credential,
            credentials,
            response,
        ) else {
            return;
        };
        let Some(scope) = self.scopes_for_renewal(claims).await else {
            return;
        };
        let renewed = policy.renewed(claims, due, now, scope);
        let token = match codec.issue(&renewed) {
            Ok(token) => token,
            Err(err) => {
                tracing::error!(error = %err, "renewing a token failed");
                return;
            }
        };
        let max_age = std::time::Duration::from_secs(renewed.exp.saturating_sub(now));
        policy.deliver(credentials, credential, &token, max_age, response);
        tracing::debug!(sub = ?renewed.sub, exp = renewed.exp, "token renewed");
    }

    /// The user reloaded for a renewal that is due: the scopes the renewed
    /// token may carry, or `None` when no token may be handed out.
    async fn scopes_for_renewal(&self, claims: &Claims<X>) -> Option<Scopes> {
        match self.current_user(claims).await {
            Ok(user) => Some(
                narrowed_scopes(&claims.scope, user.as_ref())
                    .unwrap_or_else(|| claims.scope.clone()),
            ),
            Err(err @ (AuthError::UserStore(_) | AuthError::SharedStore(_))) => {
                tracing::warn!(sub = ?claims.sub, error = %err, "renewal skipped");
                None
            }
            Err(err) => {
                tracing::debug!(sub = ?claims.sub, reason = err.reason_code(), "renewal skipped");
                None
            }
        }
    }

    /// The sliding-expiry policy, if any.
    pub fn sliding_expiry_policy(&self) -> Option<&SlidingExpiry> {
        self.inner.sliding_expiry.as_ref()
    }

    /// The response for `error`: status, `WWW-Authenticate`, JSON body,
    /// passed through the app's [`RenderError`] hook if one is set.
    pub fn error_response(&self, error: &AuthError) -> Response<Full<Bytes>> {
        self.inner.renderer.render(error)
    }

    /// The renderer behind [`error_response`](Self::error_response), for
    /// the guards and extractors that answer for this authenticator.
    pub(crate) fn renderer(&self) -> &ErrorRenderer {
        &self.inner.renderer
    }

    /// The app's user store, for [`login`](crate::login).
    pub(crate) fn store(&self) -> &dyn DynUserStore<U> {
        self.inner.store.as_ref()
    }

    /// Whether logins still rehash outdated hashes
    /// ([`AuthenticatorBuilder::rehash_on_login`]).
    pub(crate) fn rehashes_on_login(&self) -> bool {
        self.inner.rehash_on_login.load(Ordering::Relaxed)
    }

    /// Stops rehashing on login: the store keeps no new hashes.
    pub(crate) fn stop_rehashing(&self) {
        self.inner.rehash_on_login.store(false, Ordering::Relaxed);
    }

    /// The app's own claims for new tokens of `user`
    /// ([`AuthenticatorBuilder::extra_claims`]).
    pub(crate) fn extra_claims_for(&self, user: &U) -> X {
        (self.inner.extra_claims)(user)
    }

    /// The store of revoked sessions and refresh-token families.
    pub(crate) fn shared(&self) -> &dyn DynSharedStore {
        self.inner.shared.as_ref()
    }

    /// The refresh-token settings, when refresh tokens are on.
    pub(crate) fn refresh_tokens(&self) -> Option<&RefreshTokens> {
        self.inner.refresh_tokens.as_ref()
    }

    /// What a login that asks for no scope gets
    /// ([`AuthenticatorBuilder::default_scopes`]).
    pub(crate) fn default_scopes(&self) -> &DefaultScopes {
        &self.inner.default_scopes
    }

    /// This authenticator without its types, for a request's extensions.
    #[cfg(feature = "axum")]
    pub(crate) fn erase(&self) -> Arc<dyn Any + Send + Sync> {
        self.inner.clone()
    }

    /// The authenticator [`erase`](Self::erase) made, if it has these types.
    #[cfg(feature = "axum")]
    pub(crate) fn unerase(erased: &Arc<dyn Any + Send + Sync>) -> Option<Self> {
        let inner = Arc::clone(erased).downcast::<Inner<U, X>>().ok()?;
        Some(Authenticator { inner })
    }

    /// The Origin guard built from
    /// [`AuthenticatorBuilder::allowed_origins`]; `authenticate` applies it.
    pub fn origin_guard(&self) -> &OriginGuard {
        &self.inner.origin
    }

    /// The token codec.
    pub fn codec(&self) -> &TokenCodec {
        &self.inner.codec
    }

    /// The password hasher.
    pub fn passwords(&self) -> &PasswordHasher {
        &self.inner.passwords
    }

    /// The login throttle, unless turned off.
    pub fn login_throttle(&self) -> Option<&LoginThrottle> {
        self.inner.login_throttle.as_ref()
    }

    /// The credential sources.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }
}

/// The token's scopes that `user` still holds, when that is fewer than the
/// token's; `None` when the user holds them all (the usual case: a subset
/// check, no allocation).
fn narrowed_scopes<U: AuthUser>(granted: &Scopes, user: &U) -> Option<Scopes> {
    if granted.is_empty() {
        return None;
    }
    let allowed = user.allowed_scopes();
    if granted.is_subset(&allowed) {
        None
    } else {
        Some(granted.intersection(&allowed))
    }
}

/// One log line per rejected request: a reason code, never request text.
pub(crate) fn log_rejection(err: &AuthError) {
    match err {
        AuthError::MissingCredentials => {}
        AuthError::Origin(reason) => {
            tracing::info!(
                reason = reason.reason_code(),
                "cookie request from a foreign origin refused"
            );
        }
        AuthError::UserStore(source) => tracing::error!(error = %source, "user store failed"),
        AuthError::SharedStore(source) => {
            tracing::error!(error = %source, "shared store failed")
        }
        AuthError::InvalidToken(reason) => {
            tracing::debug!(reason = reason.reason_code(), "token refused");
        }
        // A shared throttle's store failure was logged where it happened.
        AuthError::LoginThrottled(throttled) if throttled.store_unavailable() => {}
        AuthError::LoginThrottled(_) => {
            tracing::info!(outcome = "too_many_requests", "login throttled");
        }
        other => tracing::debug!(reason = %other, "request refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scopes;
    use crate::token::Key;
    use crate::user::{MemoryUserStore, SimpleUser};

    #[tokio::test]
    async fn recheck_sees_the_user_as_the_store_has_it_now() {
        let codec = TokenCodec::builder(Key::hs256(&[3; 32]).unwrap())
            .build()
            .unwrap();
        let users = MemoryUserStore::new();
        users.insert(SimpleUser::new("u1", "unused"));
        let auth: Authenticator<SimpleUser> = Authenticator::builder(users.clone(), codec.clone())
            .build()
            .unwrap();
        let token = codec
            .issue(&codec.new_claims("u1", Scopes::none(), 0, ()))
            .unwrap();
        let identity = auth
            .authenticate_token(&token, CredentialKind::Bearer)
            .await
            .unwrap();
        assert!(auth.recheck(&identity).await.is_ok());

        users.update("u1", |u| u.token_version = 1);
        assert!(matches!(
            auth.recheck(&identity).await,
            Err(AuthError::InvalidToken(TokenRejection::Revoked))
        ));
        users.update("u1", |u| {
            u.token_version = 0;
            u.active = false;
        });
        assert!(matches!(
            auth.recheck(&identity).await,
            Err(AuthError::InvalidToken(TokenRejection::InactiveUser))
        ));
        users.update("u1", |u| u.active = true);
        let mut expired = (*identity.claims).clone();
        expired.exp = unix_now();
        let stale = Authenticated {
            claims: Arc::new(expired),
            ..identity.clone()
        };
        assert!(matches!(
            auth.recheck(&stale).await,
            Err(AuthError::InvalidToken(TokenRejection::Expired))
        ));
        assert!(auth.recheck(&identity).await.is_ok());
    }

    #[tokio::test]
    async fn recheck_narrows_the_scopes_to_those_the_user_holds_now() {
        let codec = TokenCodec::builder(Key::hs256(&[3; 32]).unwrap())
            .build()
            .unwrap();
        let users = MemoryUserStore::new();
        users.insert(
            SimpleUser::new("u1", "unused").with_scopes(Scopes::parse("read write").unwrap()),
        );
        let auth: Authenticator<SimpleUser> = Authenticator::builder(users.clone(), codec.clone())
            .build()
            .unwrap();
        let token = codec
            .issue(&codec.new_claims("u1", Scopes::parse("read write").unwrap(), 0, ()))
            .unwrap();
        let identity = auth
            .authenticate_token(&token, CredentialKind::Bearer)
            .await
            .unwrap();
        let unchanged = auth.recheck(&identity).await.unwrap();
        assert!(
            Arc::ptr_eq(&unchanged.claims, &identity.claims),
            "claims the user still holds are kept as they are"
        );
        users.update("u1", |u| u.scopes = Scopes::parse("read other").unwrap());
        let narrowed = auth.recheck(&identity).await.unwrap();
        assert_eq!(narrowed.claims.scope.to_string(), "read");
        assert_eq!(identity.claims.scope.to_string(), "read write");
    }
}
