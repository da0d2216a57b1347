//! Helpers for authenticated WebSockets: close codes, a future that resolves
//! when the connection's token expires, and subprotocol selection. No
//! WebSocket implementation: use axum's `ws`, tokio-tungstenite, or any other.
//! The last section shows how to bound what one user's sockets may cost.
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
//!
//! # Bounding what a user's sockets cost
//!
//! A socket lets its user make the server read, hold and send data for as
//! long as it is open; the token says who they are, not how much they may
//! send. Keep these limits (the `websocket_rooms` example applies all of
//! them):
//!
//! 1. **Cap the frame and message size at the upgrade.** axum's defaults
//!    (64 MiB messages, 16 MiB frames) let one message cost the server
//!    64 MiB. With `WebSocketUpgrade::max_message_size` and
//!    `max_frame_size` set, tungstenite refuses a longer frame from its
//!    header, before reading its payload; close with [`MESSAGE_TOO_BIG`]
//!    (1009, [`CloseReason::MessageTooBig`]) and stop reading (the rest of
//!    the frame is still on the wire).
//! 2. **Charge every message to a byte budget per user**, keyed by `sub`
//!    and shared by all of the user's sockets: a
//!    [`RateLimit`](crate::limit::RateLimit) of bytes per period, charged
//!    with [`RateLimit::check_n`](crate::limit::RateLimit::check_n) for
//!    text, binary, ping and pong alike, plus a fixed cost per message so
//!    that a flood of empty pings is not free. Charge what the server will
//!    hold and send: a text re-encoded for others (JSON escapes a control
//!    character as six bytes) costs its encoded size. When the budget is
//!    spent, close with [`POLICY_VIOLATION`] (1008,
//!    [`CloseReason::for_budget`]).
//! 3. **Bound what is queued for a slow reader.** A broadcast channel keeps
//!    each message until its slowest receiver has read it: give it a small
//!    capacity, close a receiver that lags behind with [`TRY_AGAIN_LATER`]
//!    (1013, [`CloseReason::FellBehind`]), and put a timeout on each send, so
//!    that a client that stops reading cannot keep a socket task and its
//!    queue alive.
//! 4. **Cap sockets per user** with
//!    [`ConnectionLimit`](crate::limit::ConnectionLimit) (429 before the
//!    upgrade), and the server's connections and header read time (see the
//!    README's deployment section).
//!
//! An app running as several instances makes the budget and the cap
//! [shared](crate::limit#local-or-shared), so that a user's sockets on
//! every instance draw from one budget and count against one cap.
//!
//! ```no_run
//! use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
//! use axum::response::Response;
//! use tower_auth::limit::RateLimit;
//! use tower_auth::ws::CloseReason;
//!
//! const MAX_MESSAGE: usize = 64 * 1024;
//! /// What handling a message costs beyond its payload.
//! const MESSAGE_COST: usize = 1024;
//!
//! fn accept(upgrade: WebSocketUpgrade, sub: String, bytes: RateLimit) -> Response {
//!     upgrade
//!         .max_message_size(MAX_MESSAGE)
//!         .max_frame_size(MAX_MESSAGE)
//!         .on_upgrade(move |socket| serve(socket, sub, bytes))
//! }
//!
//! async fn serve(mut socket: WebSocket, sub: String, bytes: RateLimit) {
//!     let close = loop {
//!         let message = match socket.recv().await {
//!             Some(Ok(message)) => message,
//!             Some(Err(err)) => match err.into_inner().downcast_ref() {
//!                 // Over `max_message_size` / `max_frame_size`.
//!                 Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
//!                     break Some(CloseReason::MessageTooBig);
//!                 }
//!                 _ => break None,
//!             },
//!             None => break None,
//!         };
//!         let size = match &message {
//!             Message::Text(text) => text.len(),
//!             Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
//!             Message::Close(_) => break None,
//!         };
//!         if let Err(spent) = bytes.check_n(&sub, MESSAGE_COST + size).await {
//!             break Some(CloseReason::for_budget(spent));
//!         }
//!         // ... handle the message ...
//!     };
//!     let frame = close.map(|reason| CloseFrame { code: reason.code(), reason: reason.reason().into() });
//!     let _ = socket.send(Message::Close(frame)).await;
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderMap;
use http::header::SEC_WEBSOCKET_PROTOCOL;

use crate::credentials::list_elements;
use crate::error::AuthError;
use crate::limit::LimitExceeded;
use crate::token::{Claims, TokenRejection, unix_now};

