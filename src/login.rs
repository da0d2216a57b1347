//! Logging in: the OAuth2 resource-owner password grant (RFC 6749 §4.3) as
//! [`Authenticator::login`], and framework-neutral endpoints around it. The
//! request form, the token response and the §5.2 errors are the
//! [`grant`](crate::grant) module's; errors are rendered by the
//! [`error`](crate::error) module like every other error.
//!
//! # Cookie sessions
//!
//! For browser apps, [`session_login_endpoint`] is the same endpoint that
//! sets the access token as the session cookie instead (the
//! [`SessionCookie`] of the authenticator's
//! [`Credentials`](crate::Credentials): `HttpOnly`, `Secure`, `SameSite=Lax`,
//! `Path=/`, `Max-Age` = the token's lifetime). Its JSON body carries no
//! token — `{"token_type": "Bearer", "expires_in": …, "scope": …}` — so that
//! no page script ever holds it (that is what `HttpOnly` is for); an app
//! whose page must hand the token on (an `Authorization` header, a
//! WebSocket subprotocol) opts in with
//! [`SessionCookie::token_in_login_body`], and gives that protection up.
//! Clients that want a token in hand use [`token_endpoint`]. Like the token
//! endpoint, it ignores the request's own credentials: a stale cookie or
//! bearer token never blocks a new login. [`logout_endpoint`] clears the
//! cookie. Both
//! responses carry [`Renewal::Skip`], and both refuse (403) a browser request
//! from a page the [`origin`](crate::origin) guard does not allow (login
//! CSRF, logout CSRF); a client sending neither `Origin` nor
//! `Sec-Fetch-Site` (`curl`) is served.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};

use crate::authenticator::{Authenticator, log_rejection};
use crate::credentials::{CredentialKind, SessionCookie, cookie_value};
use crate::error::AuthError;
use crate::grant::{
    GrantError, MAX_FORM_LEN, PasswordGrant, TokenRequest, TokenResponse, is_form_content_type,
};
use crate::password::PasswordError;
use crate::refresh::Renewal;
use crate::scope::Scopes;
use crate::session::{Family, FamilyKey, RefreshToken, RefreshTokens, Rotation, new_session_id};
use crate::token::{Claims, ExtraClaims, unix_now};
use crate::user::{AuthUser, PasswordUpdate};

// `Authenticator::login` is defined here, not in `authenticator`, so that
// imports run one way: this room uses the authenticator, never the reverse.
impl<U: AuthUser, X: ExtraClaims> Authenticator<U, X> {
    /// The OAuth2 password grant: checks the password (off the async
    /// workers), then answers as [`issue_tokens`](Self::issue_tokens) does:
    /// the requested scopes the user holds (the
    /// [default scopes](crate::AuthenticatorBuilder::default_scopes) when
    /// none are requested; `invalid_scope` when the user holds none of those
    /// requested).
    ///
    /// `client` is the client's key for the
    /// [login throttle](crate::AuthenticatorBuilder::login_throttle) (the
    /// endpoints take it from the request with
    /// [`LoginThrottle::client_key`](crate::LoginThrottle::client_key));
    /// `None` leaves only the per-username
    /// budget. Past a budget the login is refused with
    /// [`AuthError::LoginThrottled`] (429) before the user is looked up and
    /// before any argon2 work. A refusal is counted before it is answered.
    ///
    /// Unknown user, wrong password, disabled user, user without a
    /// password, malformed or over-ceiling stored hash all give the same
    /// [`GrantError::InvalidGrant`], at the same cost: the costliest
    /// verification's, through a dummy verification and a floor under
    /// every refusal (see the [`password`](crate::password#timing-every-refused-login-costs-the-same)
    /// docs).
    pub async fn login(
        &self,
        grant: &PasswordGrant,
        client: Option<&str>,
    ) -> Result<TokenResponse, AuthError> {
        let attempt = match self.login_throttle() {
            Some(throttle) => Some(throttle.check(&grant.username, client).await?),
            None => None,
        };
        let started = tokio::time::Instant::now();
        let user = match self.check_password(grant).await {
            Ok(user) => user,
            Err(err) => {
                if matches!(err, AuthError::Grant(GrantError::InvalidGrant)) {
                    // Counted now: a client hanging up during the wait
                    // below does not escape it.
                    if let Some(attempt) = attempt {
                        attempt.failed().await;
                    }
                    // Not before the costliest recent verification would
                    // have answered: a cheaper hash must not show.
                    let floor = self.passwords().failure_floor();
                    tokio::time::sleep_until(started + floor).await;
                }
                return Err(err);
            }
        };
        if let Some(attempt) = attempt {
            attempt.succeeded().await;
        }
        tracing::info!(sub = ?user.subject(), outcome = "token_issued", "login succeeded");
        if self.rehashes_on_login()
            && user
                .password_hash()
                .is_some_and(|stored| self.passwords().needs_rehash(stored))
        {
            // Not awaited: the login is answered now.
            tokio::spawn(
                self.clone()
                    .rehash(Arc::clone(&user), grant.password.clone()),
            );
        }
        self.issue_tokens(&user, grant.scope.as_ref()).await
    }

