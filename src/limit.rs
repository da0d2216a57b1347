//! Per-user limits keyed by the authenticated subject (`sub`): a request or
//! message rate ([`RateLimit`], on [`governor`]'s GCRA), a byte budget (the
//! same [`RateLimit`] counted in bytes with [`RateLimit::check_n`]) and a cap
//! on concurrent connections ([`ConnectionLimit`], for WebSockets).
//!
//! Keys are the token's `sub`, never the token's bytes (ES256 signatures are
//! malleable, and a user holding several tokens is still one user), so a
//! user's limit is shared by all of their tokens, sockets and tabs.
//!
//! - On HTTP routes, [`Authenticator::limit_rate`](crate::Authenticator::limit_rate)
//!   makes a tower layer ([`RateLimitLayer`](crate::guard::RateLimitLayer)) to put inside an
//!   [`AuthLayer`](crate::AuthLayer): it answers 429 `too_many_requests`
//!   with `Retry-After` once a subject goes over the rate. Anonymous
//!   requests (no subject) pass: this is a per-user
//!   limit, not authentication; limit anonymous traffic by address with
//!   another layer (e.g. `tower_governor`).
//! - In a WebSocket handler, call [`ConnectionLimit::try_acquire`] before the
//!   upgrade (its error, turned into an `AuthError`, renders as 429 through
//!   [`Authenticator::error_response`](crate::Authenticator::error_response)),
//!   move the [`ConnectionPermit`] into the socket task, and the slot is free
//!   again when the task drops it; call [`RateLimit::check`] for each
//!   message and close with [`ws::POLICY_VIOLATION`](crate::ws::POLICY_VIOLATION)
//!   when it fails.
//! - To budget bytes (what a user may make the server read, hold and send),
//!   make a `RateLimit` of bytes per period and charge each message its size
//!   with [`RateLimit::check_n`]; the [`ws`](crate::ws) module shows the
//!   pattern for sockets.
//!
//! Both are cheap to clone and share their state between clones.
//!
//! ```
//! use std::time::Duration;
//! use tower_auth::limit::{ConnectionLimit, RateLimit};
//!
//! let messages = RateLimit::new(10, Duration::from_secs(60)).unwrap(); // 10 a minute
//! let sockets = ConnectionLimit::new(5).unwrap();
//! let permit = sockets.try_acquire("alice").unwrap();
//! assert!(messages.check("alice").is_ok());
//! assert_eq!(sockets.open("alice"), 1);
//! drop(permit);
//! assert_eq!(sockets.open("alice"), 0);
//!
//! let bytes = RateLimit::per_minute(1 << 20).unwrap(); // 1 MiB a minute
//! assert!(bytes.check_n("alice", 64 * 1024).is_ok());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::ConfigError;

/// Which limit was exceeded. Rendered as 429 `too_many_requests` by the
/// [`error`](crate::error) module (as `AuthError::LimitExceeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("limit exceeded: {}", self.reason_code())]
#[non_exhaustive]
pub enum LimitExceeded {
    /// A [`RateLimit`]: try again after `retry_after` (sent as
    /// `Retry-After`, in whole seconds rounded up).
    Rate {
        /// How long until the subject's next request would conform.
        retry_after: Duration,
    },
    /// A [`ConnectionLimit`]: close a connection first.
    Connections,
    /// [`RateLimit::check_n`] was asked for more units at once than the
    /// whole burst (`max`): the event can never conform, so waiting does
    /// not help. Rendered as 413 (a message or body too large), not 429.
    TooLarge {
        /// The most units one event may count (the limit's burst).
        max: u32,
    },
}

impl LimitExceeded {
    /// A stable, machine-readable code for logs and metrics.
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::Rate { .. } => "rate",
            Self::Connections => "connections",
            Self::TooLarge { .. } => "too_large",
        }
    }

    /// How long to wait, when waiting helps.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Self::Rate { retry_after } => Some(retry_after),
            Self::Connections | Self::TooLarge { .. } => None,
        }
    }
}

