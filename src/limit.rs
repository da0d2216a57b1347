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
//! - In a WebSocket handler, await [`ConnectionLimit::try_acquire`] before the
//!   upgrade (its error, turned into an `AuthError`, renders as 429 through
//!   [`Authenticator::error_response`](crate::Authenticator::error_response)),
//!   move the [`ConnectionPermit`] into the socket task, and the slot is free
//!   again when the task drops it; await [`RateLimit::check`] for each
//!   message and close with [`ws::POLICY_VIOLATION`](crate::ws::POLICY_VIOLATION)
//!   when it fails.
//! - To budget bytes (what a user may make the server read, hold and send),
//!   make a `RateLimit` of bytes per period and charge each message its size
//!   with [`RateLimit::check_n`]; the [`ws`](crate::ws) module shows the
//!   pattern for sockets.
//!
//! Both are cheap to clone and share their state between clones.
//!
//! # Local or shared
//!
//! By default a limit lives in this process: governor's GCRA and a mutex,
//! no network, no waiting (the `check`s and `try_acquire` are `async` but
//! finish at once). An app that runs as several instances behind a load
//! balancer makes each limit [`shared`](RateLimit::shared) through a
//! store of [`SharedCounters`] (`tower_auth::redis::RedisStore`, feature
//! `redis`), so that a user's rate, byte budget and sockets are counted
//! once for all instances rather than once per instance:
//!
//! - a shared [`RateLimit`] is the same GCRA, kept atomic in the store (on
//!   Redis, a Lua script on the server's clock), one round trip per check;
//! - a shared [`ConnectionLimit`] holds a lease per connection (default TTL
//!   [`DEFAULT_LEASE_TTL`], [configurable](ConnectionLimit::lease)), renewed
//!   by a background task every third of its TTL and released when the
//!   [`ConnectionPermit`] is dropped. An instance that dies (killed, cut
//!   off) stops renewing, and its connections' slots come back when their
//!   leases expire: within one TTL.
//!
//! Each shared limit has a name, which goes into its keys (`rate:NAME:SUB`,
//! `conn:NAME:SUB` under the store's prefix), so two limits never share a
//! counter; every instance must give a limit the same name and the same
//! rate.
//!
//! **A failing store fails closed.** When the store cannot be reached (or
//! does not answer in time), a shared limit refuses: [`LimitExceeded::StoreUnavailable`],
//! rendered as 503 `temporarily_unavailable` with `Retry-After: 1` (reason
//! code `limit_store_unavailable`), and an error is logged. Letting traffic
//! through unlimited while the store is away would hand every client of
//! the outage the limits the store exists to keep; an app that prefers
//! availability uses a local limit instead. A connection already open
//! keeps its slot through an outage (its lease renewal is retried and
//! logged); if the lease lapsed meanwhile and the slots were taken by
//! then, the renewal says so in a warning but the connection is not closed
//! (a permit cannot close a socket).
//!
//! ```
//! use std::time::Duration;
//! use tower_auth::limit::{ConnectionLimit, RateLimit};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let messages = RateLimit::new(10, Duration::from_secs(60)).unwrap(); // 10 a minute
//! let sockets = ConnectionLimit::new(5).unwrap();
//! let permit = sockets.try_acquire("alice").await.unwrap();
//! assert!(messages.check("alice").await.is_ok());
//! assert_eq!(sockets.open("alice"), 1);
//! drop(permit);
//! assert_eq!(sockets.open("alice"), 0);
//!
//! let bytes = RateLimit::per_minute(1 << 20).unwrap(); // 1 MiB a minute
//! assert!(bytes.check_n("alice", 64 * 1024).await.is_ok());
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::oneshot;

use crate::config::ConfigError;
use crate::counters::{Charge, DynSharedCounters, Gcra, GcraOutcome, SharedCounters};

/// Which limit was exceeded. Rendered by the [`error`](crate::error) module
/// (as `AuthError::LimitExceeded`): 429 `too_many_requests`, except
/// [`TooLarge`](Self::TooLarge) (413) and
/// [`StoreUnavailable`](Self::StoreUnavailable) (503).
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
    /// A [shared](self#local-or-shared) limit could not reach its store:
    /// refused, fail closed. Rendered as 503 `temporarily_unavailable`
    /// with `Retry-After: 1`; reason code `limit_store_unavailable`. The
    /// store's error is logged where it happened, never sent.
    StoreUnavailable,
}

