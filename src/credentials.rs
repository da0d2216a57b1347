//! Where a request's access token is found: the `Authorization: Bearer`
//! header, a query parameter, or a cookie.
//!
//! # Rules
//!
//! - **Bearer header.** The scheme is compared case-insensitively and must be
//!   followed by exactly one space and one RFC 7235 `token68` (`Bearer`
//!   alone, a tab, two tokens, non-ASCII bytes -> 400 `invalid_request`).
//!   Another scheme (`Basic …`) or no header means "no credentials". Two or
//!   more `Authorization` headers -> 400.
//! - **Query parameter** (off by default). Read only on WebSocket upgrade
//!   requests (`GET` with `Upgrade: websocket`), unless
//!   [`allow_query_everywhere`](Credentials::allow_query_everywhere) is set:
//!   elsewhere a query token would leak into logs, history and `Referer`, so
//!   it is never decoded. A repeated parameter -> 400.
//! - **WebSocket subprotocol** (off by default). Read only on WebSocket
//!   upgrade requests: a browser cannot set headers on `new WebSocket(...)`,
//!   but it can offer subprotocols, so a page script sends
//!   `new WebSocket(url, [marker, token])` and the request carries
//!   `Sec-WebSocket-Protocol: marker, token`. The token is the list element
//!   right after the configured marker; the marker repeated, or last in the
//!   list -> 400. The server must answer with the marker (or an app
//!   protocol) as the chosen protocol, never the token: with axum,
//!   `WebSocketUpgrade::protocols([marker])` picks from the server's list
//!   only; elsewhere use [`ws::select_protocol`](crate::ws::select_protocol).
//!   axum's `WebSocketUpgrade` `Debug` output prints the offered protocols:
//!   never log it when this source is on.
//! - **Cookie** (off by default). Every `Cookie` header line is read (HTTP/2
//!   may split them); two cookies of that name -> 400, even with equal
//!   values. Only that cookie's own value must be valid: other cookies on
//!   the line are ignored however malformed they are (non-ASCII values,
//!   cookies a sibling subdomain set), parsed by the `cookie` crate from a
//!   lossily decoded copy of a line that is not ASCII.
//! - An empty query parameter or cookie counts as absent.
//! - A token found by more than one source -> 400 `invalid_request`
//!   (RFC 6750 §2), unless [`Precedence::FirstInOrder`] is configured, in
//!   which case the first source in the configured order wins (for browser
//!   apps that may hold a stale cookie next to a fresh header).
//! - The token that is used must be a `token68` (400 `invalid_request`
//!   otherwise); one that loses to the precedence is not read further.
//!   [`Authenticator`](crate::Authenticator) runs this byte-by-byte check
//!   only for a token its verified-token cache does not hold: a cached
//!   token was verified, so it is well-formed.
//! - A token longer than [`max_token_len`](Credentials::max_token_len)
//!   (default 8 KiB) -> 401 `invalid_token`, before anything decodes it.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::request::Parts;
use http::{HeaderValue, Method};

use crate::config::ConfigError;

/// The default cap on a token's length, in bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a request's credentials could not be read. The
/// [`error`](crate::error) module renders it: `Malformed` as 400
/// `invalid_request`, `TooLong` as 401 `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsRejection {
    /// The credentials are malformed or ambiguous; the text (fixed, never
    /// request data) says how.
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// The token is longer than [`Credentials::max_token_len`]; nothing
    /// decoded it.
    #[error("the token is too long")]
    TooLong,
}

/// Where a token came from. The Origin guard and sliding expiry care:
/// a cookie is an ambient credential, a header is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// `Authorization: Bearer …`.
    Bearer,
    /// A query parameter.
    Query,
    /// A cookie.
    Cookie,
    /// The `Sec-WebSocket-Protocol` header of a WebSocket upgrade.
    Subprotocol,
}

/// One place to look for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The `Authorization: Bearer` header.
    Bearer,
    /// The query parameter with this name.
    Query(String),
    /// The cookie described by this [`SessionCookie`].
    Cookie(SessionCookie),
    /// The `Sec-WebSocket-Protocol` element after this marker protocol, on
    /// WebSocket upgrades only (see the [module docs](self)).
    Subprotocol(String),
}

impl TokenSource {
    fn kind(&self) -> CredentialKind {
        match self {
            TokenSource::Bearer => CredentialKind::Bearer,
            TokenSource::Query(_) => CredentialKind::Query,
            TokenSource::Cookie(_) => CredentialKind::Cookie,
            TokenSource::Subprotocol(_) => CredentialKind::Subprotocol,
        }
    }
}

/// What to do when a request carries a token in more than one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precedence {
    /// 400 `invalid_request` (RFC 6750 §2). The default.
    #[default]
    Reject,
    /// The first source in the configured order wins.
    FirstInOrder,
}

/// A token found in a request, borrowed from it where possible.
#[derive(Clone, PartialEq, Eq)]
pub struct FoundToken<'a> {
    /// The token text.
    pub token: Cow<'a, str>,
    /// Where it was found.
    pub kind: CredentialKind,
}

impl std::fmt::Debug for FoundToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundToken")
            .field("token", &"[redacted]")
            .field("kind", &self.kind)
            .finish()
    }
}

/// A token found in a request whose syntax (`token68`, and so text) is not
/// checked yet. [`Authenticator`](crate::Authenticator) looks it up in the
/// verified-token cache first: a token there was verified, so it is
/// well-formed, and only a token that is not there needs the byte-by-byte
/// check ([`check`](Self::check)). Every other rule has been applied.
pub(crate) struct UncheckedToken<'a> {
    bytes: Cow<'a, [u8]>,
    kind: CredentialKind,
}

