//! [`AuthError`] and the only code in the crate that turns it into an HTTP
//! response.
//!
//! | error | status | `WWW-Authenticate` | body `error` |
//! | --- | --- | --- | --- |
//! | [`MissingCredentials`](AuthError::MissingCredentials) | 401 | `Bearer realm="…"` | `unauthorized` (RFC 6750 sends no error code here) |
//! | [`InvalidRequest`](AuthError::InvalidRequest) | 400 | `Bearer realm="…", error="invalid_request", …` | `invalid_request` |
//! | [`InvalidToken`](AuthError::InvalidToken) | 401 | `Bearer realm="…", error="invalid_token", …` | `invalid_token` |
//! | [`InsufficientScope`](AuthError::InsufficientScope) | 403 | `Bearer realm="…", error="insufficient_scope", scope="…"` | `insufficient_scope` |
//! | [`Origin`](AuthError::Origin) (cookie from a foreign page) | 403 | — | `invalid_origin` |
//! | [`LimitExceeded`](AuthError::LimitExceeded) | 429 (+ `Retry-After` for rates) | — | `too_many_requests` |
//! | [`LimitExceeded::TooLarge`] (one charge over a whole byte budget) | 413 | — | `invalid_request` |
//! | [`LimitExceeded::StoreUnavailable`] (a shared limit's store failed: fail closed) | 503 + `Retry-After: 1` | — | `temporarily_unavailable` |
//! | [`LoginThrottled`](AuthError::LoginThrottled) (too many failed logins) | 429 + `Retry-After` | — | `too_many_requests` |
//! | [`LoginThrottled`](AuthError::LoginThrottled) whose [shared store failed](LoginThrottled::store_unavailable) (fail closed) | 503 + `Retry-After: 1` | — | `temporarily_unavailable` |
//! | [`UserStore`](AuthError::UserStore) | 503 + `Retry-After: 5` | — | `temporarily_unavailable` |
//! | [`SharedStore`](AuthError::SharedStore) | 503 + `Retry-After: 1` | — | `temporarily_unavailable` |
//! | [`Password`](AuthError::Password) `Busy` (argon2 queue full) | 503 + `Retry-After` | — | `temporarily_unavailable` |
//! | [`Internal`](AuthError::Internal) | 500 | — | `server_error` |
//! | [`Grant`](AuthError::Grant) (token endpoint, RFC 6749 §5.2) | 400 / 413 / 415 | — | the §5.2 code |
//!
//! RFC 6750 has no code for the two 403/429 rows: the token is fine there, so
//! `invalid_token` (which sends a client to refresh or log in again) and
//! `insufficient_scope` (which asks for more scope) would both mislead. The
//! body codes name what must change instead: `invalid_origin` — the page the
//! request came from, in the `invalid_*` style of RFC 6749/6750 codes — and
//! `too_many_requests` — the pace, named after the status (RFC 6585). Neither
//! carries a `WWW-Authenticate` challenge: re-authenticating does not help.
//!
//! A challenge from a route that requires scopes — sent by a scope guard
//! ([`RequireScopes`](crate::RequireScopes)) or the axum `Scoped` extractor —
//! names them in a `scope` attribute, on the 401s and 400 as on the 403
//! (RFC 6750 §3 allows it on every challenge; FastAPI sends
//! `Bearer scope="me"`): `Bearer realm="…", scope="me"`, or
//! `Bearer realm="…", error="invalid_token", error_description="…", scope="me"`.
//! A client learns which scopes to ask for when it logs in again.
//!
//! A failing user store is answered 503 with `Retry-After: 5`
//! ([`USER_STORE_RETRY_AFTER`]): the store is the application's database,
//! and its failures — a lock held too long, a restart, a failover — are
//! usually over in seconds. The header tells a well-behaved client when to
//! try again instead of at once, so that clients do not pile on a database
//! that is recovering. An app that knows better sets another value in a
//! [`RenderError`] hook.
//!
//! Every body is JSON `{"error": …, "error_description": …}`; descriptions are
//! fixed texts chosen by this crate, never attacker input, a token or an
//! internal error message. An app that wants another body format installs a
//! [`RenderError`] hook; the status and challenge stay as above unless the hook
//! changes them on purpose.
//!
//! # Reason codes
//!
//! The response tells a client only what it needs to act on: most refused
//! tokens share "the access token is invalid", and a token whose user is
//! unknown, disabled or revoked gets one text for all three, so a token
//! holder learns nothing about the account. The server side knows more:
//! [`AuthError::reason_code`] names the exact check that failed
//! (`bad_signature`, `algorithm_mismatch`, `revoked`, `origin_not_allowed`,
//! ...), the same code the crate logs. Nothing in the crate sends it to
//! clients. An app that counts refusals for its own metrics reads it in a
//! [`RenderError`] hook; this crate's own tests copy it into a test-only
//! response header the same way, so that they assert *why* a request was
//! refused, not only its status:
//!
//! ```
//! use bytes::Bytes;
//! use http::{HeaderValue, Response};
//! use http_body_util::Full;
//! use tower_auth::AuthError;
//!
//! // Tests only: a header naming the failed check would tell an attacker
//! // which of their forgeries came closest.
//! let hook = |err: &AuthError, mut default: Response<Full<Bytes>>| {
//!     let reason = HeaderValue::from_static(err.reason_code());
//!     default.headers_mut().insert("x-test-reason", reason);
//!     default
//! };
//! # fn takes<H: tower_auth::RenderError>(_: H) {}
//! # takes(hook);
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::credentials::CredentialsRejection;
use crate::grant::GrantError;
use crate::limit::LimitExceeded;
use crate::origin::OriginRejection;
use crate::password::PasswordError;
use crate::scope::Scopes;
use crate::store::StoreError;
use crate::throttle::LoginThrottled;
use crate::token::{SigningError, TokenRejection};
use crate::user::BoxError;

