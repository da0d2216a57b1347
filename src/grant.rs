//! The wire format of the OAuth2 token endpoint (RFC 6749): the
//! password-grant request form (§4.3), the token response (§5.1) and its
//! errors, [`GrantError`] (§5.2). Parsing only: [`login`](crate::login)
//! checks the password and issues the tokens, and the
//! [`error`](crate::error) module renders a `GrantError` like every other
//! error.
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

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Response};
use http_body_util::Full;
use serde::Serialize;

use crate::scope::Scopes;

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
    /// Parses a password-grant request from its `Content-Type` and body;
    /// any other `grant_type` is `unsupported_grant_type`. See
    /// [`TokenRequest::from_form`] for the rules.
    ///
    /// ```
    /// use tower_auth::grant::PasswordGrant;
    ///
    /// let form = "grant_type=password&username=johndoe&password=secret&scope=me+items";
    /// let ct = "application/x-www-form-urlencoded".parse().unwrap();
    /// let grant = PasswordGrant::from_form(Some(&ct), form.as_bytes()).unwrap();
    /// assert_eq!(grant.username, "johndoe");
    /// assert_eq!(grant.scope.unwrap().to_string(), "items me");
    /// ```
    pub fn from_form(content_type: Option<&HeaderValue>, body: &[u8]) -> Result<Self, GrantError> {
        match TokenRequest::from_form(content_type, body)? {
            TokenRequest::Password(grant) => Ok(grant),
            TokenRequest::RefreshToken(_) => Err(GrantError::UnsupportedGrantType),
        }
    }
}

/// A parsed refresh-token grant (RFC 6749 §6). `Debug` hides the token.
#[derive(Clone)]
pub struct RefreshGrant {
    /// The refresh token, when the form carries it (`None`: the endpoint
    /// reads it from the refresh-token cookie, if one is configured).
    pub refresh_token: Option<String>,
    /// The requested scopes: at most those of the original grant (a refresh
    /// may narrow them, never widen them); `None` keeps them.
    pub scope: Option<Scopes>,
}

impl fmt::Debug for RefreshGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshGrant")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

/// A token-endpoint request: the grants this crate serves.
#[derive(Debug, Clone)]
pub enum TokenRequest {
    /// `grant_type=password` (or no `grant_type`).
    Password(PasswordGrant),
    /// `grant_type=refresh_token`.
    RefreshToken(RefreshGrant),
}

impl TokenRequest {
    /// Parses a token request from its `Content-Type` and body.
    ///
    /// A body that is not UTF-8 once percent-decoded (`password=%FF`) is
    /// `invalid_request`: decoding it lossily would let different bytes
    /// (`%FF`, `%FE`) collide into the same U+FFFD username or password.
    ///
    /// ```
    /// use tower_auth::grant::TokenRequest;
    ///
    /// let ct = "application/x-www-form-urlencoded".parse().unwrap();
    /// let form = b"grant_type=refresh_token&refresh_token=abc&scope=me";
    /// let TokenRequest::RefreshToken(grant) = TokenRequest::from_form(Some(&ct), form).unwrap() else {
    ///     panic!("a refresh grant");
    /// };
    /// assert_eq!(grant.refresh_token.as_deref(), Some("abc"));
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
        let scope = field("scope")?
            .map(|s| Scopes::parse(s).map_err(|_| GrantError::InvalidScope))
            .transpose()?;
        match field("grant_type")? {
            None | Some("password") => {
                let username =
                    field("username")?.ok_or(GrantError::InvalidRequest("username is required"))?;
                let password =
                    field("password")?.ok_or(GrantError::InvalidRequest("password is required"))?;
                Ok(TokenRequest::Password(PasswordGrant {
                    username: username.to_owned(),
                    password: password.to_owned(),
                    scope,
                }))
            }
            Some("refresh_token") => Ok(TokenRequest::RefreshToken(RefreshGrant {
                refresh_token: field("refresh_token")?.map(str::to_owned),
                scope,
            })),
            Some(_) => Err(GrantError::UnsupportedGrantType),
        }
    }
}