impl<'a> UncheckedToken<'a> {
    /// The token's bytes, as the request carried them.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where it was found.
    pub(crate) fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// A `token68`, or 400 `invalid_request`.
    pub(crate) fn check(self) -> Result<FoundToken<'a>, CredentialsRejection> {
        let malformed = || {
            CredentialsRejection::Malformed(match self.kind {
                CredentialKind::Bearer => MALFORMED_BEARER,
                _ => "malformed token",
            })
        };
        if !is_token68(&self.bytes) {
            return Err(malformed());
        }
        // token68 is ASCII, so neither conversion fails.
        let token = match self.bytes {
            Cow::Borrowed(bytes) => {
                Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| malformed())?)
            }
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8(bytes).map_err(|_| malformed())?),
        };
        Ok(FoundToken {
            token,
            kind: self.kind,
        })
    }
}

/// Which sources to read, in which order, and the rules for reading them.
/// See the [module docs](self).
///
/// ```
/// use tower_auth::{Credentials, Precedence};
///
/// // Header first, then the `access_token` cookie; header wins if both.
/// let credentials = Credentials::bearer()
///     .cookie("access_token")
///     .precedence(Precedence::FirstInOrder);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Credentials {
    sources: Vec<TokenSource>,
    precedence: Precedence,
    query_everywhere: bool,
    max_token_len: usize,
}

impl Default for Credentials {
    fn default() -> Self {
        Self::bearer()
    }
}

impl Credentials {
    /// The `Authorization: Bearer` header only: the default.
    pub fn bearer() -> Self {
        Self::from_sources([TokenSource::Bearer])
    }

    /// Exactly these sources, in this order.
    pub fn from_sources(sources: impl IntoIterator<Item = TokenSource>) -> Self {
        Credentials {
            sources: sources.into_iter().collect(),
            precedence: Precedence::Reject,
            query_everywhere: false,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }

    /// Also reads the cookie `name`, after the sources already listed.
    /// Cookies this crate sets under that name get the secure defaults of
    /// [`SessionCookie::new`].
    pub fn cookie(self, name: impl Into<String>) -> Self {
        self.session_cookie(SessionCookie::new(name))
    }

    /// Also reads the session cookie, and sets cookies with its attributes.
    pub fn session_cookie(mut self, cookie: SessionCookie) -> Self {
        self.sources.push(TokenSource::Cookie(cookie));
        self
    }

    /// Also reads the query parameter `name` (on WebSocket upgrades only,
    /// unless [`allow_query_everywhere`](Self::allow_query_everywhere)).
    pub fn query(mut self, name: impl Into<String>) -> Self {
        self.sources.push(TokenSource::Query(name.into()));
        self
    }

    /// Also reads the token from the WebSocket subprotocol list, as the
    /// element after `marker` (on WebSocket upgrades only). The marker must
    /// be an HTTP token, e.g. `"access_token"`.
    pub fn subprotocol(mut self, marker: impl Into<String>) -> Self {
        self.sources.push(TokenSource::Subprotocol(marker.into()));
        self
    }

    /// The subprotocol marker, if that source is configured: the protocol a
    /// WebSocket server echoes back when it accepts such a client.
    pub fn subprotocol_marker(&self) -> Option<&str> {
        self.sources.iter().find_map(|source| match source {
            TokenSource::Subprotocol(marker) => Some(marker.as_str()),
            _ => None,
        })
    }

    /// What to do with a token in more than one source.
    pub fn precedence(mut self, precedence: Precedence) -> Self {
        self.precedence = precedence;
        self
    }

    /// Reads query tokens on every request, not only WebSocket upgrades.
    /// Query strings end up in access logs, browser history and `Referer`
    /// headers: use this only for tools that cannot send a header.
    pub fn allow_query_everywhere(mut self) -> Self {
        self.query_everywhere = true;
        self
    }

    /// The longest token accepted, in bytes. Default 8 KiB.
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = max;
        self
    }

    /// The configured sources, in order.
    pub fn sources(&self) -> &[TokenSource] {
        &self.sources
    }