/// Why a request was not authenticated (or a login refused).
///
/// `Display` gives a short, fixed text: safe to log. It never contains a
/// token, a password or text copied from the request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carries no credentials at all.
    #[error("no credentials")]
    MissingCredentials,
    /// The request's credentials are malformed (RFC 6750 `invalid_request`).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The token is invalid, expired, revoked or names an unknown user.
    #[error("invalid token: {}", .0.reason_code())]
    InvalidToken(TokenRejection),
    /// The identity lacks a scope the route requires.
    #[error("insufficient scope: missing {missing}")]
    InsufficientScope {
        /// Every scope the route requires (sent in the challenge's `scope`).
        required: Scopes,
        /// Those of `required` the identity does not hold.
        missing: Scopes,
    },
    /// A cookie-authenticated request from an origin the
    /// [`origin`](crate::origin) guard does not allow (403).
    #[error("origin refused: {}", .0.reason_code())]
    Origin(OriginRejection),
    /// A per-subject limit of the [`limit`](crate::limit) module (429).
    #[error("limit exceeded: {}", .0.reason_code())]
    LimitExceeded(LimitExceeded),
    /// A login refused by the [`throttle`](crate::throttle): too many
    /// failed logins for its username or client (429, before any password
    /// work).
    #[error("login throttled")]
    LoginThrottled(LoginThrottled),
    /// The shared session state failed or is too stale to trust (503); the
    /// source is logged, never sent.
    #[error("session store failed")]
    SharedStore(#[source] StoreError),
    /// The application's user store failed; the source is logged, never sent.
    #[error("user store failed")]
    UserStore(#[source] BoxError),
    /// The password hasher could not answer: its queue is full
    /// ([`PasswordError::Busy`], 503 with `Retry-After`) or argon2 failed
    /// (500).
    #[error("password hashing: {0}")]
    Password(PasswordError),
    /// A server-side fault, such as an extractor used without its layer.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A token-endpoint (login) error, RFC 6749 §5.2.
    #[error("token endpoint: {0}")]
    Grant(#[from] GrantError),
}

impl AuthError {
    /// A stable, machine-readable code naming the check that refused the
    /// request, for logs, metrics and tests; never sent to clients by this
    /// crate (see [Reason codes](self#reason-codes)).
    ///
    /// Variants that wrap a room's rejection use that rejection's own code
    /// ([`TokenRejection::reason_code`], [`OriginRejection::reason_code`],
    /// [`LimitExceeded::reason_code`]), so logs and metrics share one
    /// vocabulary; the others are `missing_credentials`, `invalid_request`,
    /// `insufficient_scope`, `login_throttled` (`throttle_store_unavailable`
    /// when a shared throttle's store failed), `password_busy`,
    /// `password_hashing`, `user_store`, `shared_store` and `internal`, and a
    /// token-endpoint error is its RFC 6749 §5.2 code (`invalid_grant`,
    /// `invalid_request`, `unsupported_grant_type`, `invalid_scope`) or
    /// `unsupported_media_type` / `payload_too_large`.
    ///
    /// ```
    /// use tower_auth::{AuthError, TokenRejection};
    ///
    /// let err = AuthError::from(TokenRejection::AlgorithmMismatch);
    /// assert_eq!(err.reason_code(), "algorithm_mismatch");
    /// assert_eq!(AuthError::MissingCredentials.reason_code(), "missing_credentials");
    /// ```
    pub fn reason_code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_credentials",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidToken(rejection) => rejection.reason_code(),
            AuthError::InsufficientScope { .. } => "insufficient_scope",
            AuthError::Origin(rejection) => rejection.reason_code(),
            AuthError::LimitExceeded(exceeded) => exceeded.reason_code(),
            AuthError::LoginThrottled(throttled) => throttled.reason_code(),
            AuthError::Password(PasswordError::Busy) => "password_busy",
            AuthError::Password(_) => "password_hashing",
            AuthError::UserStore(_) => "user_store",
            AuthError::SharedStore(_) => "shared_store",
            AuthError::Internal(_) => "internal",
            AuthError::Grant(grant) => match grant {
                GrantError::InvalidRequest(_) => "invalid_request",
                GrantError::InvalidGrant => "invalid_grant",
                GrantError::UnsupportedGrantType => "unsupported_grant_type",
                GrantError::InvalidScope => "invalid_scope",
                GrantError::UnsupportedMediaType => "unsupported_media_type",
                GrantError::PayloadTooLarge => "payload_too_large",
            },
        }
    }
}