    /// Hashes `password` again with the current parameters and hands the
    /// new PHC string to the store; see
    /// [`AuthenticatorBuilder::rehash_on_login`](crate::AuthenticatorBuilder::rehash_on_login).
    async fn rehash(self, user: Arc<U>, password: String) {
        let sub = user.subject();
        let new_hash = match self.passwords().hash(&password).await {
            Ok(new_hash) => new_hash,
            Err(err) => {
                tracing::info!(sub = ?sub, error = %err, "password rehash skipped");
                return;
            }
        };
        match self.store().update_password_hash(&user, new_hash).await {
            Ok(PasswordUpdate::Updated) => tracing::info!(sub = ?sub, "password rehashed"),
            Ok(PasswordUpdate::Stale) => {
                tracing::info!(sub = ?sub, "password rehash dropped: the stored hash changed");
            }
            Ok(PasswordUpdate::Unsupported) => {
                self.stop_rehashing();
                tracing::info!(
                    "the user store keeps no new password hashes: rehash on login stops"
                );
            }
            Err(err) => {
                tracing::error!(sub = ?sub, error = %err, "user store failed to keep a rehashed password")
            }
        }
    }

    /// The user whose password `grant` carries, if they may log in; every
    /// refusal is [`GrantError::InvalidGrant`] after an argon2 run, real or
    /// dummy.
    async fn check_password(&self, grant: &PasswordGrant) -> Result<Arc<U>, AuthError> {
        let passwords = self.passwords();
        let user = self
            .store()
            .find_by_username(&grant.username)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "user store failed during login");
                AuthError::UserStore(err)
            })?;
        let Some((user, stored)) = user.as_ref().and_then(|u| Some((u, u.password_hash()?))) else {
            passwords.verify_unknown_user(&grant.password).await?;
            tracing::info!(
                outcome = "invalid_grant",
                reason = "unknown_user",
                "login refused"
            );
            return Err(GrantError::InvalidGrant.into());
        };
        let matches = match passwords.verify(&grant.password, stored).await {
            Ok(matches) => matches,
            Err(PasswordError::TooLong) => false,
            // Too many logins at once: 503, for a known user as for an
            // unknown one.
            Err(err @ PasswordError::Busy) => return Err(err.into()),
            Err(err) => {
                tracing::error!(sub = ?user.subject(), error = %err, "stored password hash unusable");
                // Refused before argon2 ran: spend what a verification
                // costs anyway (DESIGN decision 13).
                passwords.verify_unknown_user(&grant.password).await?;
                false
            }
        };
        if !matches || !user.is_active() {
            let reason = if matches {
                "inactive_user"
            } else {
                "wrong_password"
            };
            tracing::info!(
                sub = ?user.subject(),
                outcome = "invalid_grant",
                reason,
                "login refused"
            );
            return Err(GrantError::InvalidGrant.into());
        }
        Ok(Arc::clone(user))
    }

    /// The token response a login gives, for a user the app holds — one it
    /// just signed up, say, or a test's: an access token with the app's own
    /// claims ([`extra_claims`](crate::AuthenticatorBuilder::extra_claims))
    /// and the user's token version, granting the `requested` scopes the
    /// user holds (with `None`, the
    /// [default scopes](crate::AuthenticatorBuilder::default_scopes)). It
    /// checks no password: call it only for a user your own code has
    /// authenticated. A disabled user gets [`GrantError::InvalidGrant`];
    /// asking only for scopes the user does not hold,
    /// [`GrantError::InvalidScope`] (RFC 6749 §5.2).
    ///
    /// ```no_run
    /// # use tower_auth::{Authenticator, SimpleUser};
    /// # async fn signup(auth: Authenticator<SimpleUser>, user: SimpleUser) -> Result<(), tower_auth::AuthError> {
    /// // ... after inserting `user` into the store:
    /// let response = auth.issue_tokens(&user, None).await?;
    /// let http_response = response.into_response(); // 200, no-store, the JSON of a login
    /// # Ok(()) }
    /// ```
    pub async fn issue_tokens(
        &self,
        user: &U,
        requested: Option<&Scopes>,
    ) -> Result<TokenResponse, AuthError> {
        if !user.is_active() {
            return Err(GrantError::InvalidGrant.into());
        }
        let held = user.allowed_scopes();
        let scope = match requested {
            Some(requested) => {
                let granted = requested.intersection(&held);
                // Asking only for scopes the user does not hold is
                // `invalid_scope` (RFC 6749 §5.2).
                if !requested.is_empty() && granted.is_empty() {
                    return Err(GrantError::InvalidScope.into());
                }
                granted
            }
            None => self.default_scopes().granted(&held),
        };
        let codec = self.codec();
        let mut claims = codec.new_claims(
            user.subject(),
            scope,
            user.token_version(),
            self.extra_claims_for(user),
        );
        // Every login starts a session: what a logout revokes.
        claims.sid = Some(new_session_id());
        let access_token = codec.issue(&claims)?;
        let mut response =
            TokenResponse::bearer(access_token, codec.access_lifetime(), claims.scope.clone());
        if let Some(refresh) = self.refresh_tokens() {
            let token = self.start_family(&claims, refresh).await?;
            response.refresh_token = Some(token.as_str().to_owned());
        }
        tracing::debug!(sub = ?user.subject(), "tokens issued");
        Ok(response)
    }

    /// Starts the refresh-token family of the session `claims` begin, and
    /// returns its first token.
    async fn start_family(
        &self,
        claims: &Claims<X>,
        refresh: &RefreshTokens,
    ) -> Result<RefreshToken, AuthError> {
        let now = unix_now();
        let token = RefreshToken::generate()
            .map_err(|_| AuthError::Internal("no randomness for a refresh token"))?;
        let family = Family {
            sid: claims.sid.clone().unwrap_or_default(),
            subject: claims.sub.clone(),
            scope: claims.scope.clone(),
            token_version: claims.token_version.unwrap_or(0),
            auth_time: now,
            absolute_expiry: now.saturating_add(refresh.absolute_lifetime.as_secs()),
            idle_timeout: refresh.idle_timeout.as_secs(),
            last_used: now,
            key: FamilyKey::generate()
                .map_err(|_| AuthError::Internal("no randomness for a refresh token"))?,
            current: token.hash(),
            previous: None,
            spent: Vec::new(),
        };
        self.shared()
            .create_family(family, self.revoked_until(now))
            .await
            .map_err(AuthError::SharedStore)?;
        Ok(token)
    }

    /// The refresh-token grant (RFC 6749 §6): spends `refresh_token` and
    /// answers with a new access token and its successor (rotation). The
    /// `requested` scopes may narrow those of the login, never widen them
    /// (`invalid_scope`); either way the token carries only those the user
    /// holds now.
    ///
    /// Every refresh token that cannot be used — malformed, unknown, spent,
    /// expired, revoked, or its user gone, disabled or at another token
    /// version — gets the same [`GrantError::InvalidGrant`]. A spent token
    /// presented after the grace window is reuse: the whole family and its
    /// session are revoked (its access tokens stop working) and a warning
    /// is logged (`refresh token reused`, with the subject, never a token).
    /// See [`session`](crate::session).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        requested: Option<&Scopes>,
    ) -> Result<TokenResponse, AuthError> {
        let Some(refresh) = self.refresh_tokens() else {
            return Err(GrantError::UnsupportedGrantType.into());
        };
        let refused = |reason: &'static str| {
            tracing::info!(outcome = "invalid_grant", reason, "refresh refused");
            AuthError::from(GrantError::InvalidGrant)
        };
        let Some(presented) = RefreshToken::parse(refresh_token) else {
            return Err(refused("malformed"));
        };
        let shared = self.shared();
        let Some(family) = shared
            .find_family(&presented.hash())
            .await
            .map_err(AuthError::SharedStore)?
        else {
            return Err(refused("unknown"));
        };
        // Checked before anything is spent, so a refused request leaves the
        // token as it was.
        if requested.is_some_and(|requested| !requested.is_subset(&family.scope)) {
            return Err(GrantError::InvalidScope.into());
        }
        let now = unix_now();
        let user = self
            .store()
            .find_by_subject(&family.subject)
            .await
            .map_err(AuthError::UserStore)?;
        let Some(user) =
            user.filter(|user| user.is_active() && user.token_version() == family.token_version)
        else {
            shared
                .revoke_session(&family.sid, self.revoked_until(now))
                .await
                .map_err(AuthError::SharedStore)?;
            return Err(refused("user_revoked"));
        };
        let successor = presented.successor(&family.key);
        let rotation = shared
            .rotate(
                &presented.hash(),
                &successor.hash(),
                now,
                refresh.grace,
                self.revoked_until(now),
            )
            .await
            .map_err(AuthError::SharedStore)?;
        let family = match rotation {
            Rotation::Rotated(family) | Rotation::Replayed(family) => family,
            Rotation::Reused(family) => {
                tracing::warn!(
                    sub = ?family.subject,
                    sid = ?family.sid,
                    outcome = "refresh_token_reuse",
                    "refresh token reused: its session is revoked"
                );
                return Err(refused("reused"));
            }
            Rotation::Expired => return Err(refused("expired")),
            Rotation::Unknown => return Err(refused("unknown")),
        };
        let scope = requested
            .unwrap_or(&family.scope)
            .intersection(&user.allowed_scopes());
        let codec = self.codec();
        let mut claims = codec.new_claims(
            user.subject(),
            scope,
            user.token_version(),
            self.extra_claims_for(&user),
        );
        claims.sid = Some(family.sid);
        claims.auth_time = Some(family.auth_time);
        let access_token = codec.issue(&claims)?;
        tracing::info!(sub = ?claims.sub, outcome = "token_issued", "refresh succeeded");
        let mut response =
            TokenResponse::bearer(access_token, codec.access_lifetime(), claims.scope);
        response.refresh_token = Some(successor.as_str().to_owned());
        Ok(response)
    }

    /// Logs out the session `claims` belong to (their `sid`): its access
    /// tokens are refused from the next request on, by every instance that
    /// shares the [shared store](crate::AuthenticatorBuilder::shared_store),
    /// and its refresh-token family ends. The user's other sessions are
    /// untouched. `Ok(false)` for claims that carry no session (nothing to
    /// revoke). The crate's logout endpoints call it; so can an app's own
    /// handler, or a hyper service:
    ///
    /// ```no_run
    /// # async fn handler(auth: tower_auth::Authenticator<tower_auth::SimpleUser>, identity: tower_auth::Authenticated<tower_auth::SimpleUser>) -> Result<(), tower_auth::AuthError> {
    /// auth.logout(&identity.claims).await?;
    /// # Ok(()) }
    /// ```
    pub async fn logout(&self, claims: &Claims<X>) -> Result<bool, AuthError> {
        let Some(sid) = &claims.sid else {
            return Ok(false);
        };
        self.shared()
            .revoke_session(sid, self.revoked_until(unix_now()))
            .await
            .map_err(AuthError::SharedStore)?;
        tracing::info!(sub = ?claims.sub, "session logged out");
        Ok(true)
    }

    /// Ends the session `refresh_token` belongs to, as [`logout`](Self::logout)
    /// does (RFC 7009 in spirit): for a client whose access token has
    /// expired. `Ok(false)` when the token belongs to no live family.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> Result<bool, AuthError> {
        let Some(token) = RefreshToken::parse(refresh_token) else {
            return Ok(false);
        };
        let shared = self.shared();
        let Some(family) = shared
            .find_family(&token.hash())
            .await
            .map_err(AuthError::SharedStore)?
        else {
            return Ok(false);
        };
        shared
            .revoke_session(&family.sid, self.revoked_until(unix_now()))
            .await
            .map_err(AuthError::SharedStore)?;
        tracing::info!(sub = ?family.subject, "session logged out by its refresh token");
        Ok(true)
    }

    /// Until when a session revoked `now` must stay revoked: until every
    /// access token that could carry it has expired (a revoked session is
    /// never renewed or refreshed).
    fn revoked_until(&self, now: u64) -> u64 {
        now.saturating_add(self.codec().longest_token_life().as_secs())
    }
}