/// The wait a client is told when a shared limit's store failed.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl LimitExceeded {
    /// A stable, machine-readable code for logs and metrics.
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::Rate { .. } => "rate",
            Self::Connections => "connections",
            Self::TooLarge { .. } => "too_large",
            Self::StoreUnavailable => "limit_store_unavailable",
        }
    }

    /// How long to wait, when waiting helps.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Self::Rate { retry_after } => Some(retry_after),
            Self::StoreUnavailable => Some(STORE_RETRY_AFTER),
            Self::Connections | Self::TooLarge { .. } => None,
        }
    }
}

/// Checks a shared limit's name: 1 to 64 ASCII letters, digits, `-`, `_`
/// or `.`, so that it cannot run into the subject that follows it in a key.
fn check_name(name: &str) -> Result<Arc<str>, ConfigError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(name.into())
    } else {
        Err(ConfigError::Limit(
            "a shared limit's name must be 1 to 64 ASCII letters, digits, '-', '_' or '.'",
        ))
    }
}

/// Logs a shared store's failure (its error, never a URL) and refuses.
fn store_failed(
    what: &'static str,
    name: &str,
    subject: &str,
    error: &crate::counters::StoreError,
) -> LimitExceeded {
    tracing::error!(
        limit = %name,
        sub = ?subject,
        error = %error.0,
        outcome = "limit_store_unavailable",
        "{what}: the shared store failed; refusing (fail closed)"
    );
    LimitExceeded::StoreUnavailable
}

/// At most `max` events per `period` per subject, with bursts of up to `max`
/// (GCRA: one event's worth of allowance comes back every `period / max`).
/// "10 a minute" lets 10 messages through at once, then one every 6 s.
///
/// Local (in this process, on governor) unless made
/// [`shared`](Self::shared); see [local or shared](self#local-or-shared).
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    shared: Option<SharedRate>,
    max: u32,
    period: Duration,
}

/// Where a shared [`RateLimit`] counts.
#[derive(Clone)]
struct SharedRate {
    store: Arc<dyn DynSharedCounters>,
    name: Arc<str>,
    rate: Gcra,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("max", &self.max)
            .field("period", &self.period)
            .field("shared", &self.shared.as_ref().map(|shared| &shared.name))
            .finish_non_exhaustive()
    }
}

