//! Sliding expiry: a user who keeps working gets a renewed access token,
//! within an absolute lifetime counted from login.
//!
//! The rule is ASP.NET Core's `SlidingExpiration`: once less of a token's
//! life remains than has passed (past half-life), the next successful
//! response carries a fresh token. A fresh token costs nothing: a few integer
//! comparisons.
//!
//! # When a token is renewed
//!
//! - The request was authenticated, and the response is 2xx or 3xx (never
//!   401, 403, 404 or 5xx), and it does not itself log in, log out or
//!   revoke (the token endpoint and logout mark their responses with
//!   [`Renewal::Skip`]; so can any handler, see below).
//! - Less than the threshold remains before `exp`: by default less than has
//!   elapsed since `iat`; configurable with [`SlidingExpiry::renew_within`].
//! - The user still may have it: when a renewal is due, the user is loaded
//!   again, after the handler ran, and the renewal is skipped if they are
//!   gone, disabled, or their token version changed (a handler that logged
//!   them out everywhere). Renewals are rare — at most one per client per
//!   half-life — so this second lookup costs little in aggregate, and none
//!   on the requests that renew nothing.
//! - The renewed `exp` = min(now + the token's own window (`exp - iat`),
//!   min(`auth_time`, `iat`) + the absolute lifetime). Once a token reaches
//!   that cap, no renewal happens and it simply expires: the user logs in
//!   again.
//! - A handler can override the decision for its response by inserting
//!   [`Renewal::Force`] or [`Renewal::Skip`] into the response's extensions
//!   (with axum, return it beside the response: `(Renewal::Skip,
//!   StatusCode::NO_CONTENT)`). A forced renewal still respects the absolute
//!   lifetime and the reloaded user.
//!
//! The renewed token keeps `sub`, `auth_time`, the token version, `iss`,
//! `aud` and the app's claims, with new `iat`, `exp` and `jti`; its `scope`
//! is the token's scopes that the user still holds now
//! ([`AuthUser::allowed_scopes`](crate::AuthUser::allowed_scopes) of the
//! reloaded user), so a scope removed from a user is never renewed.
//!
//! # Delivery
//!
//! - A request authenticated by a bearer header (or any source but the
//!   session cookie) gets the renewed token in a response header (default
//!   `x-refreshed-token`).
//! - A request authenticated by the session cookie gets it as a
//!   `Set-Cookie` with the cookie's attributes, and **only** that: the
//!   cookie is `HttpOnly` so that page scripts never hold the token, and a
//!   copy in a header they can read would undo that. An app whose pages
//!   need the token too opts in with
//!   [`SlidingExpiry::header_for_cookie_sessions`], and gives up that
//!   protection: a script injected into the page (XSS) can then read the
//!   token and use it elsewhere until it expires.
//!
//! A response carrying a renewed token also carries
//! `Cache-Control: no-store`.
//!
//! A browser script reads the header only if CORS exposes it: with
//! tower-http, `CorsLayer::new().expose_headers([HeaderName::from_static("x-refreshed-token")])`.
//! Some clients lower-case header names; compare case-insensitively.
//!
//! Nothing is shared or locked: concurrent requests carrying the same aging
//! token each get their own valid renewed token.

use std::time::Duration;

use http::header::{CACHE_CONTROL, SET_COOKIE};
use http::{HeaderName, HeaderValue, Response};

use crate::config::ConfigError;
use crate::credentials::{CredentialKind, Credentials};
use crate::scope::Scopes;
use crate::token::{Claims, TokenCodec, new_jti};

/// The default name of the response header carrying a renewed token.
pub const DEFAULT_HEADER: &str = "x-refreshed-token";