/// A complete token endpoint for any server that speaks `http` types: reads
/// the body (at most [`MAX_FORM_LEN`] bytes), parses the grant — the
/// password grant, or `grant_type=refresh_token` when refresh tokens are on
/// — and renders the answer, success or error. With a
/// [refresh-token cookie](crate::session::RefreshTokens::cookie), the
/// refresh token travels in that cookie, not in the body, both ways.
///
/// ```no_run
/// # use tower_auth::{Authenticator, SimpleUser};
/// # async fn serve(auth: Authenticator<SimpleUser>, request: http::Request<http_body_util::Full<bytes::Bytes>>) {
/// let response = tower_auth::login::token_endpoint(&auth, request).await;
/// # }
/// ```
pub async fn token_endpoint<U, X, B>(
    auth: &Authenticator<U, X>,
    request: Request<B>,
) -> Response<Full<Bytes>>
where
    U: AuthUser,
    X: ExtraClaims,
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut response = match token_request(auth, request).await {
        Ok(token) => {
            let (token, refresh_cookie) = refresh_token_delivery(auth, token);
            let mut response = token.into_response();
            if let Some(set_cookie) = refresh_cookie {
                response.headers_mut().append(SET_COOKIE, set_cookie);
            }
            response
        }
        Err(err) => auth.error_response(&err),
    };
    // A login response is never the place to renew the caller's old token.
    response.extensions_mut().insert(Renewal::Skip);
    response
}