/// The smallest emission interval a shared rate may have: the shared GCRA
/// counts time in microseconds (see `tower_auth::redis`).
const SHARED_MIN_INTERVAL: Duration = Duration::from_micros(1);

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
            shared: None,
            max,
            period,
        })
    }

    /// `max` events per minute per subject.
    pub fn per_minute(max: u32) -> Result<Self, ConfigError> {
        Self::new(max, Duration::from_secs(60))
    }

    /// The same limit, counted in `store` for every instance of the app
    /// under `name` (1 to 64 ASCII letters, digits, `-`, `_`, `.`; each
    /// limit its own), instead of in this process; see
    /// [local or shared](self#local-or-shared). A shared rate counts time
    /// in microseconds, so `period / max` must be at least 1 µs (a byte
    /// budget of up to 60 million bytes a minute).
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_auth::limit::RateLimit;
    /// use tower_auth::redis::RedisStore;
    ///
    /// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// let messages = RateLimit::per_minute(60)?.shared(store, "messages")?;
    /// # Ok(()) }
    /// ```
    pub fn shared(mut self, store: impl SharedCounters, name: &str) -> Result<Self, ConfigError> {
        let rate = Gcra::per_period(self.max, self.period).ok_or(ConfigError::Limit(
            "a rate limit must allow at least one event",
        ))?;
        if rate.emission_interval < SHARED_MIN_INTERVAL {
            return Err(ConfigError::Limit(
                "a shared rate limit's period / max must be at least one microsecond",
            ));
        }
        self.shared = Some(SharedRate {
            store: Arc::new(store),
            name: check_name(name)?,
            rate,
        });
        Ok(self)
    }

    /// Whether this limit is counted in a shared store.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Counts one event for `subject`; [`LimitExceeded::Rate`] (with the
    /// wait) when it is over the rate. A refused event is not counted.
    /// A local limit answers at once; a shared one after one round trip to
    /// its store, and [`LimitExceeded::StoreUnavailable`] when the store
    /// fails.
    pub async fn check(&self, subject: &str) -> Result<(), LimitExceeded> {
        self.check_n(subject, 1).await
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
    ///   no wait would let it through (governor's `InsufficientCapacity`);
    /// - [`LimitExceeded::StoreUnavailable`] when a shared limit's store
    ///   fails (fail closed).
    pub async fn check_n(&self, subject: &str, n: usize) -> Result<(), LimitExceeded> {
        match self.units(subject, n)? {
            None => Ok(()),
            Some(n) => match &self.shared {
                None => self.check_local(subject, n),
                Some(shared) => shared.charge(subject, n, self.max).await,
            },
        }
    }

    /// The verdict when it needs no store (a local limit, or `n` zero or
    /// over the burst); `None` when a shared store must be asked (then
    /// [`check_shared`](Self::check_shared)). For the rate guard, which
    /// answers local limits without a future of its own.
    pub(crate) fn check_now(&self, subject: &str, n: usize) -> Option<Result<(), LimitExceeded>> {
        match self.units(subject, n) {
            Err(refusal) => Some(Err(refusal)),
            Ok(None) => Some(Ok(())),
            Ok(Some(n)) => match &self.shared {
                None => Some(self.check_local(subject, n)),
                Some(_) => None,
            },
        }
    }

    /// The shared check of `n` units, as a future that owns what it needs.
    pub(crate) fn check_shared(
        &self,
        subject: String,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<(), LimitExceeded>> + Send + 'static>> {
        let limit = self.clone();
        Box::pin(async move { limit.check_n(&subject, n).await })
    }

    /// `n` as units to charge: `None` for zero, [`LimitExceeded::TooLarge`]
    /// past the burst.
    fn units(&self, subject: &str, n: usize) -> Result<Option<NonZeroU32>, LimitExceeded> {
        match u32::try_from(n) {
            Ok(n) if n <= self.max => Ok(NonZeroU32::new(n)),
            _ => {
                tracing::debug!(sub = ?subject, outcome = "too_large", "limit exceeded");
                Err(LimitExceeded::TooLarge { max: self.max })
            }
        }
    }

    fn check_local(&self, subject: &str, n: NonZeroU32) -> Result<(), LimitExceeded> {
        match self.limiter.check_key_n(&subject.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                tracing::debug!(sub = ?subject, outcome = "rate_limited", "limit exceeded");
                Err(LimitExceeded::Rate { retry_after })
            }
            Err(governor::InsufficientCapacity(_)) => {
                tracing::debug!(sub = ?subject, outcome = "too_large", "limit exceeded");
                Err(LimitExceeded::TooLarge { max: self.max })
            }
        }
    }

    /// Forgets subjects whose allowance is full again. The state grows with
    /// the number of distinct subjects seen; call this now and then (say,
    /// every few minutes from a background task) on long-running servers.
    /// A shared limit keeps nothing here (its keys expire by themselves).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// The number of subjects currently tracked in this process (always
    /// 0 for a shared limit).
    pub fn tracked_subjects(&self) -> usize {
        self.limiter.len()
    }
}

impl SharedRate {
    async fn charge(&self, subject: &str, n: NonZeroU32, max: u32) -> Result<(), LimitExceeded> {
        let key = format!("rate:{}:{subject}", self.name);
        match self.store.charge(&key, self.rate, n, Charge::Spend).await {
            Ok(GcraOutcome::Allowed) => Ok(()),
            Ok(GcraOutcome::Wait(retry_after)) => {
                tracing::debug!(sub = ?subject, outcome = "rate_limited", "limit exceeded");
                Err(LimitExceeded::Rate { retry_after })
            }
            Ok(GcraOutcome::TooLarge) => Err(LimitExceeded::TooLarge { max }),
            Err(error) => Err(store_failed("rate limit", &self.name, subject, &error)),
        }
    }
}

/// The lease a shared [`ConnectionLimit`] takes per connection unless told
/// otherwise ([`ConnectionLimit::lease`]): a dead instance's connections
/// free their slots within this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// The shortest lease a shared [`ConnectionLimit`] accepts: it is renewed
/// every third of its TTL, and a renewal takes a round trip.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// A cap on concurrent connections (sockets, streams) per subject.
///
/// Not a rate, so not governor's job. Local: a count per subject behind a
/// mutex, held only for an increment or a decrement, and a
/// [`ConnectionPermit`] that gives the slot back when dropped (also when
/// the socket task panics or is cancelled). Subjects with no open
/// connection take no memory. [Shared](Self::shared): a lease per
/// connection in the store (see [local or shared](self#local-or-shared)).
#[derive(Clone)]
pub struct ConnectionLimit {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
    shared: Option<SharedLeases>,
    lease_ttl: Duration,
}