pub(crate) fn is_form_content_type(value: &HeaderValue) -> bool {
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
    /// A refresh token (RFC 6749 §6), when refresh tokens are on and travel
    /// in the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
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
            refresh_token: None,
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

/// Token-endpoint errors (RFC 6749 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// A required field is missing or repeated, or the form is malformed.
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// Wrong password, unknown user or disabled user: one answer for all
    /// three so the endpoint does not reveal which usernames exist. Also
    /// every refresh token that cannot be used: unknown, spent, expired,
    /// revoked or malformed.
    #[error("invalid_grant")]
    InvalidGrant,
    /// `grant_type` is present and is neither `password` nor
    /// `refresh_token` (the latter only when refresh tokens are on).
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// The requested `scope` is malformed, or names only scopes the user
    /// may not be granted.
    #[error("invalid_scope")]
    InvalidScope,
    /// The body is not `application/x-www-form-urlencoded`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body is larger than the endpoint accepts.
    #[error("payload too large")]
    PayloadTooLarge,
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

    /// A `Content-Type` as the test knows it: the form type (any case,
    /// with or without parameters), another type, or raw bytes.
    #[derive(Debug, Clone)]
    enum ContentType {
        Form(String),
        Other(&'static str),
        Unknown(Vec<u8>),
    }

    fn content_type() -> impl Strategy<Value = ContentType> {
        let form = (
            any::<u64>(),
            prop_oneof![
                3 => Just(String::new()),
                2 => proptest::sample::select(vec!["; charset=UTF-8", ";charset=utf-8", " ; q=1", ";"])
                    .prop_map(str::to_owned),
                1 => ";[ -~]{0,15}",
            ],
            any::<bool>(),
        )
            .prop_map(|(mask, params, pad)| {
                // Media types compare case-insensitively.
                let mime: String = "application/x-www-form-urlencoded"
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                    .collect();
                ContentType::Form(format!("{}{mime}{params}", if pad { " " } else { "" }))
            });
        let other = proptest::sample::select(vec![
            "application/json",
            "multipart/form-data",
            "text/plain",
            "application/x-www-form-urlencodedx",
            "application/x-www-form",
            "x-www-form-urlencoded",
            "application/x-www-form-urlencoded,text/plain",
            "",
        ]);
        prop_oneof![
            4 => form,
            2 => other.prop_map(ContentType::Other),
            1 => proptest::collection::vec(any::<u8>(), 0..60).prop_map(ContentType::Unknown),
        ]
    }

    /// Login bodies: mostly complete forms, sometimes junk.
    fn form_body() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => ("\\PC{0,12}", "\\PC{0,12}", proptest::option::of("[a-z ]{0,12}")).prop_map(
                |(username, password, scope)| {
                    let mut fields = vec![("username", username), ("password", password)];
                    fields.extend(scope.map(|scope| ("scope", scope)));
                    serde_urlencoded::to_string(&fields).unwrap()
                }
            ),
            1 => "[a-z=&%+]{0,40}",
        ]
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

        /// The form type in any case, with any parameters, reaches the
        /// form parser; any other type is 415; raw bytes never panic.
        #[test]
        fn arbitrary_content_types_never_panic(
            content_type in content_type(),
            body in form_body(),
        ) {
            let bytes = match &content_type {
                ContentType::Form(value) => value.as_bytes(),
                ContentType::Other(value) => value.as_bytes(),
                ContentType::Unknown(bytes) => bytes,
            };
            let Ok(value) = HeaderValue::from_bytes(bytes) else {
                return Ok(());
            };
            let result = PasswordGrant::from_form(Some(&value), body.as_bytes());
            match content_type {
                ContentType::Form(_) => {
                    prop_assert_ne!(result.clone().err(), Some(GrantError::UnsupportedMediaType));
                }
                ContentType::Other(_) => {
                    prop_assert_eq!(result.clone().err(), Some(GrantError::UnsupportedMediaType));
                }
                ContentType::Unknown(_) => {}
            }
            // A body this small is never too large.
            prop_assert_ne!(result.err(), Some(GrantError::PayloadTooLarge));
        }
    }
}