/// [`token_endpoint`] for browsers: on success the token is set as the
/// session cookie (`Max-Age` = the token's lifetime) and the body says
/// `token_type`, `expires_in` and `scope` — the token itself only with
/// [`SessionCookie::token_in_login_body`]; see
/// [cookie sessions](self#cookie-sessions). Errors are the token endpoint's,
/// plus 403 [`AuthError::Origin`] for a foreign page, and 500 when the
/// authenticator's [`Credentials`](crate::Credentials) have no cookie source
/// (a programming error, logged as such).
///
/// A login never renews or replaces anything but the cookie it sets: a
/// failed login leaves an existing cookie alone.
pub async fn session_login_endpoint<U, X, B>(
    auth: &Authenticator<U, X>,
    request: Request<B>,
) -> Response<Full<Bytes>>
where
    U: AuthUser,
    X: ExtraClaims,
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = request.into_parts();
    let result = match session_cookie(auth, &parts) {
        Ok(cookie) => token_request(auth, Request::from_parts(parts, body))
            .await
            .map(|token| {
                let (token, refresh_cookie) = refresh_token_delivery(auth, token);
                let max_age = Duration::from_secs(token.expires_in);
                let set_cookie = cookie.set_cookie(&token.access_token, max_age);
                let mut response = if cookie.login_body_has_token() {
                    token.into_response()
                } else {
                    session_response(token)
                };
                let headers = response.headers_mut();
                headers.append(SET_COOKIE, set_cookie);
                if let Some(set_cookie) = refresh_cookie {
                    headers.append(SET_COOKIE, set_cookie);
                }
                response
            }),
        Err(err) => Err(err),
    };
    let mut response = result.unwrap_or_else(|err| auth.error_response(&err));
    response.extensions_mut().insert(Renewal::Skip);
    response
}

