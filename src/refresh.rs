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
//!   401, 403, 404 or 5xx), and it does not itself log in or out (the token
//!   endpoint and logout mark their responses with [`Renewal::Skip`]).
//! - Less than the threshold remains before `exp`: by default less than has
//!   elapsed since `iat`; configurable with [`SlidingExpiry::renew_within`].
//! - The renewed `exp` = min(now + the token's own window (`exp - iat`),
//!   min(`auth_time`, `iat`) + the absolute lifetime). Once a token reaches
//!   that cap, no renewal happens and it simply expires: the user logs in
//!   again.
//! - A handler can override the decision for its response by inserting
//!   [`Renewal::Force`] or [`Renewal::Skip`] into the response's extensions
//!   (after reloading the user, say). A forced renewal still respects the
//!   absolute lifetime.
//!
//! The renewed token keeps `sub`, `scope`, `auth_time`, the token version,
//! `iss`, `aud` and the app's claims, with new `iat`, `exp` and `jti`.
//!
//! # Delivery
//!
//! In a response header (default `x-refreshed-token`), and — when the
//! request's token came from the session cookie — as a `Set-Cookie` with the
//! cookie's attributes. A response carrying a renewed token also carries
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
use crate::token::{Claims, TokenCodec, new_jti, unix_now};

/// The default name of the response header carrying a renewed token.
pub const DEFAULT_HEADER: &str = "x-refreshed-token";

/// A handler's override of the renewal decision, put into the response's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renew now (still capped at the absolute lifetime).
    Force,
    /// Do not renew on this response (login, logout, ...).
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

    /// The renewed claims for `claims` at `now`, or `None` when no renewal is
    /// due (or possible).
    pub(crate) fn renewed<X: Clone>(
        &self,
        claims: &Claims<X>,
        default_window: Duration,
        now: u64,
        decision: Option<Renewal>,
    ) -> Option<Claims<X>> {
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
        if exp <= claims.exp || exp <= now {
            return None;
        }
        let mut renewed = claims.clone();
        renewed.iat = Some(now);
        renewed.exp = exp;
        renewed.nbf = None;
        renewed.jti = Some(new_jti());
        renewed.auth_time = Some(logged_in);
        Some(renewed)
    }

    /// Adds a renewed token to `response` when one is due; see the
    /// [module docs](self).
    pub(crate) fn apply<B, X: serde::Serialize + Clone>(
        &self,
        codec: &TokenCodec,
        credentials: &Credentials,
        claims: &Claims<X>,
        credential: CredentialKind,
        response: &mut Response<B>,
    ) {
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return;
        }
        let decision = response.extensions().get::<Renewal>().copied();
        let now = unix_now();
        let Some(renewed) = self.renewed(claims, codec.access_lifetime(), now, decision) else {
            return;
        };
        let token = match codec.issue(&renewed) {
            Ok(token) => token,
            Err(err) => {
                tracing::error!(error = %err, "renewing a token failed");
                return;
            }
        };
        let headers = response.headers_mut();
        if let Some(name) = &self.header {
            // A token we issued is base64url and dots: always a valid value.
            if let Ok(value) = HeaderValue::from_str(&token) {
                headers.insert(name.clone(), value);
            }
        }
        if self.cookie
            && credential == CredentialKind::Cookie
            && let Some(cookie) = credentials.session_cookie_config()
        {
            let max_age = Duration::from_secs(renewed.exp.saturating_sub(now));
            headers.append(SET_COOKIE, cookie.set_cookie(&token, max_age));
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        tracing::debug!(sub = ?renewed.sub, exp = renewed.exp, "token renewed");
    }
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
            extra: (),
        }
    }

    fn policy() -> SlidingExpiry {
        SlidingExpiry::new(Duration::from_secs(8 * HOUR))
    }

    const WINDOW: Duration = Duration::from_secs(HOUR);

    #[test]
    fn fresh_tokens_are_not_renewed() {
        let c = claims(1000, 1000 + HOUR, 1000);
        assert!(
            policy()
                .renewed(&c, WINDOW, 1000 + HOUR / 2 - 1, None)
                .is_none()
        );
    }

    #[test]
    fn past_half_life_renews_with_the_same_window_and_kept_claims() {
        let c = claims(1000, 1000 + HOUR, 500);
        let now = 1000 + HOUR / 2 + 1;
        let r = policy().renewed(&c, WINDOW, now, None).unwrap();
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
        let r = policy().renewed(&c, WINDOW, cap - 200, None).unwrap();
        assert_eq!(r.exp, cap);
        let at_cap = claims(cap - HOUR, cap, login);
        assert!(policy().renewed(&at_cap, WINDOW, cap - 10, None).is_none());
        assert!(
            policy()
                .renewed(&at_cap, WINDOW, cap - 10, Some(Renewal::Force))
                .is_none()
        );
    }

    #[test]
    fn the_cap_counts_from_the_earlier_of_auth_time_and_iat() {
        // `auth_time` after `iat` never passes verification; were it here,
        // the cap would still count from `iat`.
        let c = claims(1000, 1000 + HOUR, 50 * HOUR);
        let r = policy()
            .renewed(&c, WINDOW, 1000 + HOUR - 60, None)
            .unwrap();
        assert_eq!(r.exp, 1000 + HOUR - 60 + HOUR);
        assert_eq!(r.auth_time, Some(1000));
        // A six-hour window renewed five hours in: capped at iat + 8 hours.
        let long = claims(0, 6 * HOUR, 50 * HOUR);
        let r = policy().renewed(&long, WINDOW, 5 * HOUR, None).unwrap();
        assert_eq!((r.exp, r.auth_time), (8 * HOUR, Some(0)));
    }

    #[test]
    fn threshold_and_overrides() {
        let c = claims(1000, 1000 + HOUR, 1000);
        let within = policy().renew_within(Duration::from_secs(10 * 60));
        assert!(
            within
                .renewed(&c, WINDOW, 1000 + HOUR - 11 * 60, None)
                .is_none()
        );
        assert!(
            within
                .renewed(&c, WINDOW, 1000 + HOUR - 9 * 60, None)
                .is_some()
        );
        assert!(
            within
                .renewed(&c, WINDOW, 1001, Some(Renewal::Force))
                .is_some()
        );
        assert!(
            within
                .renewed(&c, WINDOW, 1000 + HOUR - 60, Some(Renewal::Skip))
                .is_none()
        );
    }
}