/// A handler's override of the renewal decision, put into the response's
/// extensions — with axum, returned beside the response:
///
/// ```
/// # #[cfg(feature = "axum")] mod demo {
/// use axum::http::StatusCode;
/// use tower_auth::Renewal;
///
/// /// "Log out everywhere": this response revokes, so it renews nothing.
/// async fn logout_everywhere() -> (Renewal, StatusCode) {
///     // ... raise the user's token version ...
///     (Renewal::Skip, StatusCode::NO_CONTENT)
/// }
/// # }
/// ```
///
/// Without axum: `response.extensions_mut().insert(Renewal::Skip)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renew now (still capped at the absolute lifetime, and only for a user
    /// who still may have the token).
    Force,
    /// Do not renew on this response: it logs in, logs out or revokes.
    Skip,
}

/// The sliding-expiry policy; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use tower_auth::refresh::SlidingExpiry;
///
/// // Renew in the last 15 minutes; nobody stays signed in over 8 hours.
/// let policy = SlidingExpiry::new(Duration::from_secs(8 * 3600))
///     .renew_within(Duration::from_secs(15 * 60));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SlidingExpiry {
    absolute_lifetime: Duration,
    renew_within: Option<Duration>,
    header: Option<HeaderName>,
    cookie: bool,
    header_for_cookie_sessions: bool,
}

impl SlidingExpiry {
    /// Renews past half-life, never beyond `absolute_lifetime` after login;
    /// delivers by the `x-refreshed-token` header and the session cookie.
    pub fn new(absolute_lifetime: Duration) -> Self {
        SlidingExpiry {
            absolute_lifetime,
            renew_within: None,
            header: Some(HeaderName::from_static(DEFAULT_HEADER)),
            cookie: true,
            header_for_cookie_sessions: false,
        }
    }

    /// Renews once less than `threshold` remains, instead of past half-life.
    pub fn renew_within(mut self, threshold: Duration) -> Self {
        self.renew_within = Some(threshold);
        self
    }

    /// The response header for renewed tokens; `None` turns header delivery
    /// off.
    pub fn header(mut self, name: Option<HeaderName>) -> Self {
        self.header = name;
        self
    }

    /// Whether a request authenticated by the session cookie gets the
    /// renewed token as a `Set-Cookie`. Default: yes.
    pub fn cookie(mut self, deliver: bool) -> Self {
        self.cookie = deliver;
        self
    }

    /// Whether a request authenticated by the session cookie *also* gets the
    /// renewed token in the response header. Default: no — the session
    /// cookie is `HttpOnly` so that page scripts never hold the token, and
    /// this header is readable by them (when CORS exposes it, or on the same
    /// origin). Turn it on only for pages that must hand the token to
    /// something the cookie cannot reach, knowing that a script injected
    /// into the page (XSS) can then read a valid token and use it elsewhere
    /// until it expires. See [delivery](self#delivery).
    pub fn header_for_cookie_sessions(mut self, deliver: bool) -> Self {
        self.header_for_cookie_sessions = deliver;
        self
    }

    /// The name of the header carrying renewed tokens, if header delivery is
    /// on: what a CORS layer must expose.
    pub fn header_name(&self) -> Option<&HeaderName> {
        self.header.as_ref()
    }

    pub(crate) fn validate(
        &self,
        codec: &TokenCodec,
        credentials: &Credentials,
    ) -> Result<(), ConfigError> {
        let access = codec.access_lifetime();
        if self.absolute_lifetime < access {
            return Err(ConfigError::Lifetime(
                "the absolute lifetime must be at least the access-token lifetime",
            ));
        }
        if self
            .renew_within
            .is_some_and(|t| t.is_zero() || t >= access)
        {
            return Err(ConfigError::Lifetime(
                "the renewal threshold must be positive and shorter than the access-token lifetime",
            ));
        }
        let cookie_delivery = self.cookie && credentials.session_cookie_config().is_some();
        if self.header.is_none() && !cookie_delivery {
            return Err(ConfigError::Lifetime(
                "sliding expiry needs a header or a session cookie to deliver by",
            ));
        }
        Ok(())
    }