/// At most `max` events per `period` per subject, with bursts of up to `max`
/// (GCRA: one event's worth of allowance comes back every `period / max`).
/// "10 a minute" lets 10 messages through at once, then one every 6 s.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    max: u32,
    period: Duration,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("max", &self.max)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    /// `max` events per `period` per subject. A zero `max` or a period
    /// shorter than `max` nanoseconds is refused.
    pub fn new(max: u32, period: Duration) -> Result<Self, ConfigError> {
        let burst = NonZeroU32::new(max).ok_or(ConfigError::Limit(
            "a rate limit must allow at least one event",
        ))?;
        let quota = Quota::with_period(period / max)
            .ok_or(ConfigError::Limit("a rate limit's period is too short"))?
            .allow_burst(burst);
        Ok(RateLimit {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
            max,
            period,
        })
    }

    /// `max` events per minute per subject.
    pub fn per_minute(max: u32) -> Result<Self, ConfigError> {
        Self::new(max, Duration::from_secs(60))
    }

    /// Counts one event for `subject`; [`LimitExceeded::Rate`] (with the
    /// wait) when it is over the rate. A refused event is not counted.
    pub fn check(&self, subject: &str) -> Result<(), LimitExceeded> {
        match self.limiter.check_key(&subject.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                tracing::debug!(sub = ?subject, outcome = "rate_limited", "limit exceeded");
                Err(LimitExceeded::Rate { retry_after })
            }
        }
    }

    /// Counts `n` units at once for `subject`: the bytes of a message, for
    /// a limit made as a byte budget (`RateLimit::per_minute(1 << 20)` is
    /// 1 MiB a minute, in bursts of up to 1 MiB). As with [`check`](Self::check),
    /// a refused charge is not counted. Zero units always pass and count
    /// nothing (charge a fixed overhead per message if empty messages must
    /// cost something).
    ///
    /// - [`LimitExceeded::Rate`] when the subject's allowance is spent (with
    ///   the wait until `n` units would conform);
    /// - [`LimitExceeded::TooLarge`] when `n` is more than the whole burst:
    ///   no wait would let it through (governor's `InsufficientCapacity`).
    pub fn check_n(&self, subject: &str, n: usize) -> Result<(), LimitExceeded> {
        let too_large = LimitExceeded::TooLarge { max: self.max };
        let Ok(n) = u32::try_from(n) else {
            tracing::debug!(sub = ?subject, outcome = "too_large", "limit exceeded");
            return Err(too_large);
        };
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.limiter.check_key_n(&subject.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                tracing::debug!(sub = ?subject, outcome = "rate_limited", "limit exceeded");
                Err(LimitExceeded::Rate { retry_after })
            }
            Err(governor::InsufficientCapacity(_)) => {
                tracing::debug!(sub = ?subject, outcome = "too_large", "limit exceeded");
                Err(too_large)
            }
        }
    }

    /// Forgets subjects whose allowance is full again. The state grows with
    /// the number of distinct subjects seen; call this now and then (say,
    /// every few minutes from a background task) on long-running servers.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// The number of subjects currently tracked.
    pub fn tracked_subjects(&self) -> usize {
        self.limiter.len()
    }
}

