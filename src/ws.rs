//! Helpers for authenticated WebSockets: close codes, a future that resolves
//! when the connection's token expires, and subprotocol selection. No
//! WebSocket implementation: use axum's `ws`, tokio-tungstenite, or any other.
//!
//! # The life of an authenticated socket
//!
//! 1. The upgrade request is authenticated like any request, before the
//!    `101 Switching Protocols`: [`AuthLayer`](crate::AuthLayer) or an
//!    extractor answers 401/400 (credentials), 403 (Origin guard, missing
//!    permission) or 429 ([`ConnectionLimit`](crate::limit::ConnectionLimit))
//!    and the socket handler never runs.
//! 2. The token is checked once, at the handshake. The socket then lives at
//!    most until the token's `exp`: race [`TokenExpiry`] against the socket
//!    in the loop and close with [`TOKEN_EXPIRED`] (4001) when it fires.
//!    To close it sooner when the user is disabled or logs out everywhere
//!    (token version raised), also run
//!    [`Authenticator::recheck`](crate::Authenticator::recheck) on an
//!    interval and close with [`CloseReason::for_rejection`] when it fails.
//! 3. A client that receives 4001 gets a fresh token (log in again, or use
//!    a renewed one) and reconnects; 1008 ([`POLICY_VIOLATION`]) means it
//!    broke a rule (rate, permission) and should not simply retry.
//!
//! ```no_run
//! # async fn socket_loop(claims: &tower_auth::Claims, mut socket: tokio::sync::mpsc::Receiver<String>) {
//! use tower_auth::ws::{self, CloseReason};
//!
//! let mut expiry = ws::expires(claims);
//! loop {
//!     tokio::select! {
//!         () = &mut expiry => {
//!             let (code, reason) = (CloseReason::TokenExpired.code(), CloseReason::TokenExpired.reason());
//!             // send a Close frame with `code` and `reason`, then stop
//!             break;
//!         }
//!         message = socket.recv() => { /* ... */ }
//!     }
//! }
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderMap;
use http::header::SEC_WEBSOCKET_PROTOCOL;

use crate::credentials::list_elements;
use crate::error::AuthError;
use crate::token::{Claims, TokenRejection, unix_now};

/// Close code 4001: the token expired or was revoked; get a new one and
/// reconnect. (4000–4999 are for applications, RFC 6455 §7.4.2.)
pub const TOKEN_EXPIRED: u16 = 4001;

/// Close code 1008 (RFC 6455 §7.4.1, "policy violation"): the client broke a
/// rule — too many messages, writing without permission. Reconnecting will
/// not help by itself.
pub const POLICY_VIOLATION: u16 = 1008;

/// Why the server closes an authenticated socket: the code and a short
/// reason text for the Close frame (both fixed; the reason never holds a
/// token or request text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`TOKEN_EXPIRED`] (4001).
    TokenExpired,
    /// [`TOKEN_EXPIRED`] (4001): the token was revoked (user disabled,
    /// token version bumped).
    TokenRevoked,
    /// [`POLICY_VIOLATION`] (1008): over the message rate.
    RateLimited,
    /// [`POLICY_VIOLATION`] (1008): a message the user may not send.
    Forbidden,
}

impl CloseReason {
    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            Self::TokenExpired | Self::TokenRevoked => TOKEN_EXPIRED,
            Self::RateLimited | Self::Forbidden => POLICY_VIOLATION,
        }
    }

    /// The close for an identity that failed
    /// [`Authenticator::recheck`](crate::Authenticator::recheck):
    /// [`TokenExpired`](Self::TokenExpired) when the token expired,
    /// [`TokenRevoked`](Self::TokenRevoked) for any other refusal of the
    /// token or its user (disabled, deleted, token version raised). `None`
    /// for an error that says nothing about the identity (a failing store):
    /// keep the socket and check again later, or close it, as the app
    /// prefers.
    ///
    /// ```
    /// use tower_auth::ws::CloseReason;
    /// use tower_auth::{AuthError, TokenRejection};
    ///
    /// let revoked = AuthError::InvalidToken(TokenRejection::Revoked);
    /// let close = CloseReason::for_rejection(&revoked).unwrap();
    /// assert_eq!((close.code(), close.reason()), (4001, "token revoked"));
    /// ```
    pub fn for_rejection(error: &AuthError) -> Option<CloseReason> {
        match error {
            AuthError::InvalidToken(TokenRejection::Expired) => Some(Self::TokenExpired),
            AuthError::InvalidToken(_) => Some(Self::TokenRevoked),
            _ => None,
        }
    }

    /// The Close frame's reason text (well under the 123-byte limit).
    pub fn reason(self) -> &'static str {
        match self {
            Self::TokenExpired => "token expired",
            Self::TokenRevoked => "token revoked",
            Self::RateLimited => "message rate exceeded",
            Self::Forbidden => "not allowed",
        }
    }
}