/// Where a shared [`ConnectionLimit`] holds its leases.
#[derive(Clone)]
struct SharedLeases {
    store: Arc<dyn DynSharedCounters>,
    name: Arc<str>,
}

impl fmt::Debug for ConnectionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionLimit")
            .field("max", &self.max)
            .field("shared", &self.shared.as_ref().map(|shared| &shared.name))
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
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
            shared: None,
            lease_ttl: DEFAULT_LEASE_TTL,
        })
    }

    /// The same cap, held as leases in `store` for every instance of the
    /// app under `name` (1 to 64 ASCII letters, digits, `-`, `_`, `.`),
    /// instead of in this process; see [local or shared](self#local-or-shared).
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_auth::limit::ConnectionLimit;
    /// use tower_auth::redis::RedisStore;
    ///
    /// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// let sockets = ConnectionLimit::new(5)?
    ///     .shared(store, "sockets")?
    ///     .lease(Duration::from_secs(10))?;
    /// # Ok(()) }
    /// ```
    pub fn shared(mut self, store: impl SharedCounters, name: &str) -> Result<Self, ConfigError> {
        self.shared = Some(SharedLeases {
            store: Arc::new(store),
            name: check_name(name)?,
        });
        Ok(self)
    }

    /// How long a shared connection's lease lives without renewal (default
    /// [`DEFAULT_LEASE_TTL`], at least [`MIN_LEASE_TTL`]): the longest a
    /// dead instance's connections keep their slots. Shorter frees slots
    /// sooner and costs more renewals (one round trip per connection every
    /// third of it). No effect on a local limit.
    pub fn lease(mut self, ttl: Duration) -> Result<Self, ConfigError> {
        if ttl < MIN_LEASE_TTL {
            return Err(ConfigError::Limit(
                "a connection lease must live at least 300 ms",
            ));
        }
        self.lease_ttl = ttl;
        Ok(self)
    }

    /// Takes a slot for `subject`, or [`LimitExceeded::Connections`] (429)
    /// when all of theirs are taken ([`LimitExceeded::StoreUnavailable`],
    /// 503, when a shared limit's store fails). Hold the permit for as long
    /// as the connection is open.
    pub async fn try_acquire(&self, subject: &str) -> Result<ConnectionPermit, LimitExceeded> {
        let lease = match &self.shared {
            None => None,
            Some(shared) => Some(shared.acquire(subject, self.max, self.lease_ttl).await?),
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(subject.to_owned()).or_insert(0);
        if lease.is_none() && *count >= self.max {
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
            _lease: lease,
        })
    }

    /// How many connections `subject` has open on this instance (a shared
    /// limit counts the others' too, but this is only this process's).
    pub fn open(&self, subject: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(subject).copied().unwrap_or(0)
    }
}

impl SharedLeases {
    /// Takes a lease and starts the task that renews it; the sender stops
    /// the task (which then releases the lease) when it is dropped.
    async fn acquire(
        &self,
        subject: &str,
        max: usize,
        ttl: Duration,
    ) -> Result<oneshot::Sender<()>, LimitExceeded> {
        let key = format!("conn:{}:{subject}", self.name);
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        match self.store.acquire_lease(&key, &lease, max, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(sub = ?subject, outcome = "connection_limit", "limit exceeded");
                return Err(LimitExceeded::Connections);
            }
            Err(error) => {
                return Err(store_failed(
                    "connection limit",
                    &self.name,
                    subject,
                    &error,
                ));
            }
        }
        let (stop, stopped) = oneshot::channel();
        let held = HeldLease {
            store: Arc::clone(&self.store),
            name: Arc::clone(&self.name),
            key,
            lease,
            max,
            ttl,
        };
        tokio::spawn(held.keep(stopped));
        Ok(stop)
    }
}

/// A lease held by a permit, renewed by its own task.
struct HeldLease {
    store: Arc<dyn DynSharedCounters>,
    name: Arc<str>,
    key: String,
    lease: String,
    max: u32,
    ttl: Duration,
}