    /// The renewal due for `claims` at `now`, or `None` when none is due
    /// (or possible). Integer comparisons only: it runs on every
    /// authenticated response.
    pub(crate) fn renewal_due<X>(
        &self,
        claims: &Claims<X>,
        default_window: Duration,
        now: u64,
        decision: Option<Renewal>,
    ) -> Option<Due> {
        let issued = claims
            .iat
            .unwrap_or_else(|| claims.exp.saturating_sub(default_window.as_secs()));
        let window = claims.exp.saturating_sub(issued);
        let remaining = claims.exp.saturating_sub(now);
        let due = match self.renew_within {
            Some(threshold) => remaining < threshold.as_secs(),
            None => remaining < now.saturating_sub(issued),
        };
        match decision {
            Some(Renewal::Skip) => return None,
            Some(Renewal::Force) => {}
            None if !due => return None,
            None => {}
        }
        // The earlier of the two: a token never pushes its absolute lifetime
        // past its own issue (`check_claims` refuses `auth_time` > `iat`).
        let logged_in = claims
            .auth_time
            .map_or(issued, |auth_time| auth_time.min(issued));
        let cap = logged_in.saturating_add(self.absolute_lifetime.as_secs());
        let exp = now.saturating_add(window).min(cap);
        (exp > claims.exp && exp > now).then_some(Due { exp, logged_in })
    }

    /// [`renewal_due`](Self::renewal_due) for a response: `None` as well
    /// when the response is no success, or when the renewed token would
    /// have nowhere to go for this `credential`.
    pub(crate) fn due_for<B, X>(
        &self,
        claims: &Claims<X>,
        default_window: Duration,
        now: u64,
        credential: CredentialKind,
        credentials: &Credentials,
        response: &Response<B>,
    ) -> Option<Due> {
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return None;
        }
        if self.header_for(credential).is_none()
            && self.cookie_for(credential, credentials).is_none()
        {
            return None;
        }
        let decision = response.extensions().get::<Renewal>().copied();
        self.renewal_due(claims, default_window, now, decision)
    }

    /// The renewed claims: `claims` renewed as `due` says, issued `now`,
    /// with a new `jti` and `scope` (the scopes still in effect).
    pub(crate) fn renewed<X: Clone>(
        &self,
        claims: &Claims<X>,
        due: Due,
        now: u64,
        scope: Scopes,
    ) -> Claims<X> {
        let mut renewed = claims.clone();
        renewed.auth_time = Some(due.logged_in);
        renewed.iat = Some(now);
        renewed.exp = due.exp;
        renewed.nbf = None;
        renewed.jti = Some(new_jti());
        renewed.scope = scope;
        renewed
    }

    /// Puts the renewed `token` (expiring at `exp`) where this
    /// `credential`'s client finds it; see [delivery](self#delivery).
    pub(crate) fn deliver<B>(
        &self,
        credentials: &Credentials,
        credential: CredentialKind,
        token: &str,
        max_age: Duration,
        response: &mut Response<B>,
    ) {
        let headers = response.headers_mut();
        if let Some(name) = self.header_for(credential) {
            // A token we issued is base64url and dots: always a valid value.
            if let Ok(value) = HeaderValue::from_str(token) {
                headers.insert(name.clone(), value);
            }
        }
        if let Some(cookie) = self.cookie_for(credential, credentials) {
            headers.append(SET_COOKIE, cookie.set_cookie(token, max_age));
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }

    /// The header a renewal for `credential` goes into, if any.
    fn header_for(&self, credential: CredentialKind) -> Option<&HeaderName> {
        if credential == CredentialKind::Cookie && !self.header_for_cookie_sessions {
            return None;
        }
        self.header.as_ref()
    }

    /// The cookie a renewal for `credential` is set as, if any.
    fn cookie_for<'a>(
        &self,
        credential: CredentialKind,
        credentials: &'a Credentials,
    ) -> Option<&'a crate::credentials::SessionCookie> {
        if !self.cookie || credential != CredentialKind::Cookie {
            return None;
        }
        credentials.session_cookie_config()
    }
}