/// The token response without its token, for a session login: what a page
/// script may know about the session it holds by cookie.
fn session_response(token: TokenResponse) -> Response<Full<Bytes>> {
    #[derive(serde::Serialize)]
    struct SessionBody<'a> {
        token_type: &'a str,
        expires_in: u64,
        #[serde(skip_serializing_if = "Scopes::is_empty")]
        scope: &'a Scopes,
    }
    let body = SessionBody {
        token_type: token.token_type,
        expires_in: token.expires_in,
        scope: &token.scope,
    };
    // Serializing strings and a number into JSON cannot fail.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    // The headers of a token response (`no-store`, ...), another body.
    let (parts, _) = token.into_response().into_parts();
    Response::from_parts(parts, Full::new(Bytes::from(body)))
}

/// Moves a token response's refresh token into the refresh-token cookie,
/// when refresh tokens travel in one (never readable by page scripts).
fn refresh_token_delivery<U, X>(
    auth: &Authenticator<U, X>,
    mut token: TokenResponse,
) -> (TokenResponse, Option<HeaderValue>)
where
    U: AuthUser,
    X: ExtraClaims,
{
    let Some(refresh) = auth.refresh_tokens() else {
        return (token, None);
    };
    let Some(cookie) = &refresh.cookie else {
        return (token, None);
    };
    let set_cookie = token
        .refresh_token
        .take()
        .map(|refresh_token| cookie.set_cookie(&refresh_token, refresh.idle_timeout));
    (token, set_cookie)
}