// Each room below returns its own rejection; here they become the one
// error that is rendered.

impl From<CredentialsRejection> for AuthError {
    fn from(rejection: CredentialsRejection) -> Self {
        match rejection {
            CredentialsRejection::Malformed(what) => AuthError::InvalidRequest(what),
            CredentialsRejection::TooLong => AuthError::InvalidToken(TokenRejection::TooLong),
        }
    }
}

impl From<TokenRejection> for AuthError {
    fn from(rejection: TokenRejection) -> Self {
        AuthError::InvalidToken(rejection)
    }
}

impl From<OriginRejection> for AuthError {
    fn from(rejection: OriginRejection) -> Self {
        AuthError::Origin(rejection)
    }
}

impl From<LimitExceeded> for AuthError {
    fn from(exceeded: LimitExceeded) -> Self {
        AuthError::LimitExceeded(exceeded)
    }
}

impl From<LoginThrottled> for AuthError {
    fn from(throttled: LoginThrottled) -> Self {
        AuthError::LoginThrottled(throttled)
    }
}

impl From<PasswordError> for AuthError {
    fn from(err: PasswordError) -> Self {
        AuthError::Password(err)
    }
}

impl From<SigningError> for AuthError {
    fn from(_: SigningError) -> Self {
        AuthError::Internal("signing the access token failed")
    }
}

/// The `Retry-After` of the 503 that answers a failing user store
/// ([`AuthError::UserStore`]); see the [module docs](self).
pub const USER_STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The body type of every response this crate builds.
pub type ErrorBody = Full<Bytes>;

/// A hook that replaces the crate's error responses, used alike by the layer,
/// the extractors, the scope checks and the token endpoint.
///
/// It receives the error and the response the crate would send (status,
/// challenge and JSON body already set) and returns the response to send.
/// Closures of that shape implement it.
///
/// ```
/// use bytes::Bytes;
/// use http::Response;
/// use http_body_util::Full;
/// use tower_auth::AuthError;
///
/// // Plain-text bodies; status and `WWW-Authenticate` are kept.
/// let hook = |err: &AuthError, default: Response<Full<Bytes>>| {
///     let (mut parts, _) = default.into_parts();
///     parts.headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
///     Response::from_parts(parts, Full::new(Bytes::from(err.to_string())))
/// };
/// # fn takes<H: tower_auth::RenderError>(_: H) {}
/// # takes(hook);
/// ```
pub trait RenderError: Send + Sync + 'static {
    /// Returns the response to send for `error`.
    fn render(&self, error: &AuthError, default: Response<ErrorBody>) -> Response<ErrorBody>;
}

impl<F> RenderError for F
where
    F: Fn(&AuthError, Response<ErrorBody>) -> Response<ErrorBody> + Send + Sync + 'static,
{
    fn render(&self, error: &AuthError, default: Response<ErrorBody>) -> Response<ErrorBody> {
        self(error, default)
    }
}