/// A renewal that is due: the renewed token's `exp`, and the login time the
/// absolute lifetime counts from (the renewed token's `auth_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) exp: u64,
    logged_in: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scopes;

    const HOUR: u64 = 3600;

    fn claims(iat: u64, exp: u64, auth_time: u64) -> Claims<()> {
        Claims {
            sub: "u".into(),
            exp,
            iat: Some(iat),
            nbf: None,
            iss: None,
            aud: None,
            jti: Some("old".into()),
            scope: Scopes::parse("me").unwrap(),
            auth_time: Some(auth_time),
            token_version: Some(2),
            sid: None,
            extra: (),
        }
    }

    fn policy() -> SlidingExpiry {
        SlidingExpiry::new(Duration::from_secs(8 * HOUR))
    }

    const WINDOW: Duration = Duration::from_secs(HOUR);

    impl SlidingExpiry {
        /// The renewed claims, keeping the token's scopes.
        fn renew(&self, c: &Claims<()>, now: u64, decision: Option<Renewal>) -> Option<Claims<()>> {
            let due = self.renewal_due(c, WINDOW, now, decision)?;
            Some(self.renewed(c, due, now, c.scope.clone()))
        }
    }

    #[test]
    fn fresh_tokens_are_not_renewed() {
        let c = claims(1000, 1000 + HOUR, 1000);
        assert!(policy().renew(&c, 1000 + HOUR / 2 - 1, None).is_none());
    }

    #[test]
    fn past_half_life_renews_with_the_same_window_and_kept_claims() {
        let c = claims(1000, 1000 + HOUR, 500);
        let now = 1000 + HOUR / 2 + 1;
        let r = policy().renew(&c, now, None).unwrap();
        assert_eq!(
            (r.iat, r.exp, r.auth_time),
            (Some(now), now + HOUR, Some(500))
        );
        assert_eq!(
            (r.sub.as_str(), r.token_version, &r.scope),
            ("u", Some(2), &c.scope)
        );
        assert_ne!(r.jti.as_deref(), Some("old"));
    }

    #[test]
    fn renewal_is_capped_then_stops_at_the_absolute_lifetime() {
        let login = 0;
        let cap = 8 * HOUR;
        let c = claims(cap - HOUR + 100, cap - 100, login);
        let r = policy().renew(&c, cap - 200, None).unwrap();
        assert_eq!(r.exp, cap);
        let at_cap = claims(cap - HOUR, cap, login);
        assert!(policy().renew(&at_cap, cap - 10, None).is_none());
        assert!(
            policy()
                .renew(&at_cap, cap - 10, Some(Renewal::Force))
                .is_none()
        );
    }

    #[test]
    fn the_cap_counts_from_the_earlier_of_auth_time_and_iat() {
        // `auth_time` after `iat` never passes verification; were it here,
        // the cap would still count from `iat`.
        let c = claims(1000, 1000 + HOUR, 50 * HOUR);
        let r = policy().renew(&c, 1000 + HOUR - 60, None).unwrap();
        assert_eq!(r.exp, 1000 + HOUR - 60 + HOUR);
        assert_eq!(r.auth_time, Some(1000));
        // A six-hour window renewed five hours in: capped at iat + 8 hours.
        let long = claims(0, 6 * HOUR, 50 * HOUR);
        let r = policy().renew(&long, 5 * HOUR, None).unwrap();
        assert_eq!((r.exp, r.auth_time), (8 * HOUR, Some(0)));
    }

    #[test]
    fn threshold_and_overrides() {
        let c = claims(1000, 1000 + HOUR, 1000);
        let within = policy().renew_within(Duration::from_secs(10 * 60));
        assert!(within.renew(&c, 1000 + HOUR - 11 * 60, None).is_none());
        assert!(within.renew(&c, 1000 + HOUR - 9 * 60, None).is_some());
        assert!(within.renew(&c, 1001, Some(Renewal::Force)).is_some());
        assert!(
            within
                .renew(&c, 1000 + HOUR - 60, Some(Renewal::Skip))
                .is_none()
        );
    }
}
