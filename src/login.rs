//! The OAuth2 resource-owner password grant (RFC 6749 §4.3): the request
//! form, the token response (§5.1), and a framework-neutral token endpoint.
//! Errors (§5.2) are [`GrantError`]s, rendered by the [`error`](crate::error)
//! module like every other error.
//!
//! # The request
//!
//! `POST` with `Content-Type: application/x-www-form-urlencoded` (else 415)
//! and a body of at most [`MAX_FORM_LEN`] bytes (else 413, before parsing):
//! `grant_type` (optional; if present it must be `password`, else
//! `unsupported_grant_type`), `username` and `password` (required, else
//! `invalid_request`), `scope` (optional, space-separated). A parameter sent
//! twice is `invalid_request` (§3.1); unknown parameters such as `client_id`
//! are ignored.
//!
//! # Cookie sessions
//!
//! For browser apps, [`session_login_endpoint`] is the same endpoint that
//! also sets the access token as the session cookie (the
//! [`SessionCookie`] of the authenticator's
//! [`Credentials`](crate::Credentials): `HttpOnly`, `Secure`, `SameSite=Lax`,
//! `Path=/`, `Max-Age` = the token's lifetime) and still returns the JSON,
//! so a page script can use the token for an `Authorization` header or a
//! WebSocket subprotocol. [`logout_endpoint`] clears the cookie. Both
//! responses carry [`Renewal::Skip`], and both refuse (403) a browser request
//! from a page the [`origin`](crate::origin) guard does not allow (login
//! CSRF, logout CSRF); a client sending neither `Origin` nor
//! `Sec-Fetch-Site` (`curl`) is served.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;

use crate::authenticator::{Authenticator, log_rejection};
use crate::credentials::SessionCookie;
use crate::error::{AuthError, GrantError};
use crate::refresh::Renewal;
use crate::scope::Scopes;
use crate::token::ExtraClaims;
use crate::user::AuthUser;

/// The largest login body accepted, in bytes.
pub const MAX_FORM_LEN: usize = 16 * 1024;

/// A parsed password-grant request. `Debug` hides the password.
#[derive(Clone)]
pub struct PasswordGrant {
    /// The login name.
    pub username: String,
    /// The password as typed.
    pub password: String,
    /// The requested scopes; `None` asks for every scope the user holds.
    pub scope: Option<Scopes>,
}

impl fmt::Debug for PasswordGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordGrant")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("scope", &self.scope)
            .finish()
    }
}

impl PasswordGrant {
    /// Parses a token request from its `Content-Type` and body.
    ///
    /// A body that is not UTF-8 once percent-decoded (`password=%FF`) is
    /// `invalid_request`: decoding it lossily would let different bytes
    /// (`%FF`, `%FE`) collide into the same U+FFFD username or password.
    ///
    /// ```
    /// use tower_auth::login::PasswordGrant;
    ///
    /// let form = "grant_type=password&username=johndoe&password=secret&scope=me+items";
    /// let ct = "application/x-www-form-urlencoded".parse().unwrap();
    /// let grant = PasswordGrant::from_form(Some(&ct), form.as_bytes()).unwrap();
    /// assert_eq!(grant.username, "johndoe");
    /// assert_eq!(grant.scope.unwrap().to_string(), "items me");
    /// ```
    pub fn from_form(content_type: Option<&HeaderValue>, body: &[u8]) -> Result<Self, GrantError> {
        if !content_type.is_some_and(is_form_content_type) {
            return Err(GrantError::UnsupportedMediaType);
        }
        if body.len() > MAX_FORM_LEN {
            return Err(GrantError::PayloadTooLarge);
        }
        // serde_urlencoded decodes lossily: `%FF` and `%FE` would both become
        // U+FFFD, so two different usernames or passwords would collide.
        // Refuse a body whose decoded bytes are not UTF-8 instead.
        if percent_encoding::percent_decode(body)
            .decode_utf8()
            .is_err()
        {
            return Err(GrantError::InvalidRequest(
                "the form is not UTF-8 once percent-decoded",
            ));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| GrantError::InvalidRequest("the body is not a valid form"))?;
        let field = |name: &str| -> Result<Option<&str>, GrantError> {
            let mut values = pairs
                .iter()
                .filter(|(key, _)| key == name)
                .map(|(_, v)| v.as_str());
            let first = values.next();
            if values.next().is_some() {
                return Err(GrantError::InvalidRequest("a parameter is repeated"));
            }
            Ok(first)
        };
        if let Some(grant_type) = field("grant_type")?
            && grant_type != "password"
        {
            return Err(GrantError::UnsupportedGrantType);
        }
        let username =
            field("username")?.ok_or(GrantError::InvalidRequest("username is required"))?;
        let password =
            field("password")?.ok_or(GrantError::InvalidRequest("password is required"))?;
        let scope = field("scope")?
            .map(|s| Scopes::parse(s).map_err(|_| GrantError::InvalidScope))
            .transpose()?;
        Ok(PasswordGrant {
            username: username.to_owned(),
            password: password.to_owned(),
            scope,
        })
    }
}