/// Renders [`AuthError`]s for one authenticator: its realm and its optional
/// [`RenderError`] hook.
#[derive(Clone)]
pub(crate) struct ErrorRenderer {
    realm: Arc<str>,
    hook: Option<Arc<dyn RenderError>>,
}

impl Default for ErrorRenderer {
    fn default() -> Self {
        Self::new("tower-auth".into(), None)
    }
}

impl ErrorRenderer {
    pub(crate) fn new(realm: Arc<str>, hook: Option<Arc<dyn RenderError>>) -> Self {
        Self { realm, hook }
    }

    /// The response for `error`.
    pub(crate) fn render(&self, error: &AuthError) -> Response<ErrorBody> {
        self.render_inner(error, None)
    }

    /// The response for `error` on a route that requires `required`: its
    /// challenge names them (see the [module docs](self)).
    pub(crate) fn render_for_scopes(
        &self,
        error: &AuthError,
        required: &Scopes,
    ) -> Response<ErrorBody> {
        self.render_inner(error, Some(required))
    }

    fn render_inner(&self, error: &AuthError, required: Option<&Scopes>) -> Response<ErrorBody> {
        let default = default_response(error, &self.realm, required);
        match &self.hook {
            Some(hook) => hook.render(error, default),
            None => default,
        }
    }
}

/// Whether `realm` can stand inside a quoted-string without escaping.
pub(crate) fn is_valid_realm(realm: &str) -> bool {
    !realm.is_empty()
        && realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fn default_response(
    error: &AuthError,
    realm: &str,
    route_scopes: Option<&Scopes>,
) -> Response<ErrorBody> {
    let (status, code, description) = status_code_description(error);
    let mut challenge = match error {
        AuthError::MissingCredentials => Some(format!("Bearer realm=\"{realm}\"")),
        AuthError::InvalidRequest(_)
        | AuthError::InvalidToken(_)
        | AuthError::InsufficientScope { .. } => Some(format!(
            "Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{description}\""
        )),
        _ => None,
    };
    let scope = match error {
        AuthError::InsufficientScope { required, .. } => Some(required),
        _ => route_scopes.filter(|scopes| !scopes.is_empty()),
    };
    if let (Some(challenge), Some(scope)) = (&mut challenge, scope) {
        challenge.push_str(&format!(", scope=\"{scope}\""));
    }

    let body = serde_json::json!({ "error": code, "error_description": description });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(challenge) = challenge {
        // Every part is a fixed text, a checked realm or scope tokens, all
        // visible ASCII; a failure here would be a bug in this file.
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
    }
    if matches!(error, AuthError::Grant(_) | AuthError::LoginThrottled(_)) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let wait = match error {
        AuthError::LimitExceeded(limit) => limit.retry_after(),
        AuthError::LoginThrottled(throttled) => Some(throttled.retry_after()),
        AuthError::UserStore(_) => Some(USER_STORE_RETRY_AFTER),
        // The shared state is back within its staleness bound, usually.
        AuthError::SharedStore(_) => Some(std::time::Duration::from_secs(1)),
        _ => None,
    };
    if let Some(wait) = wait {
        // Whole seconds, rounded up: a client waiting that long is let in.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let AuthError::Password(err) = error
        && let Some(wait) = err.retry_after()
    {
        headers.insert(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
    }
    response
}

fn status_code_description(error: &AuthError) -> (StatusCode, &'static str, String) {
    use StatusCode as S;
    match error {
        AuthError::MissingCredentials => (
            S::UNAUTHORIZED,
            "unauthorized",
            "authentication is required".into(),
        ),
        AuthError::InvalidRequest(what) => (S::BAD_REQUEST, "invalid_request", (*what).into()),
        AuthError::InvalidToken(reason) => (
            S::UNAUTHORIZED,
            "invalid_token",
            token_description(*reason).into(),
        ),
        AuthError::InsufficientScope { missing, .. } => (
            S::FORBIDDEN,
            "insufficient_scope",
            format!("the access token lacks the scope: {missing}"),
        ),
        AuthError::Origin(reason) => (
            S::FORBIDDEN,
            "invalid_origin",
            origin_description(*reason).into(),
        ),
        // No wait would let it through: the request itself is too large.
        AuthError::LimitExceeded(limit @ LimitExceeded::TooLarge { .. }) => (
            S::PAYLOAD_TOO_LARGE,
            "invalid_request",
            limit_description(*limit).into(),
        ),
        // Fail closed: the limit could not be counted.
        AuthError::LimitExceeded(limit @ LimitExceeded::StoreUnavailable) => (
            S::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            limit_description(*limit).into(),
        ),
        AuthError::LimitExceeded(limit) => (
            S::TOO_MANY_REQUESTS,
            "too_many_requests",
            limit_description(*limit).into(),
        ),
        AuthError::LoginThrottled(throttled) if throttled.store_unavailable() => (
            S::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "logins are unavailable; try again shortly".into(),
        ),
        AuthError::LoginThrottled(_) => (
            S::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many failed logins; try again later".into(),
        ),
        AuthError::UserStore(_) => (
            S::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the user store is unavailable".into(),
        ),
        AuthError::SharedStore(_) => (
            S::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the shared session state is unavailable".into(),
        ),
        AuthError::Password(PasswordError::Busy) => (
            S::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "too many logins at once; try again shortly".into(),
        ),
        AuthError::Password(_) => (
            S::INTERNAL_SERVER_ERROR,
            "server_error",
            "password hashing failed".into(),
        ),
        AuthError::Internal(what) => (S::INTERNAL_SERVER_ERROR, "server_error", (*what).into()),
        AuthError::Grant(grant) => match grant {
            GrantError::InvalidRequest(what) => (S::BAD_REQUEST, "invalid_request", (*what).into()),
            GrantError::InvalidGrant => (
                S::BAD_REQUEST,
                "invalid_grant",
                "invalid username or password".into(),
            ),
            GrantError::UnsupportedGrantType => (
                S::BAD_REQUEST,
                "unsupported_grant_type",
                "this grant_type is not supported".into(),
            ),
            GrantError::InvalidScope => (
                S::BAD_REQUEST,
                "invalid_scope",
                "the requested scope is malformed or not available to this user".into(),
            ),
            GrantError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded".into(),
            ),
            GrantError::PayloadTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is too large".into(),
            ),
        },
    }
}

/// The text sent to the client for a refused token. User-related reasons
/// share one text so a token holder learns nothing about the account; it
/// names all three, as it must be true of each (a subject the store does not
/// know may never have existed, so "revoked" alone would not be).
fn token_description(rejection: TokenRejection) -> &'static str {
    use TokenRejection as R;
    match rejection {
        R::TooLong => "the access token is too long",
        R::Expired => "the access token expired",
        R::NotYetValid => "the access token is not valid yet",
        R::UnknownUser | R::InactiveUser | R::Revoked | R::SessionRevoked => {
            "the access token is not accepted: its account is unknown, disabled or has revoked it"
        }
        _ => "the access token is invalid",
    }
}