impl HeldLease {
    /// Renews the lease every third of its TTL until `stopped` (the permit
    /// was dropped), then releases it. If the runtime shuts down first, the
    /// lease expires by itself.
    async fn keep(self, mut stopped: oneshot::Receiver<()>) {
        let every = self.ttl / 3;
        while tokio::time::timeout(every, &mut stopped).await.is_err() {
            match self
                .store
                .renew_lease(&self.key, &self.lease, self.max, self.ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    limit = %self.name,
                    outcome = "lease_lost",
                    "a connection's lease lapsed and its slots were taken meanwhile; \
                     the connection stays open over the cap"
                ),
                Err(error) => tracing::warn!(
                    limit = %self.name,
                    error = %error.0,
                    outcome = "lease_renewal_failed",
                    "renewing a connection's lease failed; retrying"
                ),
            }
        }
        if let Err(error) = self.store.release_lease(&self.key, &self.lease).await {
            tracing::warn!(
                limit = %self.name,
                error = %error.0,
                "releasing a connection's lease failed; it expires by itself"
            );
        }
    }
}

/// One open connection's slot in a [`ConnectionLimit`]; released on drop
/// (a shared limit's lease by its renewal task, at once).
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct ConnectionPermit {
    subject: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
    /// A shared limit's lease: dropping it stops the renewals and releases
    /// the lease.
    _lease: Option<oneshot::Sender<()>>,
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

    #[tokio::test]
    async fn rates_are_per_subject_and_refusals_are_not_counted() {
        let limit = RateLimit::new(3, Duration::from_secs(3600)).unwrap();
        for _ in 0..3 {
            limit.check("a").await.unwrap();
        }
        for _ in 0..5 {
            match limit.check("a").await {
                Err(LimitExceeded::Rate { retry_after }) => {
                    assert!(retry_after > Duration::ZERO);
                }
                other => panic!("{other:?}"),
            }
        }
        limit.check("b").await.unwrap();
        assert_eq!(limit.tracked_subjects(), 2);
    }

    #[tokio::test]
    async fn byte_budgets_count_n_units_at_once() {
        let bytes = RateLimit::new(1000, Duration::from_secs(3600)).unwrap();
        bytes.check_n("a", 600).await.unwrap();
        bytes.check_n("a", 400).await.unwrap();
        // Spent: even one more byte waits, and the refusal is not counted.
        for _ in 0..3 {
            match bytes.check_n("a", 1).await {
                Err(LimitExceeded::Rate { retry_after }) => {
                    assert!(retry_after > Duration::ZERO);
                }
                other => panic!("{other:?}"),
            }
        }
        // Nothing to count always passes.
        bytes.check_n("a", 0).await.unwrap();
        // Another subject has its own budget.
        bytes.check_n("b", 1000).await.unwrap();
    }

    #[tokio::test]
    async fn more_than_the_whole_burst_is_too_large_not_a_wait() {
        let bytes = RateLimit::new(1000, Duration::from_secs(60)).unwrap();
        for n in [1001, usize::try_from(u32::MAX).unwrap(), usize::MAX] {
            let refusal = bytes.check_n("a", n).await.unwrap_err();
            assert_eq!(refusal, LimitExceeded::TooLarge { max: 1000 });
            assert_eq!(refusal.retry_after(), None);
            assert_eq!(refusal.reason_code(), "too_large");
        }
        // The refusals cost nothing: the whole burst is still there.
        bytes.check_n("a", 1000).await.unwrap();
    }

    #[test]
    fn impossible_limits_are_refused() {
        assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(RateLimit::new(10, Duration::ZERO).is_err());
        assert!(ConnectionLimit::new(0).is_err());
    }

    #[tokio::test]
    async fn connection_slots_come_back_on_drop() {
        let limit = ConnectionLimit::new(2).unwrap();
        let a = limit.try_acquire("u").await.unwrap();
        let b = limit.try_acquire("u").await.unwrap();
        assert!(matches!(
            limit.try_acquire("u").await,
            Err(LimitExceeded::Connections)
        ));
        let other = limit.try_acquire("v").await.unwrap();
        drop(a);
        let c = limit.try_acquire("u").await.unwrap();
        drop((b, c, other));
        assert_eq!(limit.open("u"), 0);
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