    /// The cookie source, if one is configured.
    pub fn session_cookie_config(&self) -> Option<&SessionCookie> {
        self.sources.iter().find_map(|source| match source {
            TokenSource::Cookie(cookie) => Some(cookie),
            _ => None,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.sources.is_empty() {
            return Err(ConfigError::Credentials(
                "at least one token source is needed",
            ));
        }
        for (i, source) in self.sources.iter().enumerate() {
            if self.sources[..i].iter().any(|s| s.kind() == source.kind()) {
                return Err(ConfigError::Credentials(
                    "each kind of token source may appear once",
                ));
            }
            let name = match source {
                TokenSource::Bearer => continue,
                TokenSource::Query(name) | TokenSource::Subprotocol(name) => name,
                TokenSource::Cookie(cookie) => {
                    cookie.validate()?;
                    &cookie.name
                }
            };
            // A cookie or parameter name must be an RFC 7230 token.
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(ConfigError::Credentials(
                    "a cookie, query parameter or subprotocol name must be an HTTP token",
                ));
            }
        }
        if self.max_token_len == 0 {
            return Err(ConfigError::Credentials("max_token_len must be positive"));
        }
        Ok(())
    }

    /// Finds the request's token. `Ok(None)`: no credentials at all.
    pub fn extract<'a>(
        &self,
        parts: &'a Parts,
    ) -> Result<Option<FoundToken<'a>>, CredentialsRejection> {
        self.find(parts)?.map(UncheckedToken::check).transpose()
    }

    /// [`extract`](Self::extract) without the token's syntax check: the
    /// token that is used, after the source rules, the ambiguity rule and
    /// the length cap.
    pub(crate) fn find<'a>(
        &self,
        parts: &'a Parts,
    ) -> Result<Option<UncheckedToken<'a>>, CredentialsRejection> {
        let mut found: Option<UncheckedToken<'a>> = None;
        for source in &self.sources {
            let token = match source {
                TokenSource::Bearer => self.header_token(parts)?,
                TokenSource::Query(name) => self.query_token(parts, name)?,
                TokenSource::Cookie(cookie) => self.cookie_token(parts, &cookie.name)?,
                TokenSource::Subprotocol(marker) => self.subprotocol_token(parts, marker)?,
            };
            let Some(token) = token else { continue };
            if found.is_some() {
                match self.precedence {
                    Precedence::Reject => {
                        return Err(CredentialsRejection::Malformed(
                            "the token was sent by more than one method",
                        ));
                    }
                    Precedence::FirstInOrder => break,
                }
            }
            found = Some(UncheckedToken {
                bytes: token,
                kind: source.kind(),
            });
        }
        Ok(found)
    }

    fn check_len(&self, token: &[u8]) -> Result<(), CredentialsRejection> {
        if token.len() > self.max_token_len {
            Err(CredentialsRejection::TooLong)
        } else {
            Ok(())
        }
    }

    fn header_token<'a>(
        &self,
        parts: &'a Parts,
    ) -> Result<Option<Cow<'a, [u8]>>, CredentialsRejection> {
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(CredentialsRejection::Malformed(
                "more than one Authorization header",
            ));
        }
        let Some(token) = parse_bearer(value)? else {
            return Ok(None);
        };
        self.check_len(token)?;
        Ok(Some(Cow::Borrowed(token)))
    }

    fn query_token<'a>(
        &self,
        parts: &'a Parts,
        name: &str,
    ) -> Result<Option<Cow<'a, [u8]>>, CredentialsRejection> {
        if !self.query_everywhere && !is_websocket_upgrade(parts) {
            return Ok(None);
        }
        let Some(query) = parts.uri.query() else {
            return Ok(None);
        };
        let mut matches = form_urlencoded::parse(query.as_bytes()).filter(|(key, _)| key == name);
        let Some((_, value)) = matches.next() else {
            return Ok(None);
        };
        if matches.next().is_some() {
            return Err(CredentialsRejection::Malformed(
                "the token query parameter is repeated",
            ));
        }
        self.non_empty_token(value)
    }

    fn subprotocol_token<'a>(
        &self,
        parts: &'a Parts,
        marker: &str,
    ) -> Result<Option<Cow<'a, [u8]>>, CredentialsRejection> {
        if !is_websocket_upgrade(parts) {
            return Ok(None);
        }
        match token_after_marker(parts.headers.get_all(SEC_WEBSOCKET_PROTOCOL), marker)? {
            Some(token) => self.non_empty_token(Cow::Borrowed(token)),
            None => Ok(None),
        }
    }

    fn cookie_token<'a>(
        &self,
        parts: &'a Parts,
        name: &str,
    ) -> Result<Option<Cow<'a, [u8]>>, CredentialsRejection> {
        match cookie_value(parts, name)? {
            Some(value) => self.non_empty_token(value),
            None => Ok(None),
        }
    }

    /// Empty means absent; otherwise the length cap.
    fn non_empty_token<'a>(
        &self,
        value: Cow<'a, str>,
    ) -> Result<Option<Cow<'a, [u8]>>, CredentialsRejection> {
        if value.is_empty() {
            return Ok(None);
        }
        self.check_len(value.as_bytes())?;
        Ok(Some(match value {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        }))
    }
}

/// The value of the cookie `name` in every `Cookie` line of `parts`, taken
/// raw (never percent-decoded); two cookies of that name -> 400.
pub(crate) fn cookie_value<'a>(
    parts: &'a Parts,
    name: &str,
) -> Result<Option<Cow<'a, str>>, CredentialsRejection> {
    let mut found = None;
    for line in parts.headers.get_all(COOKIE) {
        // Other cookies on the line are none of our business, whatever
        // bytes they hold (`lang=français`, one a sibling subdomain set): a
        // line that is not visible ASCII is parsed from a lossily decoded
        // copy, so its other cookies cannot hide ours. Our own cookie's
        // value must still be a token68 (400 otherwise): a byte that was
        // not ASCII is U+FFFD in the copy, which never is.
        let line = match line.to_str() {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => Cow::Owned(String::from_utf8_lossy(line.as_bytes()).into_owned()),
        };
        for cookie in cookie::Cookie::split_parse(line).flatten() {
            if cookie.name() != name {
                continue;
            }
            if found.is_some() {
                return Err(CredentialsRejection::Malformed(
                    "the token cookie is repeated",
                ));
            }
            found = Some(match cookie.value_raw() {
                Some(raw) => Cow::Borrowed(raw),
                None => Cow::Owned(cookie.value().to_owned()),
            });
        }
    }
    Ok(found)
}

/// The session cookie that carries an access token in a browser: its name
/// and the attributes of every `Set-Cookie` this crate sends for it (a
/// renewed token, a cookie login, a logout).
///
/// Defaults: `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, no `Domain`.
/// A name starting with `__Host-` (browsers then refuse the cookie unless it
/// is `Secure`, `Path=/` and has no `Domain`) must keep `Secure`; turning
/// `Secure` off is for plain-HTTP development only.
///
/// ```
/// use tower_auth::credentials::SessionCookie;
///
/// let cookie = SessionCookie::new("__Host-access_token");
/// let header = cookie.set_cookie("eyJhbGciOi.eyJzdWIiOi.c2ln", std::time::Duration::from_secs(1800));
/// assert_eq!(
///     header.to_str().unwrap(),
///     "__Host-access_token=eyJhbGciOi.eyJzdWIiOi.c2ln; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=1800"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SessionCookie {
    name: String,
    path: String,
    secure: bool,
    same_site: cookie::SameSite,
    token_in_login_body: bool,
}

