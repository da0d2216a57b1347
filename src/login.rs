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
use crate::credentials::SessionCookie;
use crate::error::AuthError;
use crate::grant::{GrantError, MAX_FORM_LEN, PasswordGrant, TokenResponse, is_form_content_type};
use crate::password::PasswordError;
use crate::refresh::Renewal;
use crate::scope::Scopes;
use crate::token::ExtraClaims;
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
            Some(throttle) => Some(throttle.check(&grant.username, client)?),
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
                        attempt.failed();
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
            attempt.succeeded();
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
        let claims = codec.new_claims(
            user.subject(),
            scope,
            user.token_version(),
            self.extra_claims_for(user),
        );
        let access_token = codec.issue(&claims)?;
        tracing::debug!(sub = ?user.subject(), "tokens issued");
        Ok(TokenResponse::bearer(
            access_token,
            codec.access_lifetime(),
            claims.scope,
        ))
    }
}

/// A complete token endpoint for any server that speaks `http` types: reads
/// the body (at most [`MAX_FORM_LEN`] bytes), parses the grant, logs the user
/// in and renders the answer — success or error.
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
    let mut response = match login(auth, request).await {
        Ok(token) => token.into_response(),
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
        Ok(cookie) => login(auth, Request::from_parts(parts, body))
            .await
            .map(|token| {
                let max_age = Duration::from_secs(token.expires_in);
                let set_cookie = cookie.set_cookie(&token.access_token, max_age);
                let mut response = if cookie.login_body_has_token() {
                    token.into_response()
                } else {
                    session_response(token)
                };
                response.headers_mut().append(SET_COOKIE, set_cookie);
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

/// Logout for cookie sessions: `204 No Content` with a `Set-Cookie` that
/// deletes the session cookie, `Cache-Control: no-store` and
/// [`Renewal::Skip`]; see [cookie sessions](self#cookie-sessions).
///
/// It needs no valid token: a user whose cookie expired must still be able
/// to clear it, so mount it outside any layer that requires authentication.
/// (The token itself stays valid until its `exp`; to revoke every token of a
/// user, raise their token version.) 403 for a foreign page; 500 without a
/// cookie source.
pub fn logout_endpoint<U, X>(auth: &Authenticator<U, X>, parts: &Parts) -> Response<Full<Bytes>>
where
    U: AuthUser,
    X: ExtraClaims,
{
    let mut response = match session_cookie(auth, parts) {
        Ok(cookie) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            let headers = response.headers_mut();
            headers.insert(SET_COOKIE, cookie.removal());
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => auth.error_response(&err),
    };
    response.extensions_mut().insert(Renewal::Skip);
    response
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
        tracing::error!(
            "session login/logout needs a cookie source in the authenticator's Credentials"
        );
        return Err(AuthError::Internal(
            "the authenticator has no session cookie configured",
        ));
    };
    if let Err(rejection) = auth.origin_guard().check_session_change(parts) {
        let err = AuthError::from(rejection);
        // Logged as a refused cookie request is, so login and logout CSRF
        // attempts show in the log too.
        log_rejection(&err);
        return Err(err);
    }
    Ok(cookie)
}

async fn login<U, X, B>(
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
    let grant = PasswordGrant::from_form(content_type, &body.to_bytes())?;
    let client = auth
        .login_throttle()
        .and_then(|throttle| throttle.client_key(&parts));
    auth.login(&grant, client.as_deref()).await
}