/// A future that resolves when a token expires: at its `exp` (wall-clock
/// seconds, turned into a monotonic deadline when created; an `exp` already
/// past resolves at once). `Unpin`, so `&mut expiry` can sit in a
/// `tokio::select!` loop. Needs a tokio runtime with time enabled.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct TokenExpiry {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl TokenExpiry {
    /// Resolves `remaining` from now.
    pub fn after(remaining: Duration) -> Self {
        TokenExpiry {
            sleep: Box::pin(tokio::time::sleep(remaining)),
        }
    }

    /// The deadline.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.sleep.deadline()
    }
}

impl Future for TokenExpiry {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.sleep.as_mut().poll(cx)
    }
}

/// The [`TokenExpiry`] of a connection authenticated with `claims`.
pub fn expires<X>(claims: &Claims<X>) -> TokenExpiry {
    TokenExpiry::after(Duration::from_secs(claims.exp.saturating_sub(unix_now())))
}

/// The subprotocol to answer a WebSocket upgrade with: the first of
/// `supported` (in the server's order of preference) that the client
/// offered in `Sec-WebSocket-Protocol`. Only ever one of `supported`, so a
/// token offered as a subprotocol (see
/// [`Credentials::subprotocol`](crate::Credentials::subprotocol)) is never
/// echoed. Put the marker in `supported` for clients that authenticate that
/// way (some clients, tungstenite among them, fail a handshake that offered
/// protocols and got none back).
///
/// ```
/// use http::HeaderMap;
/// use tower_auth::ws::select_protocol;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("sec-websocket-protocol", "access_token, eyJhbGciOi.e30.c2ln".parse().unwrap());
/// assert_eq!(select_protocol(&headers, &["chat.v2", "access_token"]), Some("access_token"));
/// ```
pub fn select_protocol<'a>(headers: &HeaderMap, supported: &[&'a str]) -> Option<&'a str> {
    supported.iter().copied().find(|wanted| {
        list_elements(headers.get_all(SEC_WEBSOCKET_PROTOCOL)).any(|offered| offered == *wanted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scopes;

    fn claims(exp: u64) -> Claims<()> {
        Claims {
            sub: "u".into(),
            exp,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
            jti: None,
            scope: Scopes::none(),
            auth_time: None,
            token_version: None,
            extra: (),
        }
    }

    #[tokio::test]
    async fn expiry_deadline_follows_exp() {
        let start = tokio::time::Instant::now();
        let later = expires(&claims(unix_now() + 100));
        assert!(later.deadline() > start + Duration::from_secs(98));
        // An `exp` in the past resolves at once.
        expires(&claims(0)).await;
    }

    #[test]
    fn close_reasons() {
        let expired = AuthError::InvalidToken(TokenRejection::Expired);
        let revoked = AuthError::InvalidToken(TokenRejection::Revoked);
        let disabled = AuthError::InvalidToken(TokenRejection::InactiveUser);
        let store_down = AuthError::UserStore("db down".into());
        assert_eq!(
            CloseReason::for_rejection(&expired),
            Some(CloseReason::TokenExpired)
        );
        assert_eq!(
            CloseReason::for_rejection(&revoked),
            Some(CloseReason::TokenRevoked)
        );
        assert_eq!(
            CloseReason::for_rejection(&disabled),
            Some(CloseReason::TokenRevoked)
        );
        assert_eq!(CloseReason::for_rejection(&store_down), None);
        assert_eq!(CloseReason::TokenExpired.code(), 4001);
        assert_eq!(CloseReason::RateLimited.code(), 1008);
        assert!(CloseReason::TokenRevoked.reason().len() < 123);
    }

    #[test]
    fn only_supported_protocols_are_selected() {
        let mut headers = HeaderMap::new();
        headers.append(SEC_WEBSOCKET_PROTOCOL, "chat".parse().unwrap());
        headers.append(SEC_WEBSOCKET_PROTOCOL, "m , tok".parse().unwrap());
        assert_eq!(select_protocol(&headers, &["m", "chat"]), Some("m"));
        assert_eq!(select_protocol(&headers, &["tok2"]), None);
        assert_eq!(select_protocol(&HeaderMap::new(), &["m"]), None);
    }
}