impl SessionCookie {
    /// A cookie called `name` with the secure defaults.
    pub fn new(name: impl Into<String>) -> Self {
        SessionCookie {
            name: name.into(),
            path: "/".to_owned(),
            secure: true,
            same_site: cookie::SameSite::Lax,
            token_in_login_body: false,
        }
    }

    /// Whether to send `Secure`. Only for plain-HTTP development.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The `Path` attribute: the browser sends the cookie only to paths
    /// under it. Default `/`. A `__Host-` cookie must keep `/`. A refresh
    /// token's cookie is scoped to the token endpoint this way
    /// ([`RefreshTokens::cookie`](crate::session::RefreshTokens::cookie)).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The `SameSite` attribute. Default `Lax`.
    pub fn same_site(mut self, same_site: cookie::SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Whether the session login
    /// ([`session_login_endpoint`](crate::login::session_login_endpoint))
    /// also returns the token in its JSON body. Default: no — the body
    /// says `token_type`, `expires_in` and `scope`, and the token lives
    /// only in this `HttpOnly` cookie, out of page scripts' reach. Turn it on
    /// for a page that must hand the token to something the cookie cannot
    /// reach (a WebSocket to another origin, say), knowing what it gives
    /// up: a script injected into the page (XSS) can then read a valid token
    /// and use it elsewhere until it expires. (For renewed tokens, see
    /// [`SlidingExpiry::header_for_cookie_sessions`](crate::SlidingExpiry::header_for_cookie_sessions).)
    pub fn token_in_login_body(mut self, include: bool) -> Self {
        self.token_in_login_body = include;
        self
    }

    /// Whether the session login returns the token in its body; see
    /// [`token_in_login_body`](Self::token_in_login_body).
    pub fn login_body_has_token(&self) -> bool {
        self.token_in_login_body
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Set-Cookie` value carrying `token` for `max_age`.
    pub fn set_cookie(&self, token: &str, max_age: std::time::Duration) -> HeaderValue {
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        self.header(
            self.builder(token)
                .max_age(cookie::time::Duration::seconds(max_age)),
        )
    }

    /// A `Set-Cookie` value that deletes the cookie (logout).
    pub fn removal(&self) -> HeaderValue {
        self.header(self.builder("").removal())
    }

    fn builder<'a>(&'a self, value: &'a str) -> cookie::CookieBuilder<'a> {
        cookie::Cookie::build((self.name.as_str(), value))
            .http_only(true)
            .same_site(self.same_site)
            .secure(self.secure)
            .path(self.path.as_str())
    }

    fn header(&self, cookie: cookie::CookieBuilder<'_>) -> HeaderValue {
        // The name is a checked token and the value a token68 or empty, so
        // the cookie is visible ASCII; an empty value is the fallback that
        // cannot happen.
        HeaderValue::from_str(&cookie.build().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || !self.name.bytes().all(is_tchar) {
            return Err(ConfigError::Credentials(
                "a cookie name must be an HTTP token",
            ));
        }
        if self.name.starts_with("__Host-") && !self.secure {
            return Err(ConfigError::Credentials("a __Host- cookie must be Secure"));
        }
        // RFC 6265 §4.1.1: any CHAR except controls and `;`.
        if !self.path.starts_with('/')
            || !self
                .path
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b';')
        {
            return Err(ConfigError::Credentials(
                "a cookie path must start with / and hold no ; or control characters",
            ));
        }
        if self.name.starts_with("__Host-") && self.path != "/" {
            return Err(ConfigError::Credentials(
                "a __Host- cookie must have Path=/",
            ));
        }
        if self.same_site == cookie::SameSite::None && !self.secure {
            return Err(ConfigError::Credentials(
                "a SameSite=None cookie must be Secure",
            ));
        }
        Ok(())
    }
}

/// The elements of comma-separated header lines (RFC 9110 §5.6.1): split,
/// trimmed of spaces and tabs, empty elements dropped. A line that is not
/// visible ASCII yields one element that matches nothing a client could
/// mean, so it can neither be a marker nor hide one.
pub(crate) fn list_elements<'a>(
    lines: http::header::GetAll<'a, HeaderValue>,
) -> impl Iterator<Item = &'a str> {
    lines.into_iter().flat_map(|line| {
        let text = line.to_str().unwrap_or("\u{0}");
        text.split(',')
            .map(|element| element.trim_matches([' ', '\t']))
            .filter(|element| !element.is_empty())
    })
}

/// The subprotocol element right after `marker`: `Ok(None)` without the
/// marker; 400 when it is repeated or last.
fn token_after_marker<'a>(
    lines: http::header::GetAll<'a, HeaderValue>,
    marker: &str,
) -> Result<Option<&'a str>, CredentialsRejection> {
    let mut elements = list_elements(lines);
    let mut token = None;
    while let Some(element) = elements.next() {
        if element != marker {
            continue;
        }
        if token.is_some() {
            return Err(CredentialsRejection::Malformed(
                "the subprotocol marker is repeated",
            ));
        }
        token = Some(elements.next().ok_or(CredentialsRejection::Malformed(
            "the subprotocol marker is not followed by a token",
        ))?);
    }
    Ok(token)
}

/// The description of the 400 for a `Bearer` header that is not one space
/// and a token68 (decision 1).
const MALFORMED_BEARER: &str = "malformed Bearer credentials";

/// `Ok(None)` for another scheme; the bytes after `Bearer ` otherwise.
fn parse_bearer(value: &HeaderValue) -> Result<Option<&[u8]>, CredentialsRejection> {
    let bytes = value.as_bytes();
    let scheme_len = bytes.iter().take_while(|b| is_tchar(**b)).count();
    if !bytes[..scheme_len].eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    match &bytes[scheme_len..] {
        [b' ', token @ ..] if !token.is_empty() => Ok(Some(token)),
        _ => Err(CredentialsRejection::Malformed(MALFORMED_BEARER)),
    }
}

/// RFC 7235 `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(token: &[u8]) -> bool {
    let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..token.len() - padding];
    // Every request's token passes through here. Folding with `&` instead of
    // stopping at the first bad byte lets the compiler check 16 bytes at a
    // time (a bad token costs the same; its length is capped), and
    // `-` `.` `/` and the digits are one range, 0x2D..=0x39.
    !body.is_empty()
        && body.iter().fold(true, |ok, &b| {
            ok & matches!(b, b'-'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'+' | b'_' | b'~')
        })
}

/// RFC 7230 `tchar`: ALPHA, DIGIT and ``!#$%&'*+-.^_`|~`` (`#` to `'` is
/// one range).
fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'0'..=b'9'
            | b'A'..=b'Z'
            | b'a'..=b'z'
            | b'!'
            | b'#'..=b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    )
}