fn is_form_content_type(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// A successful token response (RFC 6749 §5.1). `Debug` hides the token.
#[derive(Clone, Serialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Always `"Bearer"`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// The granted scopes (omitted when none).
    #[serde(skip_serializing_if = "Scopes::is_empty")]
    pub scope: Scopes,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenResponse {
    pub(crate) fn bearer(access_token: String, lifetime: Duration, scope: Scopes) -> Self {
        TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: lifetime.as_secs(),
            scope,
        }
    }

    /// 200 with the JSON body, `Cache-Control: no-store` and
    /// `Pragma: no-cache`, as §5.1 asks.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        // Serializing strings and a number into JSON cannot fail.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        response
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

/// [`token_endpoint`] for browsers: on success the token is also set as the
/// session cookie (`Max-Age` = the token's lifetime); see
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
                let mut response = token.into_response();
                response.headers_mut().append(SET_COOKIE, set_cookie);
                response
            }),
        Err(err) => Err(err),
    };
    let mut response = result.unwrap_or_else(|err| auth.error_response(&err));
    response.extensions_mut().insert(Renewal::Skip);
    response
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
    if let Err(err) = auth.origin_guard().check_session_change(parts) {
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
    auth.login(&grant).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn form() -> HeaderValue {
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8")
    }

    #[test]
    fn form_errors_follow_rfc_6749() {
        let parse = |body: &str| PasswordGrant::from_form(Some(&form()), body.as_bytes());
        assert_eq!(
            parse("grant_type=client_credentials").unwrap_err(),
            GrantError::UnsupportedGrantType
        );
        assert!(matches!(
            parse("username=a").unwrap_err(),
            GrantError::InvalidRequest(_)
        ));
        assert!(matches!(
            parse("username=a&username=b&password=p").unwrap_err(),
            GrantError::InvalidRequest(_)
        ));
        assert_eq!(
            parse("username=a&password=p&scope=%22").unwrap_err(),
            GrantError::InvalidScope
        );
        assert!(
            parse("username=a&password=p&client_id=x")
                .unwrap()
                .scope
                .is_none()
        );
        let json = HeaderValue::from_static("application/json");
        assert_eq!(
            PasswordGrant::from_form(Some(&json), b"{}").unwrap_err(),
            GrantError::UnsupportedMediaType
        );
        assert_eq!(
            PasswordGrant::from_form(None, b"").unwrap_err(),
            GrantError::UnsupportedMediaType
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let grant =
            PasswordGrant::from_form(Some(&form()), b"username=a&password=hunter2").unwrap();
        assert!(!format!("{grant:?}").contains("hunter2"));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bodies(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = PasswordGrant::from_form(Some(&form()), &body);
        }

        #[test]
        fn valid_forms_round_trip(username in "\\PC{0,20}", password in "\\PC{0,20}") {
            let body = serde_urlencoded::to_string([("username", &username), ("password", &password)]).unwrap();
            let grant = PasswordGrant::from_form(Some(&form()), body.as_bytes()).unwrap();
            prop_assert_eq!(grant.username, username);
            prop_assert_eq!(grant.password, password);
        }

        #[test]
        fn full_grants_round_trip_in_any_field_order(
            username in "\\PC{1,20}",
            password in "\\PC{1,20}",
            scopes in proptest::collection::vec("[a-z:.]{1,8}", 1..4),
            rotate in 0usize..4,
        ) {
            let scope = scopes.join(" ");
            let mut fields = vec![
                ("grant_type", "password"),
                ("username", username.as_str()),
                ("password", password.as_str()),
                ("scope", scope.as_str()),
            ];
            fields.rotate_left(rotate);
            let body = serde_urlencoded::to_string(&fields).unwrap();
            let grant = PasswordGrant::from_form(Some(&form()), body.as_bytes()).unwrap();
            prop_assert_eq!(grant.username, username);
            prop_assert_eq!(grant.password, password);
            prop_assert_eq!(grant.scope, Some(Scopes::parse(&scope).unwrap()));
        }

        #[test]
        fn arbitrary_content_types_never_panic(
            content_type in proptest::collection::vec(any::<u8>(), 0..60),
            body in "[a-z=&%+]{0,40}",
        ) {
            if let Ok(value) = HeaderValue::from_bytes(&content_type) {
                let _ = PasswordGrant::from_form(Some(&value), body.as_bytes());
            }
        }
    }
}