/// Logout: revokes the session of the request's access token (bearer or
/// cookie) through [`Authenticator::logout`] — its access tokens are
/// refused from the next request on and its refresh-token family ends —
/// and, with a refresh-token cookie, the session that cookie's token
/// belongs to. Then `204 No Content`, `Cache-Control: no-store`,
/// [`Renewal::Skip`], and a `Set-Cookie` deleting the session cookie (and
/// the refresh-token cookie) where the authenticator has them.
///
/// A request whose token is expired or invalid is answered 204 too:
/// there is nothing it could revoke, and a user whose cookie expired must
/// still be able to clear it, so mount it outside any layer that requires
/// authentication. 403 for a foreign page when cookies are in use (logout
/// CSRF); 503 when the session store fails.
pub async fn logout_endpoint<U, X>(
    auth: &Authenticator<U, X>,
    parts: &Parts,
) -> Response<Full<Bytes>>
where
    U: AuthUser,
    X: ExtraClaims,
{
    let mut response = match logout(auth, parts).await {
        Ok(removals) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            let headers = response.headers_mut();
            for removal in removals {
                headers.append(SET_COOKIE, removal);
            }
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => auth.error_response(&err),
    };
    response.extensions_mut().insert(Renewal::Skip);
    response
}

/// Revokes what the request can prove it holds; the `Set-Cookie` values
/// that delete the authenticator's cookies.
async fn logout<U, X>(
    auth: &Authenticator<U, X>,
    parts: &Parts,
) -> Result<Vec<HeaderValue>, AuthError>
where
    U: AuthUser,
    X: ExtraClaims,
{
    let session_cookie = auth.credentials().session_cookie_config();
    let refresh_cookie = auth
        .refresh_tokens()
        .and_then(|refresh| refresh.cookie.as_ref());
    if session_cookie.is_some() || refresh_cookie.is_some() {
        check_session_change(auth, parts)?;
    }
    match auth.authenticate_optional(parts).await {
        Ok(Some(identity)) => {
            auth.logout(&identity.claims).await?;
        }
        // A failing store is an answer to give; a token that is refused
        // (expired, revoked, malformed) revokes nothing.
        Err(err @ (AuthError::UserStore(_) | AuthError::SharedStore(_))) => return Err(err),
        Ok(None) | Err(_) => {}
    }
    if let Some(cookie) = refresh_cookie
        && let Ok(Some(token)) = cookie_value(parts, cookie.name())
    {
        auth.revoke_refresh_token(&token).await?;
    }
    Ok(session_cookie
        .into_iter()
        .chain(refresh_cookie)
        .map(SessionCookie::removal)
        .collect())
}