/// `GET` with `Upgrade: websocket` (HTTP/1.1 WebSocket handshake).
pub fn is_websocket_upgrade(parts: &Parts) -> bool {
    parts.method == Method::GET
        && parts.headers.get_all(UPGRADE).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_where_a_token_was_found_never_the_token() {
        let found = FoundToken {
            token: Cow::Borrowed("eyJ.secret.sig"),
            kind: CredentialKind::Cookie,
        };
        let debug = format!("{found:?}");
        assert!(
            debug.contains("Cookie") && debug.contains("[redacted]"),
            "{debug}"
        );
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn a_session_cookie_says_its_name_and_whether_logins_return_its_token() {
        let cookie = SessionCookie::new("__Host-session");
        assert_eq!(cookie.name(), "__Host-session");
        assert!(!cookie.login_body_has_token());
        assert!(cookie.token_in_login_body(true).login_body_has_token());
    }
    use http::Request;
    use proptest::prelude::*;

    fn parts(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Parts {
        build(Request::builder().uri("/"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn all_sources() -> Credentials {
        Credentials::bearer().cookie("at").query("token")
    }

    #[test]
    fn token68_accepts_exactly_its_alphabet() {
        for b in 0..=u8::MAX {
            let in_alphabet = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_token68(&[b'a', b, b'z']), in_alphabet, "byte {b:#04x}");
        }
        assert!(is_token68(b"abc=="));
        assert!(!is_token68(b"=="));
        assert!(!is_token68(b""));
        assert!(!is_token68(b"a=b"));
    }

    #[test]
    fn tchar_accepts_exactly_its_alphabet() {
        for b in 0..=u8::MAX {
            let in_alphabet = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), in_alphabet, "byte {b:#04x}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let p = parts(|b| b.header("authorization", "bEaReR abc.def-_~+/=="));
        let found = Credentials::bearer().extract(&p).unwrap().unwrap();
        assert_eq!(found.token, "abc.def-_~+/==");
        assert_eq!(found.kind, CredentialKind::Bearer);
    }

    #[test]
    fn other_schemes_and_no_header_are_no_credentials() {
        for value in ["Basic dXNlcjpwYXNz", "", "Bearerx abc", "Token abc"] {
            let p = parts(|b| b.header("authorization", value));
            assert!(
                Credentials::bearer().extract(&p).unwrap().is_none(),
                "{value:?}"
            );
        }
        assert!(
            Credentials::bearer()
                .extract(&parts(|b| b))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn malformed_bearer_is_invalid_request() {
        for value in [
            "Bearer",
            "Bearer ",
            "Bearer\tabc",
            "Bearer  abc",
            "Bearer a b",
            "Bearer a=b",
            "Bearer ab\"c",
        ] {
            let p = parts(|b| b.header("authorization", value));
            assert!(
                matches!(
                    Credentials::bearer().extract(&p),
                    Err(CredentialsRejection::Malformed(_))
                ),
                "{value:?}"
            );
        }
        let non_ascii = HeaderValue::from_bytes(b"Bearer ab\xffc").unwrap();
        let p = parts(|b| b.header("authorization", non_ascii));
        assert!(matches!(
            Credentials::bearer().extract(&p),
            Err(CredentialsRejection::Malformed(_))
        ));
    }

    #[test]
    fn two_authorization_headers_are_rejected() {
        let p = parts(|b| {
            b.header("authorization", "Bearer a")
                .header("authorization", "Bearer a")
        });
        assert!(matches!(
            Credentials::bearer().extract(&p),
            Err(CredentialsRejection::Malformed(_))
        ));
    }

    #[test]
    fn query_token_only_on_websocket_upgrades() {
        let plain = parts(|b| b.uri("/ws?token=abc"));
        assert!(all_sources().extract(&plain).unwrap().is_none());
        let upgrade = parts(|b| b.uri("/ws?token=abc").header("upgrade", "WebSocket"));
        assert_eq!(
            all_sources().extract(&upgrade).unwrap().unwrap().kind,
            CredentialKind::Query
        );
        let everywhere = all_sources().allow_query_everywhere();
        assert!(everywhere.extract(&plain).unwrap().is_some());
    }

    #[test]
    fn repeated_query_or_cookie_is_rejected_and_empty_is_absent() {
        let upgrade = |uri: &'static str| parts(move |b| b.uri(uri).header("upgrade", "websocket"));
        assert!(matches!(
            all_sources().extract(&upgrade("/?token=a&token=a")),
            Err(CredentialsRejection::Malformed(_))
        ));
        assert!(
            all_sources()
                .extract(&upgrade("/?token="))
                .unwrap()
                .is_none()
        );
        let two_cookies = parts(|b| b.header("cookie", "at=a").header("cookie", "x=1; at=a"));
        assert!(matches!(
            all_sources().extract(&two_cookies),
            Err(CredentialsRejection::Malformed(_))
        ));
        assert!(
            all_sources()
                .extract(&parts(|b| b.header("cookie", "at=")))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn two_methods_are_rejected_unless_precedence_is_set() {
        let p = parts(|b| {
            b.header("authorization", "Bearer h")
                .header("cookie", "at=c")
        });
        assert!(matches!(
            all_sources().extract(&p),
            Err(CredentialsRejection::Malformed(_))
        ));
        let first = all_sources().precedence(Precedence::FirstInOrder);
        assert_eq!(first.extract(&p).unwrap().unwrap().token, "h");
    }

    #[test]
    fn only_the_token_used_must_be_well_formed() {
        // A stale, malformed cookie next to a good header: with precedence
        // the header wins and the cookie is not read further...
        let p = parts(|b| {
            b.header("authorization", "Bearer h")
                .header("cookie", "at=bad\\token")
        });
        let first = all_sources().precedence(Precedence::FirstInOrder);
        assert_eq!(first.extract(&p).unwrap().unwrap().token, "h");
        // ... and without, two methods are refused whatever they hold.
        assert!(matches!(
            all_sources().extract(&p),
            Err(CredentialsRejection::Malformed(
                "the token was sent by more than one method"
            ))
        ));
        // The token used is checked, whichever source it came from.
        let p = parts(|b| b.header("cookie", "at=bad\\token"));
        assert!(matches!(
            all_sources().extract(&p),
            Err(CredentialsRejection::Malformed("malformed token"))
        ));
        let p = parts(|b| b.header("authorization", "Bearer a\u{e9}"));
        assert!(matches!(
            all_sources().extract(&p),
            Err(CredentialsRejection::Malformed(MALFORMED_BEARER))
        ));
    }

    #[test]
    fn long_tokens_are_refused_before_decoding() {
        let token = "a".repeat(DEFAULT_MAX_TOKEN_LEN + 1);
        let p = parts(|b| b.header("authorization", format!("Bearer {token}")));
        assert!(matches!(
            Credentials::bearer().extract(&p),
            Err(CredentialsRejection::TooLong)
        ));
    }

    #[test]
    fn configuration_is_checked() {
        assert!(Credentials::bearer().cookie("bad name").validate().is_err());
        let insecure_host = SessionCookie::new("__Host-at").secure(false);
        assert!(
            Credentials::bearer()
                .session_cookie(insecure_host)
                .validate()
                .is_err()
        );
        let dev = SessionCookie::new("at").secure(false);
        assert!(Credentials::bearer().session_cookie(dev).validate().is_ok());
        assert!(
            Credentials::bearer()
                .cookie("a")
                .cookie("b")
                .validate()
                .is_err()
        );
        assert!(Credentials::from_sources([]).validate().is_err());
        assert!(all_sources().validate().is_ok());
        // SameSite=None needs Secure; with it, it is fine.
        let cross_site = SessionCookie::new("at").same_site(cookie::SameSite::None);
        assert!(cross_site.clone().validate().is_ok());
        assert!(cross_site.secure(false).validate().is_err());
        // A path must be one; a __Host- cookie keeps `/`.
        assert!(SessionCookie::new("rt").path("/token").validate().is_ok());
        assert!(SessionCookie::new("rt").path("token").validate().is_err());
        assert!(SessionCookie::new("rt").path("/a;b").validate().is_err());
        assert!(
            SessionCookie::new("__Host-rt")
                .path("/token")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn subprotocol_token_only_on_upgrades_and_after_the_marker() {
        let sources = Credentials::bearer().subprotocol("access_token");
        let upgrade = |value: &'static str| {
            parts(move |b| {
                b.header("upgrade", "websocket")
                    .header("sec-websocket-protocol", value)
            })
        };
        let listed = upgrade("chat, access_token,\tabc.def , v2");
        let found = sources.extract(&listed).unwrap().unwrap();
        assert_eq!(
            (found.token.as_ref(), found.kind),
            ("abc.def", CredentialKind::Subprotocol)
        );
        let split = parts(|b| {
            b.header("upgrade", "websocket")
                .header("sec-websocket-protocol", "access_token")
                .header("sec-websocket-protocol", "abc")
        });
        assert_eq!(sources.extract(&split).unwrap().unwrap().token, "abc");
        assert!(sources.extract(&upgrade("chat, v2")).unwrap().is_none());
        let plain = parts(|b| b.header("sec-websocket-protocol", "access_token, abc"));
        assert!(sources.extract(&plain).unwrap().is_none());
        for bad in [
            "access_token",
            "chat, access_token",
            "access_token, a, access_token, b",
            "access_token, a\"b",
        ] {
            assert!(
                matches!(
                    sources.extract(&upgrade(bad)),
                    Err(CredentialsRejection::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let both = parts(|b| {
            b.header("upgrade", "websocket")
                .header("sec-websocket-protocol", "access_token, abc")
                .header("authorization", "Bearer abc")
        });
        assert!(matches!(
            sources.extract(&both),
            Err(CredentialsRejection::Malformed(_))
        ));
        assert!(
            Credentials::bearer()
                .subprotocol("bad marker")
                .validate()
                .is_err()
        );
        assert_eq!(sources.subprotocol_marker(), Some("access_token"));
    }

    /// The token shape every source accepts.
    fn token68() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~+/-]{1,40}={0,2}"
    }

    /// `Authorization` values built from a scheme, a separator and a token,
    /// each usually valid and sometimes a near miss or junk; now and then
    /// raw bytes.
    fn authorization_value() -> impl Strategy<Value = Vec<u8>> {
        let scheme = prop_oneof![
            4 => proptest::sample::select(vec!["Bearer", "bearer", "BEARER", "bEaReR"]),
            1 => proptest::sample::select(vec!["Bearerx", "Basic", "Bear", "Token", ""]),
        ];
        let separator = prop_oneof![6 => Just(" ".to_owned()), 1 => "[ \t]{0,3}"];
        let token = prop_oneof![
            5 => token68(),
            1 => "[A-Za-z0-9._~+/= \"-]{0,30}",
            1 => "\\PC{0,20}",
        ];
        prop_oneof![
            8 => (scheme, separator, token)
                .prop_map(|(scheme, sep, token)| format!("{scheme}{sep}{token}").into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..60),
        ]
    }

    /// `Cookie` lines of pairs, the session cookie `at` among them most of
    /// the time, names and values sometimes near misses or junk; now and
    /// then raw bytes.
    fn cookie_value() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            4 => Just("at".to_owned()),
            3 => "[aA][tT]",
            1 => proptest::sample::select(vec!["at ", " at", "a", "att"]).prop_map(str::to_owned),
            2 => "[a-z]{1,6}",
            1 => "\\PC{0,5}",
        ];
        let value = prop_oneof![
            4 => token68(),
            1 => Just(String::new()),
            1 => "[^;]{0,20}",
            1 => "\"[A-Za-z0-9]{1,10}\"",
        ];
        let pair = (name, value).prop_map(|(name, value)| format!("{name}={value}"));
        let separator = proptest::sample::select(vec!["; ", ";", " ; "]);
        prop_oneof![
            8 => (proptest::collection::vec(pair, 0..4), separator)
                .prop_map(|(pairs, sep)| pairs.join(sep).into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..60),
        ]
    }

    /// Query strings of pairs, `token` among them most of the time (also
    /// in other cases, percent-encoded or repeated), values usually
    /// token68, sometimes percent escapes or junk.
    fn query_string() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            4 => Just("token".to_owned()),
            2 => "[tT][oO][kK][eE][nN]",
            1 => proptest::sample::select(vec!["tok%65n", "token%FF", "token ", "tokens"])
                .prop_map(str::to_owned),
            2 => "[a-z_]{1,6}",
            1 => "[a-z_=&%0-9A-Fa-f+.~-]{0,8}",
        ];
        let value = prop_oneof![
            // `+` decodes to a space: mostly without it, sometimes with.
            3 => "[A-Za-z0-9._~/-]{1,40}={0,2}",
            1 => token68(),
            1 => Just(String::new()),
            1 => "%[0-9A-Fa-f]{2}",
            1 => "[a-z_=&%0-9A-Fa-f+.~-]{0,20}",
        ];
        let pair = (name, value).prop_map(|(name, value)| format!("{name}={value}"));
        proptest::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join("&"))
    }

    proptest! {
        #[test]
        fn subprotocol_lists_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let p = parts(|b| b.header("upgrade", "websocket").header("sec-websocket-protocol", value));
                let _ = Credentials::bearer().subprotocol("m").extract(&p);
            }
        }

        #[test]
        fn subprotocol_tokens_round_trip(
            before in proptest::collection::vec("[a-z0-9.]{1,10}", 0..3),
            token in "[A-Za-z0-9._~+-]{1,100}",
            after in proptest::collection::vec("[a-z0-9.]{1,10}", 0..3),
            space in "[ \t]{0,2}",
        ) {
            let mut list: Vec<String> = before.iter().filter(|p| *p != "m").cloned().collect();
            list.push("m".into());
            list.push(token.clone());
            list.extend(after.iter().filter(|p| *p != "m").cloned());
            let value = list.join(&format!(",{space}"));
            let p = parts(|b| b.header("upgrade", "websocket").header("sec-websocket-protocol", value));
            let found = Credentials::bearer().subprotocol("m").extract(&p).unwrap().unwrap();
            prop_assert_eq!(found.token, token);
        }

        /// Whatever the header and cookie, a token found is token68, within
        /// the cap, and from the source that really carried it.
        #[test]
        fn header_and_cookie_values_never_panic_and_give_only_token68(
            authorization in proptest::option::of(authorization_value()),
            cookie in proptest::option::of(cookie_value()),
            upgrade in any::<bool>(),
        ) {
            let header = |bytes: &Option<Vec<u8>>| {
                bytes.as_ref().and_then(|bytes| HeaderValue::from_bytes(bytes).ok())
            };
            let (authorization, cookie) = (header(&authorization), header(&cookie));
            let p = parts(|mut b| {
                if let Some(value) = &authorization {
                    b = b.header("authorization", value.clone());
                }
                if let Some(value) = &cookie {
                    b = b.header("cookie", value.clone());
                }
                if upgrade {
                    b = b.header("upgrade", "websocket");
                }
                b
            });
            if let Ok(Some(found)) = all_sources().extract(&p) {
                prop_assert!(is_token68(found.token.as_bytes()), "{:?}", found.token);
                prop_assert!(found.token.len() <= DEFAULT_MAX_TOKEN_LEN);
                let text = |value: &Option<HeaderValue>| {
                    value.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                };
                match found.kind {
                    CredentialKind::Bearer => {
                        let sent = text(&authorization).unwrap_or_default();
                        prop_assert!(
                            sent.to_ascii_lowercase().starts_with("bearer ")
                                && sent[7..] == *found.token,
                            "{:?} from {:?}", found.token, sent
                        );
                    }
                    CredentialKind::Cookie => {
                        // A pair named exactly `at`; the cookie crate trims
                        // names and values ("at =x").
                        let sent = text(&cookie).unwrap_or_default();
                        let pair = sent.split(';').filter_map(|pair| pair.split_once('=')).any(
                            |(name, value)| name.trim() == "at" && value.trim() == found.token,
                        );
                        prop_assert!(pair, "{:?} from {:?}", found.token, sent);
                    }
                    other => prop_assert!(false, "no such source here: {:?}", other),
                }
            }
        }

        #[test]
        fn valid_bearer_tokens_round_trip(token in "[A-Za-z0-9._~+/-]{1,100}={0,2}") {
            let p = parts(|b| b.header("authorization", format!("Bearer {token}")));
            let found = Credentials::bearer().extract(&p).unwrap().unwrap();
            prop_assert_eq!(found.token, token);
        }

        #[test]
        fn query_tokens_round_trip_among_other_parameters(
            token in "[A-Za-z0-9._~+/-]{1,100}={0,2}",
            before in proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,10}"), 0..3),
            after in proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,10}"), 0..3),
        ) {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in before.iter().filter(|(k, _)| k != "token") {
                query.append_pair(k, v);
            }
            query.append_pair("token", &token);
            for (k, v) in after.iter().filter(|(k, _)| k != "token") {
                query.append_pair(k, v);
            }
            let uri = format!("/ws?{}", query.finish());
            let p = parts(|b| b.uri(uri).header("upgrade", "websocket"));
            let found = all_sources().extract(&p).unwrap().unwrap();
            prop_assert_eq!(found.kind, CredentialKind::Query);
            prop_assert_eq!(found.token, token);
        }

        /// Whatever the query, a token found in it is token68 and was
        /// sent under the name `token`; without an upgrade it is found only
        /// when allowed everywhere.
        #[test]
        fn query_strings_never_panic(
            query in prop_oneof![3 => query_string(), 1 => "[a-z_=&%0-9A-Fa-f+.~-]{0,80}"],
            upgrade in any::<bool>(),
        ) {
            if let Ok(uri) = http::Uri::try_from(format!("/?{query}")) {
                let p = parts(|b| {
                    let b = b.uri(uri);
                    if upgrade { b.header("upgrade", "websocket") } else { b }
                });
                for (sources, everywhere) in [(all_sources(), false), (all_sources().allow_query_everywhere(), true)] {
                    if let Ok(Some(found)) = sources.extract(&p) {
                        prop_assert_eq!(found.kind, CredentialKind::Query);
                        prop_assert!(upgrade || everywhere, "{}", query);
                        prop_assert!(is_token68(found.token.as_bytes()), "{:?}", found.token);
                        let sent = form_urlencoded::parse(query.as_bytes())
                            .any(|(name, value)| name == "token" && value == found.token);
                        prop_assert!(sent, "{} from {}", found.token, query);
                    }
                }
            }
        }

        #[test]
        fn cookie_tokens_round_trip_among_non_ascii_neighbours(
            token in "[A-Za-z0-9._~+/-]{1,100}={0,2}",
            others in proptest::collection::vec(
                ("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..12)),
                0..6,
            ),
            position in 0usize..7,
        ) {
            // Neighbours with any bytes a header value may carry (no
            // controls, no `;` that would split them), ours among them.
            let mut pairs: Vec<Vec<u8>> = others
                .iter()
                .filter(|(name, _)| name != "at")
                .map(|(name, value)| {
                    let value = value.iter().copied().filter(|b| *b >= 0x20 && *b != 0x7f && *b != b';');
                    name.bytes().chain([b'=']).chain(value).collect()
                })
                .collect();
            pairs.insert(position.min(pairs.len()), format!("at={token}").into_bytes());
            let line = pairs.join(&b"; "[..]);
            let p = parts(|b| b.header("cookie", HeaderValue::from_bytes(&line).unwrap()));
            let found = all_sources().extract(&p).unwrap().unwrap();
            prop_assert_eq!(found.kind, CredentialKind::Cookie);
            prop_assert_eq!(found.token, token);
        }

        #[test]
        fn cookie_tokens_round_trip_among_other_cookies_and_split_lines(
            token in "[A-Za-z0-9._~+/-]{1,100}={0,2}",
            others in proptest::collection::vec(("[a-z]{1,8}", "[A-Za-z0-9]{0,10}"), 0..6),
            position in 0usize..7,
            lines in 1usize..4,
        ) {
            // Other cookies, ours at `position`, spread over `lines` Cookie
            // header lines as HTTP/2 may send them (RFC 9113 §8.2.3).
            let mut pairs: Vec<String> = others
                .iter()
                .filter(|(name, _)| name != "at")
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            pairs.insert(position.min(pairs.len()), format!("at={token}"));
            let per_line = pairs.len().div_ceil(lines);
            let header_lines: Vec<String> = pairs.chunks(per_line).map(|c| c.join("; ")).collect();
            let p = parts(|mut b| {
                for line in &header_lines {
                    b = b.header("cookie", line.as_str());
                }
                b
            });
            let found = all_sources().extract(&p).unwrap().unwrap();
            prop_assert_eq!(found.kind, CredentialKind::Cookie);
            prop_assert_eq!(found.token, token);
        }
    }
}