/// A cap on concurrent connections (sockets, streams) per subject.
///
/// Not a rate, so not governor's job: a count per subject behind a mutex,
/// held only for an increment or a decrement, and a [`ConnectionPermit`]
/// that gives the slot back when dropped (also when the socket task panics
/// or is cancelled). Subjects with no open connection take no memory.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConnectionLimit {
    /// At most `max_per_subject` connections per subject at once (at least 1).
    pub fn new(max_per_subject: usize) -> Result<Self, ConfigError> {
        if max_per_subject == 0 {
            return Err(ConfigError::Limit(
                "a connection limit must allow at least one connection",
            ));
        }
        Ok(ConnectionLimit {
            max: max_per_subject,
            open: Arc::default(),
        })
    }

    /// Takes a slot for `subject`, or [`LimitExceeded::Connections`] (429)
    /// when all of theirs are taken. Hold the permit for as long as the
    /// connection is open.
    pub fn try_acquire(&self, subject: &str) -> Result<ConnectionPermit, LimitExceeded> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(subject.to_owned()).or_insert(0);
        if *count >= self.max {
            tracing::debug!(
                sub = ?subject,
                outcome = "connection_limit",
                "limit exceeded"
            );
            return Err(LimitExceeded::Connections);
        }
        *count += 1;
        Ok(ConnectionPermit {
            subject: subject.to_owned(),
            open: Arc::clone(&self.open),
        })
    }

    /// How many connections `subject` has open.
    pub fn open(&self, subject: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(subject).copied().unwrap_or(0)
    }
}

/// One open connection's slot in a [`ConnectionLimit`]; released on drop.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct ConnectionPermit {
    subject: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConnectionPermit {
    /// The subject holding the slot.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.subject) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_subject_and_refusals_are_not_counted() {
        let limit = RateLimit::new(3, Duration::from_secs(3600)).unwrap();
        for _ in 0..3 {
            limit.check("a").unwrap();
        }
        for _ in 0..5 {
            match limit.check("a") {
                Err(LimitExceeded::Rate { retry_after }) => {
                    assert!(retry_after > Duration::ZERO);
                }
                other => panic!("{other:?}"),
            }
        }
        limit.check("b").unwrap();
        assert_eq!(limit.tracked_subjects(), 2);
    }

    #[test]
    fn byte_budgets_count_n_units_at_once() {
        let bytes = RateLimit::new(1000, Duration::from_secs(3600)).unwrap();
        bytes.check_n("a", 600).unwrap();
        bytes.check_n("a", 400).unwrap();
        // Spent: even one more byte waits, and the refusal is not counted.
        for _ in 0..3 {
            match bytes.check_n("a", 1) {
                Err(LimitExceeded::Rate { retry_after }) => {
                    assert!(retry_after > Duration::ZERO);
                }
                other => panic!("{other:?}"),
            }
        }
        // Nothing to count always passes.
        bytes.check_n("a", 0).unwrap();
        // Another subject has its own budget.
        bytes.check_n("b", 1000).unwrap();
    }

    #[test]
    fn more_than_the_whole_burst_is_too_large_not_a_wait() {
        let bytes = RateLimit::new(1000, Duration::from_secs(60)).unwrap();
        for n in [1001, usize::try_from(u32::MAX).unwrap(), usize::MAX] {
            let refusal = bytes.check_n("a", n).unwrap_err();
            assert_eq!(refusal, LimitExceeded::TooLarge { max: 1000 });
            assert_eq!(refusal.retry_after(), None);
            assert_eq!(refusal.reason_code(), "too_large");
        }
        // The refusals cost nothing: the whole burst is still there.
        bytes.check_n("a", 1000).unwrap();
    }

    #[test]
    fn impossible_limits_are_refused() {
        assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(RateLimit::new(10, Duration::ZERO).is_err());
        assert!(ConnectionLimit::new(0).is_err());
    }

    #[test]
    fn connection_slots_come_back_on_drop() {
        let limit = ConnectionLimit::new(2).unwrap();
        let a = limit.try_acquire("u").unwrap();
        let b = limit.try_acquire("u").unwrap();
        assert!(matches!(
            limit.try_acquire("u"),
            Err(LimitExceeded::Connections)
        ));
        let other = limit.try_acquire("v").unwrap();
        drop(a);
        let c = limit.try_acquire("u").unwrap();
        drop((b, c, other));
        assert_eq!(limit.open("u"), 0);
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