/// The cookie to set or clear, once the request's origin is accepted.
fn session_cookie<'a, U, X>(
    auth: &'a Authenticator<U, X>,
    parts: &Parts,
) -> Result<&'a SessionCookie, AuthError>
where
    U: AuthUser,
    X: ExtraClaims,
{
    let Some(cookie) = auth.credentials().session_cookie_config() else {
        tracing::error!("session login needs a cookie source in the authenticator's Credentials");
        return Err(AuthError::Internal(
            "the authenticator has no session cookie configured",
        ));
    };
    check_session_change(auth, parts)?;
    Ok(cookie)
}

/// The Origin rule for requests that set or clear a cookie (login and
/// logout CSRF).
fn check_session_change<U, X>(auth: &Authenticator<U, X>, parts: &Parts) -> Result<(), AuthError>
where
    U: AuthUser,
    X: ExtraClaims,
{
    auth.origin_guard()
        .check_session_change(parts)
        .map_err(|rejection| {
            let err = AuthError::from(rejection);
            // Logged as a refused cookie request is, so login and logout
            // CSRF attempts show in the log too.
            log_rejection(&err);
            err
        })
}

/// Reads a token request and serves its grant.
async fn token_request<U, X, B>(
    auth: &Authenticator<U, X>,
    request: Request<B>,
) -> Result<TokenResponse, AuthError>
where
    U: AuthUser,
    X: ExtraClaims,
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = request.into_parts();
    let content_type = parts.headers.get(CONTENT_TYPE);
    if !content_type.is_some_and(is_form_content_type) {
        return Err(GrantError::UnsupportedMediaType.into());
    }
    let body = Limited::new(body, MAX_FORM_LEN)
        .collect()
        .await
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                GrantError::PayloadTooLarge
            } else {
                GrantError::InvalidRequest("the body could not be read")
            }
        })?;
    match TokenRequest::from_form(content_type, &body.to_bytes())? {
        TokenRequest::Password(grant) => {
            let client = auth
                .login_throttle()
                .and_then(|throttle| throttle.client_key(&parts));
            auth.login(&grant, client.as_deref()).await
        }
        TokenRequest::RefreshToken(_) if auth.refresh_tokens().is_none() => {
            Err(GrantError::UnsupportedGrantType.into())
        }
        TokenRequest::RefreshToken(grant) => {
            let token = refresh_token_of(auth, &parts, grant.refresh_token)?;
            auth.refresh(&token, grant.scope.as_ref()).await
        }
    }
}

/// The refresh token a refresh grant presents: the form's `refresh_token`,
/// or the refresh-token cookie's (which, being ambient, must pass the
/// Origin guard as a cookie-authenticated `POST` does). Both at once is
/// `invalid_request`, as a token sent by two methods is (RFC 6750 §2).
fn refresh_token_of<U, X>(
    auth: &Authenticator<U, X>,
    parts: &Parts,
    in_form: Option<String>,
) -> Result<String, AuthError>
where
    U: AuthUser,
    X: ExtraClaims,
{
    let cookie = auth
        .refresh_tokens()
        .and_then(|refresh| refresh.cookie.as_ref());
    let in_cookie = match cookie {
        Some(cookie) => cookie_value(parts, cookie.name())?.filter(|value| !value.is_empty()),
        None => None,
    };
    match (in_form, in_cookie) {
        (Some(token), None) => Ok(token),
        (None, Some(token)) => {
            auth.origin_guard().check(parts, CredentialKind::Cookie)?;
            Ok(token.into_owned())
        }
        (Some(_), Some(_)) => Err(GrantError::InvalidRequest(
            "the refresh token was sent by more than one method",
        )
        .into()),
        (None, None) => Err(GrantError::InvalidRequest("refresh_token is required").into()),
    }
}