fn origin_description(rejection: OriginRejection) -> &'static str {
    match rejection {
        OriginRejection::Missing => "a cookie-authenticated request must say where it comes from",
        OriginRejection::Null => "requests from an opaque origin may not use the session cookie",
        OriginRejection::NotAllowed => "this origin may not use the session cookie",
    }
}

fn limit_description(exceeded: LimitExceeded) -> &'static str {
    match exceeded {
        LimitExceeded::Rate { .. } => "too many requests; slow down",
        LimitExceeded::Connections => "too many open connections for this user",
        LimitExceeded::TooLarge { .. } => "larger than this user's whole allowance",
        LimitExceeded::StoreUnavailable => "limits are unavailable; try again shortly",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(err: &AuthError) -> Response<ErrorBody> {
        ErrorRenderer::new("api".into(), None).render(err)
    }

    fn challenge(res: &Response<ErrorBody>) -> &str {
        res.headers()[WWW_AUTHENTICATE].to_str().unwrap()
    }

    #[test]
    fn missing_credentials_is_a_bare_challenge_with_realm() {
        let res = render(&AuthError::MissingCredentials);
        assert_eq!(res.status(), 401);
        assert_eq!(challenge(&res), "Bearer realm=\"api\"");
    }

    #[test]
    fn scope_challenge_names_the_required_scopes() {
        let required = Scopes::parse("me items").unwrap();
        let missing = Scopes::parse("items").unwrap();
        let res = render(&AuthError::InsufficientScope { required, missing });
        assert_eq!(res.status(), 403);
        assert!(
            challenge(&res).ends_with("scope=\"items me\""),
            "{}",
            challenge(&res)
        );
    }

    #[test]
    fn a_route_that_requires_scopes_names_them_in_every_challenge() {
        let renderer = ErrorRenderer::new("api".into(), None);
        let required = Scopes::parse("me items").unwrap();
        let res = renderer.render_for_scopes(&AuthError::MissingCredentials, &required);
        assert_eq!(challenge(&res), "Bearer realm=\"api\", scope=\"items me\"");
        let res = renderer
            .render_for_scopes(&AuthError::InvalidToken(TokenRejection::Expired), &required);
        assert_eq!(
            challenge(&res),
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the access token expired\", scope=\"items me\""
        );
        let res = renderer.render_for_scopes(&AuthError::MissingCredentials, &Scopes::none());
        assert_eq!(challenge(&res), "Bearer realm=\"api\"");
        let res = renderer.render_for_scopes(&AuthError::Origin(OriginRejection::Null), &required);
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn origin_and_limit_errors_carry_no_challenge() {
        let res = render(&AuthError::Origin(OriginRejection::Null));
        assert_eq!(res.status(), 403);
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
        let res = render(&AuthError::LimitExceeded(LimitExceeded::Rate {
            retry_after: std::time::Duration::from_millis(5500),
        }));
        assert_eq!(res.status(), 429);
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(res.headers()[RETRY_AFTER], "6");
        let res = render(&AuthError::LimitExceeded(LimitExceeded::Connections));
        assert_eq!(res.status(), 429);
        assert!(res.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn a_shared_limit_without_its_store_is_503_with_retry_after() {
        let error = AuthError::LimitExceeded(LimitExceeded::StoreUnavailable);
        assert_eq!(error.reason_code(), "limit_store_unavailable");
        let res = render(&error);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[RETRY_AFTER], "1");
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn a_charge_over_the_whole_budget_is_413_without_retry_after() {
        let res = render(&AuthError::LimitExceeded(LimitExceeded::TooLarge {
            max: 1024,
        }));
        assert_eq!(res.status(), 413);
        assert!(res.headers().get(RETRY_AFTER).is_none());
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn a_busy_hasher_is_503_with_retry_after() {
        let res = render(&AuthError::Password(PasswordError::Busy));
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[RETRY_AFTER], "1");
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
        let res = render(&AuthError::Password(PasswordError::Hashing));
        assert_eq!(res.status(), 500);
        assert!(res.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn store_errors_hide_their_text() {
        let res = render(&AuthError::UserStore("db password=hunter2".into()));
        assert_eq!(res.status(), 503);
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
        let body = format!("{:?}", res.body());
        assert!(!body.contains("hunter2"));
    }

    #[tokio::test]
    async fn a_failing_store_is_503_temporarily_unavailable_with_retry_after() {
        use http_body_util::BodyExt;
        let res = render(&AuthError::UserStore("database is locked".into()));
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[RETRY_AFTER], "5");
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(body["error_description"], "the user store is unavailable");
    }

    #[test]
    fn reason_codes_are_stable_and_never_rendered() {
        let cases = [
            (AuthError::MissingCredentials, "missing_credentials"),
            (AuthError::InvalidRequest("x"), "invalid_request"),
            (AuthError::InvalidToken(TokenRejection::Revoked), "revoked"),
            (
                AuthError::InsufficientScope {
                    required: Scopes::parse("a").unwrap(),
                    missing: Scopes::parse("a").unwrap(),
                },
                "insufficient_scope",
            ),
            (
                AuthError::Origin(OriginRejection::NotAllowed),
                "origin_not_allowed",
            ),
            (
                AuthError::LimitExceeded(LimitExceeded::Connections),
                "connections",
            ),
            (AuthError::UserStore("down".into()), "user_store"),
            (AuthError::Internal("x"), "internal"),
            (AuthError::Grant(GrantError::InvalidGrant), "invalid_grant"),
            (
                AuthError::Grant(GrantError::UnsupportedMediaType),
                "unsupported_media_type",
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.reason_code(), code);
            // The default response never carries it: user-related reasons
            // share one text on purpose.
            let res = render(&err);
            let headers = format!("{:?}", res.headers());
            assert!(!headers.contains("reason"), "{headers}");
        }
        let unknown = render(&AuthError::InvalidToken(TokenRejection::UnknownUser));
        let revoked = render(&AuthError::InvalidToken(TokenRejection::Revoked));
        assert_eq!(
            format!("{:?}", unknown.body()),
            format!("{:?}", revoked.body())
        );
        assert_eq!(unknown.headers(), revoked.headers());
    }

    #[test]
    fn realm_rejects_quotes_and_controls() {
        assert!(is_valid_realm("my api"));
        assert!(!is_valid_realm("a\"b"));
        assert!(!is_valid_realm("a\nb"));
        assert!(!is_valid_realm(""));
    }
}