/// Close code 4001: the token expired or was revoked; get a new one and
/// reconnect. (4000–4999 are for applications, RFC 6455 §7.4.2.)
pub const TOKEN_EXPIRED: u16 = 4001;

/// Close code 1008 (RFC 6455 §7.4.1, "policy violation"): the client broke a
/// rule — too many messages, writing without permission. Reconnecting will
/// not help by itself.
pub const POLICY_VIOLATION: u16 = 1008;

/// Close code 1009 (RFC 6455 §7.4.1, "message too big"): a frame or message
/// over the server's size cap. The server stops reading at once (it never
/// reads the oversize payload).
pub const MESSAGE_TOO_BIG: u16 = 1009;

/// Close code 1013 (IANA WebSocket registry, "try again later"): the server
/// dropped a client that fell behind (it did not read the messages sent to
/// it fast enough). Reconnecting, and reading faster, helps.
pub const TRY_AGAIN_LATER: u16 = 1013;

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
    /// [`POLICY_VIOLATION`] (1008): the user's byte budget is spent
    /// (see [`for_budget`](Self::for_budget)).
    ByteBudgetSpent,
    /// [`MESSAGE_TOO_BIG`] (1009): a frame or message over the size cap, or
    /// larger than the user's whole byte budget.
    MessageTooBig,
    /// [`TRY_AGAIN_LATER`] (1013): the client did not read what was sent to
    /// it fast enough, and the server stopped queueing for it.
    FellBehind,
    /// [`TRY_AGAIN_LATER`] (1013): a shared limit's store failed, so the
    /// message could not be counted and the socket is closed (fail closed;
    /// see [`LimitExceeded::StoreUnavailable`]). Reconnecting later helps.
    StoreUnavailable,
}

impl CloseReason {
    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            Self::TokenExpired | Self::TokenRevoked => TOKEN_EXPIRED,
            Self::RateLimited | Self::Forbidden | Self::ByteBudgetSpent => POLICY_VIOLATION,
            Self::MessageTooBig => MESSAGE_TOO_BIG,
            Self::FellBehind | Self::StoreUnavailable => TRY_AGAIN_LATER,
        }
    }

    /// The close for a message refused by a byte budget
    /// ([`RateLimit::check_n`](crate::limit::RateLimit::check_n)): a
    /// message larger than the whole budget is
    /// [`MessageTooBig`](Self::MessageTooBig) (1009), any other refusal
    /// [`ByteBudgetSpent`](Self::ByteBudgetSpent) (1008), except a shared
    /// budget whose store failed: [`StoreUnavailable`](Self::StoreUnavailable)
    /// (1013).
    ///
    /// ```
    /// use tower_auth::limit::RateLimit;
    /// use tower_auth::ws::CloseReason;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bytes = RateLimit::per_minute(1000).unwrap();
    /// let huge = bytes.check_n("alice", 5000).await.unwrap_err();
    /// assert_eq!(CloseReason::for_budget(huge).code(), 1009);
    /// bytes.check_n("alice", 1000).await.unwrap();
    /// let spent = bytes.check_n("alice", 1).await.unwrap_err();
    /// assert_eq!(CloseReason::for_budget(spent).code(), 1008);
    /// # }
    /// ```
    pub fn for_budget(refusal: LimitExceeded) -> CloseReason {
        match refusal {
            LimitExceeded::TooLarge { .. } => Self::MessageTooBig,
            LimitExceeded::StoreUnavailable => Self::StoreUnavailable,
            LimitExceeded::Rate { .. } | LimitExceeded::Connections => Self::ByteBudgetSpent,
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
            Self::ByteBudgetSpent => "byte budget spent",
            Self::MessageTooBig => "message too big",
            Self::FellBehind => "fell behind; reconnect",
            Self::StoreUnavailable => "limits unavailable; try again later",
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
            sid: None,
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
        assert_eq!(CloseReason::MessageTooBig.code(), 1009);
        assert_eq!(CloseReason::FellBehind.code(), 1013);
        assert_eq!(CloseReason::ByteBudgetSpent.code(), 1008);
        for reason in [
            CloseReason::ByteBudgetSpent,
            CloseReason::MessageTooBig,
            CloseReason::FellBehind,
        ] {
            assert!(reason.reason().len() < 123);
        }
    }

    #[test]
    fn budget_refusals_close_with_1009_or_1008() {
        let too_large = LimitExceeded::TooLarge { max: 10 };
        let spent = LimitExceeded::Rate {
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(
            CloseReason::for_budget(too_large),
            CloseReason::MessageTooBig
        );
        assert_eq!(CloseReason::for_budget(spent), CloseReason::ByteBudgetSpent);
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
