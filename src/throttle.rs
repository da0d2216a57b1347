//! Login throttling: failed logins limited per (username, client), per
//! username and per client, before any password work. On by default in the
//! token endpoint and the session login
//! ([`AuthenticatorBuilder::login_throttle`](crate::AuthenticatorBuilder::login_throttle)).
//!
//! # The policy
//!
//! Three budgets of failed logins, each a GCRA on [`governor`] (a budget of
//! `max` per `period` holds `max` failures at once and gives one back every
//! `period / max`):
//!
//! | budget | default | stops |
//! | --- | --- | --- |
//! | per (username, client) | 5 per 15 minutes | one client guessing one account |
//! | per username | 20 per 15 minutes | a guess spread over many addresses |
//! | per client | 100 per 15 minutes | one client trying many usernames (spraying) |
//!
//! - A login is checked against every budget before the user is looked up
//!   and before any argon2 work: past any of them it is refused at once
//!   with [`LoginThrottled`], rendered as 429 `too_many_requests` with
//!   `Retry-After` (RFC 6585), whatever the password. Usernames are keys
//!   whether or not they exist, so unknown ones are throttled exactly like
//!   known ones and the answers tell nothing.
//! - Only failures count (`invalid_grant`); a store outage, a busy hasher or
//!   a client that hangs up before the answer count nothing. A failure is
//!   counted before the refusal is sent, so hanging up during the answer's
//!   [floor](crate::password#timing-every-refused-login-costs-the-same)
//!   does not escape it.
//! - Logins in flight count against the budgets too: with 5 failures left,
//!   a 6th login sent while 5 are still being checked is refused, so a
//!   client cannot race past its budget with concurrent requests.
//! - A successful login gives its (username, client) pair its whole budget
//!   back; the per-username and per-client budgets refill with time only.
//! - An attacker on another address spends their own pair budget, not the
//!   user's: a single address cannot lock a user out. Many addresses
//!   together can empty the per-username budget (20), and then keep it
//!   empty by spending a failure each time it refills (every 45 s by
//!   default); as each address gets a pair failure back only every 3
//!   minutes, that takes at least 4 addresses at it all the time. The user
//!   is refused with 429 while they keep at it, and let in again within
//!   45 s of their stopping.
//! - Usernames are compared lowercased (`str::to_lowercase`), so case
//!   variants of one name share its budgets.
//!
//! # The client
//!
//! By default the client is the peer address of the connection, read from a
//! [`ClientAddr`] in the request's extensions: the axum handlers put it
//! there from axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`); a hyper server
//! inserts it for each connection. IPv6 clients are keyed by their /64
//! prefix, which one host usually holds whole. A client-supplied
//! `X-Forwarded-For` is never read unless the app says so with
//! [`LoginThrottleBuilder::client_key`]. Without a client key, only the
//! per-username budget applies (logged once as a warning).
//!
//! # Memory
//!
//! The failure counts live in one table bounded by
//! [`max_memory`](LoginThrottleBuilder::max_memory) (default 32 MiB, each
//! entry weighed by its key's length plus 128 bytes: about 200 000 entries
//! for short keys). It is a CLOCK-Pro cache ([`quick_cache`]): past the
//! bound it forgets entries touched once before those touched again, so a
//! flood of random usernames (each touched once) evicts itself first, while
//! an account under attack, touched by every guess, stays. What an attacker
//! can do at the bound: evict a pair or username entry that has not been
//! touched for a while, by spending more failed logins than the table holds
//! (each limited by its client's budget); the evicted key starts again with
//! a full budget, which it would have refilled to by then anyway in most
//! cases. What they cannot do: grow the memory past the bound, or reset an
//! entry they keep touching. Logins in flight are counted in a map of their
//! own, as large as the number of logins in flight.
//!
//! # Shared by an app's instances
//!
//! Behind a load balancer, a throttle in each instance's memory would let
//! a guesser spread their guesses over the instances (and start afresh on
//! whichever one the next request lands on). With
//! [`LoginThrottleBuilder::shared`] the three budgets are kept in a store
//! of [`SharedCounters`] (`tower_auth::redis::RedisStore`, feature
//! `redis`): the same GCRA, atomic in the store, so a failure on any
//! instance counts on all of them. What changes:
//!
//! - **The keys hold no username or address.** Each budget's key is
//!   `throttle:` and the BLAKE2b-256 hash of the budget's kind, the
//!   lowercased username and the client key, salted with the store's
//!   namespace (its Redis key prefix), in base64url: someone reading
//!   Redis sees which keys are busy, not whose. It is a pseudonym, not
//!   encryption: whoever has the data and the prefix can still test
//!   guesses (a list of usernames, the IPv4 space) against it.
//! - **Each login costs round trips**: a dry run per budget before the
//!   password work, a charge per budget after a failure, a delete after a
//!   success.
//! - **A failing store fails closed**: the login is refused with
//!   [`LoginThrottled`] whose [`store_unavailable`](LoginThrottled::store_unavailable)
//!   is true, rendered 503 `temporarily_unavailable` with `Retry-After: 1`
//!   (reason code `throttle_store_unavailable`), before any user lookup or
//!   argon2 work, known and unknown usernames alike. Letting logins through
//!   unthrottled while the store is away would open the door to a guesser
//!   who can make it look away. A failure that cannot be recorded after
//!   the password check is logged; that login is refused all the same.
//! - **Logins in flight stay per instance** (decision): they are counted in
//!   this process, as before, and checked against the shared budgets (a
//!   dry run of `in flight here + 1` failures). Sharing them would cost a
//!   write and a release per login, and leave a count behind when an
//!   instance dies mid-login. The bound this leaves: a client racing
//!   concurrent logins at `k` instances at once can have up to `k` times
//!   its remaining budget in flight before the first failure is counted
//!   (each of those then counts, and the argon2 queue of each instance
//!   caps them too).
//! - The memory bound ([memory](self#memory)) no longer applies: the keys
//!   live in the store, each expiring when its budget is full again.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use http::request::Parts;

use crate::config::ConfigError;
use crate::counters::{Charge, DynSharedCounters, Gcra, GcraOutcome, SharedCounters, StoreError};

/// A login refused by the [`LoginThrottle`]: too many failed logins for its
/// username, its client, or the two together. Rendered as 429
/// `too_many_requests` with `Retry-After` by the [`error`](crate::error)
/// module (as `AuthError::LoginThrottled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins")]
pub struct LoginThrottled {
    retry_after: Duration,
    store_failed: bool,
}

impl LoginThrottled {
    fn throttled(retry_after: Duration) -> Self {
        LoginThrottled {
            retry_after,
            store_failed: false,
        }
    }

    /// How long until the login would be checked again (sent as
    /// `Retry-After`, in whole seconds rounded up).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Whether the login was refused because a [shared](self#shared-by-an-apps-instances)
    /// throttle's store failed (fail closed), not because a budget is
    /// spent: rendered 503 `temporarily_unavailable` instead of 429.
    pub fn store_unavailable(&self) -> bool {
        self.store_failed
    }

    /// A stable code for logs and metrics: `login_throttled`, or
    /// `throttle_store_unavailable`.
    pub fn reason_code(&self) -> &'static str {
        if self.store_failed {
            "throttle_store_unavailable"
        } else {
            "login_throttled"
        }
    }
}

/// The address of the client at the other end of a connection, as the
/// server saw it. Put it into each request's extensions (a hyper server:
/// from `TcpListener::accept`; the axum handlers do it from
/// `ConnectInfo<SocketAddr>`) and the [`LoginThrottle`] keys clients by it.
///
/// ```
/// use tower_auth::throttle::ClientAddr;
///
/// # let mut request = http::Request::new(());
/// # let peer: std::net::SocketAddr = "192.0.2.7:50000".parse().unwrap();
/// request.extensions_mut().insert(ClientAddr::from(peer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl From<SocketAddr> for ClientAddr {
    fn from(addr: SocketAddr) -> Self {
        ClientAddr(addr.ip())
    }
}

impl ClientAddr {
    /// The throttle's key for this client: an IPv4 address as is (also when
    /// mapped into IPv6), an IPv6 address by its /64 prefix.
    pub fn throttle_key(&self) -> String {
        match self.0.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let prefix = Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64));
                format!("{prefix}/64")
            }
        }
    }
}

type ClientKeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// How many failures per how long.
#[derive(Debug, Clone, Copy)]
struct Budget {
    max: u32,
    period: Duration,
}

impl Budget {
    const fn per_15_minutes(max: u32) -> Self {
        Budget {
            max,
            period: Duration::from_secs(15 * 60),
        }
    }

    fn gcra(self) -> Result<Gcra, ConfigError> {
        self.quota()?;
        Gcra::per_period(self.max, self.period).ok_or(ConfigError::Limit(
            "a login throttle budget must allow at least one failure",
        ))
    }

    fn quota(self) -> Result<Quota, ConfigError> {
        let burst = NonZeroU32::new(self.max).ok_or(ConfigError::Limit(
            "a login throttle budget must allow at least one failure",
        ))?;
        let quota = Quota::with_period(self.period / self.max).ok_or(ConfigError::Limit(
            "a login throttle budget's period is too short",
        ))?;
        Ok(quota.allow_burst(burst))
    }
}

/// The default bound on the throttle's memory; see
/// [`LoginThrottleBuilder::max_memory`].
pub const DEFAULT_MAX_MEMORY: u64 = 32 * 1024 * 1024;

/// What an entry of the table costs beyond its key's bytes (the value, the
/// cache's bookkeeping, the key's allocation).
const ENTRY_OVERHEAD: u64 = 128;

/// Configures a [`LoginThrottle`]; checked by [`build`](Self::build).
#[must_use]
pub struct LoginThrottleBuilder {
    per_pair: Budget,
    per_username: Budget,
    per_client: Budget,
    max_memory: u64,
    client_key: Option<Arc<ClientKeyFn>>,
    shared: Option<Arc<dyn DynSharedCounters>>,
}

impl LoginThrottleBuilder {
    /// Keeps the budgets in `store`, shared by every instance of the app
    /// (each must be built with the same budgets): see
    /// [shared by an app's instances](self#shared-by-an-apps-instances).
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_auth::redis::RedisStore;
    /// use tower_auth::throttle::LoginThrottle;
    ///
    /// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// let throttle = LoginThrottle::builder().shared(store).build()?;
    /// # Ok(()) }
    /// ```
    pub fn shared(mut self, store: impl SharedCounters) -> Self {
        self.shared = Some(Arc::new(store));
        self
    }

    /// Failed logins allowed per (username, client) per `period`. Default:
    /// 5 per 15 minutes.
    pub fn per_username_and_client(mut self, max: u32, period: Duration) -> Self {
        self.per_pair = Budget { max, period };
        self
    }

    /// Failed logins allowed per username, from all clients together, per
    /// `period`. Default: 20 per 15 minutes.
    pub fn per_username(mut self, max: u32, period: Duration) -> Self {
        self.per_username = Budget { max, period };
        self
    }

    /// Failed logins allowed per client, for all usernames together, per
    /// `period`. Default: 100 per 15 minutes.
    pub fn per_client(mut self, max: u32, period: Duration) -> Self {
        self.per_client = Budget { max, period };
        self
    }

    /// The bound on the failure table's memory, in bytes (each entry weighs
    /// its key's length plus 128). Default: [`DEFAULT_MAX_MEMORY`]. See
    /// [memory](self#memory) for what happens at the bound.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }

    /// How to tell clients apart, instead of the peer address
    /// ([`ClientAddr`]); `None` means "unknown client" (only the
    /// per-username budget applies). Behind a reverse proxy that you trust
    /// and that appends the peer's address to `X-Forwarded-For`, take the
    /// last entry (every other one is the client's to choose):
    ///
    /// ```
    /// use tower_auth::throttle::LoginThrottle;
    ///
    /// let throttle = LoginThrottle::builder()
    ///     .client_key(|parts| {
    ///         let forwarded = parts.headers.get("x-forwarded-for")?.to_str().ok()?;
    ///         let last = forwarded.rsplit(',').next()?.trim();
    ///         let ip: std::net::IpAddr = last.parse().ok()?;
    ///         Some(tower_auth::throttle::ClientAddr(ip).throttle_key())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn client_key(
        mut self,
        key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.client_key = Some(Arc::new(key));
        self
    }

    /// Checks the budgets (at least one failure, a period of at least one
    /// nanosecond per failure) and the memory bound (room for one entry).
    pub fn build(self) -> Result<LoginThrottle, ConfigError> {
        if self.max_memory < 2 * ENTRY_OVERHEAD {
            return Err(ConfigError::Limit(
                "the login throttle's memory bound is too small",
            ));
        }
        let shared = match self.shared {
            Some(store) => Some(SharedBudgets {
                store,
                per_pair: self.per_pair.gcra()?,
                per_username: self.per_username.gcra()?,
                per_client: self.per_client.gcra()?,
            }),
            None => None,
        };
        let table = FailureTable::new(self.max_memory);
        let failures = FailedLogins {
            per_pair: limiter(self.per_pair.quota()?, &table),
            per_username: limiter(self.per_username.quota()?, &table),
            per_client: limiter(self.per_client.quota()?, &table),
            table,
            in_flight: Mutex::default(),
            shared,
        };
        Ok(LoginThrottle {
            inner: Arc::new(ThrottleInner {
                failures,
                budgets: [self.per_pair, self.per_username, self.per_client],
                client_key: self.client_key,
                warned_unknown_client: AtomicBool::new(false),
            }),
        })
    }
}

/// Limits failed logins per (username, client), per username and per
/// client; see the [module docs](self) for the policy and its defaults.
/// Cheap to clone: clones share their state.
///
/// [`Authenticator::login`](crate::Authenticator::login) applies it; a
/// custom login handler can too:
///
/// ```
/// # async fn check_password() -> bool { false }
/// use tower_auth::throttle::LoginThrottle;
///
/// # async fn handler() -> Result<(), tower_auth::throttle::LoginThrottled> {
/// let throttle = LoginThrottle::new();
/// let attempt = throttle.check("johndoe", Some("192.0.2.7")).await?; // 429 when Err
/// if check_password().await {
///     attempt.succeeded().await;
/// } else {
///     attempt.failed().await;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LoginThrottle {
    inner: Arc<ThrottleInner>,
}

struct ThrottleInner {
    failures: FailedLogins,
    /// Per pair, per username, per client: for `Debug`.
    budgets: [Budget; 3],
    client_key: Option<Arc<ClientKeyFn>>,
    warned_unknown_client: AtomicBool,
}

impl fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [per_pair, per_username, per_client] = self.inner.budgets;
        f.debug_struct("LoginThrottle")
            .field("per_username_and_client", &per_pair)
            .field("per_username", &per_username)
            .field("per_client", &per_client)
            .field("custom_client_key", &self.inner.client_key.is_some())
            .field("shared", &self.inner.failures.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginThrottle {
    /// The default policy: 5 failures per (username, client), 20 per
    /// username, 100 per client, each per 15 minutes; clients by peer
    /// address; 32 MiB of memory at most.
    pub fn new() -> Self {
        // The default budgets and bound are valid: building cannot fail.
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default login throttle is valid"))
    }

    /// Starts from the defaults of [`new`](Self::new).
    pub fn builder() -> LoginThrottleBuilder {
        LoginThrottleBuilder {
            per_pair: Budget::per_15_minutes(5),
            per_username: Budget::per_15_minutes(20),
            per_client: Budget::per_15_minutes(100),
            max_memory: DEFAULT_MAX_MEMORY,
            client_key: None,
            shared: None,
        }
    }

    /// The client's key for a request: the configured
    /// [`client_key`](LoginThrottleBuilder::client_key), else the
    /// [`ClientAddr`] in its extensions.
    pub fn client_key(&self, parts: &Parts) -> Option<String> {
        match &self.inner.client_key {
            Some(key) => key(parts),
            None => parts
                .extensions
                .get::<ClientAddr>()
                .map(ClientAddr::throttle_key),
        }
    }

    /// Checks a login by `username` from `client` against the budgets,
    /// before any other work: [`LoginThrottled`] when one is spent (the
    /// login must be refused), else the attempt, counted as in flight until
    /// it is [`failed`](LoginAttempt::failed),
    /// [`succeeded`](LoginAttempt::succeeded) or dropped. A local throttle
    /// answers at once; a [shared](self#shared-by-an-apps-instances) one
    /// after a round trip per budget.
    pub async fn check(
        &self,
        username: &str,
        client: Option<&str>,
    ) -> Result<LoginAttempt, LoginThrottled> {
        if client.is_none()
            && !self
                .inner
                .warned_unknown_client
                .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "login throttle: no client key for a login, so only the per-username budget \
                 applies; serve with connect info (axum: into_make_service_with_connect_info), \
                 insert a ClientAddr, or set LoginThrottleBuilder::client_key"
            );
        }
        let keys = AttemptKeys::new(username, client);
        let failures = &self.inner.failures;
        let Some(shared) = &failures.shared else {
            failures.check(&keys)?;
            return Ok(LoginAttempt {
                throttle: Arc::clone(&self.inner),
                keys: Some(keys),
            });
        };
        // Counted in flight first, so concurrent checks on this instance see
        // each other; the attempt gives it back when dropped, so a check
        // that is refused, fails or is cancelled (the client hung up) while
        // it waits on the store leaves nothing behind.
        let pending = failures.reserve(shared, &keys);
        let attempt = LoginAttempt {
            throttle: Arc::clone(&self.inner),
            keys: Some(keys),
        };
        if let Some(keys) = &attempt.keys {
            shared.check(keys, pending).await?;
        }
        Ok(attempt)
    }

    /// How many keys (pairs, usernames, clients) the failure table holds.
    pub fn tracked_keys(&self) -> usize {
        self.inner.failures.table.lock().len()
    }

    /// The failure table's weight: its keys' bytes plus 128 per entry; at
    /// most [`max_memory`](LoginThrottleBuilder::max_memory).
    pub fn tracked_bytes(&self) -> u64 {
        self.inner.failures.table.lock().weight()
    }
}

/// A login that passed [`LoginThrottle::check`], in flight until its outcome
/// is known. Dropped without an outcome (the client hung up, the store or
/// the hasher failed), it counts nothing.
#[must_use = "say how the login ended: failed() or succeeded()"]
pub struct LoginAttempt {
    throttle: Arc<ThrottleInner>,
    /// `None` once the outcome was recorded.
    keys: Option<AttemptKeys>,
}

impl fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginAttempt").finish_non_exhaustive()
    }
}

impl LoginAttempt {
    /// The login was refused (`invalid_grant`): one failure for each budget.
    /// Await it before answering, so a client hanging up cannot escape it.
    pub async fn failed(mut self) {
        // The keys stay in the attempt while the store is written: if this
        // is cancelled meanwhile, dropping the attempt ends it in flight.
        if let (Some(shared), Some(keys)) = (&self.throttle.failures.shared, &self.keys) {
            shared.record(keys).await;
        }
        if let Some(keys) = self.keys.take() {
            self.throttle.failures.record(&keys);
        }
    }

    /// The password was right: the (username, client) pair gets its whole
    /// budget back.
    pub async fn succeeded(mut self) {
        if let (Some(shared), Some(keys)) = (&self.throttle.failures.shared, &self.keys) {
            shared.reset(keys).await;
        }
        if let Some(keys) = self.keys.take() {
            self.throttle.failures.reset(&keys);
        }
    }
}

impl Drop for LoginAttempt {
    fn drop(&mut self) {
        if let Some(keys) = self.keys.take() {
            self.throttle.failures.abandon(&keys);
        }
    }
}

/// A key of the failure table. Each budget has its own kind of key, so the
/// three limiters can share one bounded table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    Pair {
        username: Box<str>,
        client: Box<str>,
    },
    Username(Box<str>),
    Client(Box<str>),
}

impl ThrottleKey {
    fn len(&self) -> usize {
        match self {
            Self::Pair { username, client } => username.len() + client.len(),
            Self::Username(key) | Self::Client(key) => key.len(),
        }
    }
}

/// The keys one login is checked and counted under.
struct AttemptKeys {
    username: ThrottleKey,
    /// The pair and the client, when the client is known.
    client: Option<(ThrottleKey, ThrottleKey)>,
}

impl AttemptKeys {
    fn new(username: &str, client: Option<&str>) -> Self {
        let username: Box<str> = username.to_lowercase().into();
        AttemptKeys {
            client: client.map(|client| {
                let pair = ThrottleKey::Pair {
                    username: username.clone(),
                    client: client.into(),
                };
                (pair, ThrottleKey::Client(client.into()))
            }),
            username: ThrottleKey::Username(username),
        }
    }
}

/// A governor limiter over the shared table.
type Limiter = RateLimiter<Probe, FailureTable, DefaultClock>;

fn limiter(quota: Quota, table: &FailureTable) -> Limiter {
    RateLimiter::new(quota, table.clone(), DefaultClock::default())
}

/// The throttle's state: failed logins counted per key (the table, through
/// one governor limiter per budget) and logins in flight. Three operations:
/// [`check`](Self::check), [`record`](Self::record),
/// [`reset`](Self::reset) (and [`abandon`](Self::abandon) for a login that
/// ended without an outcome).
struct FailedLogins {
    per_pair: Limiter,
    per_username: Limiter,
    per_client: Limiter,
    table: FailureTable,
    /// Logins in flight per key. Its lock is held around every check and
    /// record, so a check sees the failures and the logins in flight of
    /// one moment.
    in_flight: Mutex<HashMap<ThrottleKey, u32>>,
    /// The budgets in a shared store, instead of the limiters (the logins
    /// in flight stay in this process).
    shared: Option<SharedBudgets>,
}

impl FailedLogins {
    /// The limiter and key of each budget that applies to `keys`.
    fn budgets<'a>(
        &'a self,
        keys: &'a AttemptKeys,
    ) -> impl Iterator<Item = (&'a Limiter, &'a ThrottleKey)> {
        let client = keys
            .client
            .iter()
            .flat_map(|(pair, client)| [(&self.per_pair, pair), (&self.per_client, client)]);
        std::iter::once((&self.per_username, &keys.username)).chain(client)
    }

    /// Whether one more failure, besides those of the logins already in
    /// flight, would fit every budget (a dry run: nothing is spent); if so,
    /// the login is counted in flight.
    fn check(&self, keys: &AttemptKeys) -> Result<(), LoginThrottled> {
        let mut in_flight = lock(&self.in_flight);
        let mut refused: Option<Duration> = None;
        for (limiter, key) in self.budgets(keys) {
            let pending = in_flight.get(key).copied().unwrap_or(0);
            let wait = match NonZeroU32::new(pending.saturating_add(1)) {
                Some(n) => match limiter.check_key_n(&Probe::peek(key), n) {
                    Ok(Ok(())) => continue,
                    Ok(Err(not_until)) => not_until.wait_time_from(limiter.clock().now()),
                    // More logins in flight than the whole budget: one of
                    // them will have finished within a second.
                    Err(_) => Duration::from_secs(1),
                },
                None => Duration::from_secs(1),
            };
            refused = Some(refused.map_or(wait, |other| other.max(wait)));
        }
        if let Some(retry_after) = refused {
            return Err(LoginThrottled::throttled(retry_after));
        }
        for (_, key) in self.budgets(keys) {
            *in_flight.entry(key.clone()).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Counts a shared login in flight under each of its keys; how many
    /// were in flight before it, per budget.
    fn reserve(&self, shared: &SharedBudgets, keys: &AttemptKeys) -> Vec<u32> {
        let mut in_flight = lock(&self.in_flight);
        shared
            .budgets(keys)
            .map(|(_, key)| {
                let count = in_flight.entry(key.clone()).or_insert(0);
                *count += 1;
                *count - 1
            })
            .collect()
    }

    /// Spends one failure of every budget `keys` fall under (the shared
    /// budgets are charged by [`SharedBudgets::record`] first).
    fn record(&self, keys: &AttemptKeys) {
        let mut in_flight = lock(&self.in_flight);
        if self.shared.is_none() {
            for (limiter, key) in self.budgets(keys) {
                // Refused only when concurrent failures spent the budget
                // first: it is spent either way.
                let _ = limiter.check_key(&Probe::spend(key));
            }
        }
        self.leave(&mut in_flight, keys);
    }

    /// Gives the (username, client) pair its whole budget back.
    fn reset(&self, keys: &AttemptKeys) {
        let mut in_flight = lock(&self.in_flight);
        if let Some((pair, _)) = &keys.client {
            self.table.lock().remove(pair);
        }
        self.leave(&mut in_flight, keys);
    }

    /// A login ended without an outcome: no longer in flight.
    fn abandon(&self, keys: &AttemptKeys) {
        let mut in_flight = lock(&self.in_flight);
        self.leave(&mut in_flight, keys);
    }

    fn leave(&self, in_flight: &mut HashMap<ThrottleKey, u32>, keys: &AttemptKeys) {
        for (_, key) in self.budgets(keys) {
            if let Some(count) = in_flight.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
}

/// Logs a shared throttle's store failure and refuses the login.
fn store_failed(error: &StoreError) -> LoginThrottled {
    tracing::error!(
        error = %error.0,
        outcome = "throttle_store_unavailable",
        "login throttle: the shared store failed; refusing the login (fail closed)"
    );
    LoginThrottled {
        retry_after: Duration::from_secs(1),
        store_failed: true,
    }
}

/// The three budgets in a shared store.
struct SharedBudgets {
    store: Arc<dyn DynSharedCounters>,
    per_pair: Gcra,
    per_username: Gcra,
    per_client: Gcra,
}

impl SharedBudgets {
    /// Whether the logins in flight here (`pending`, per budget) and one
    /// more failure would fit every budget: a dry run, nothing is spent.
    async fn check(&self, keys: &AttemptKeys, pending: Vec<u32>) -> Result<(), LoginThrottled> {
        let mut refused: Option<Duration> = None;
        for ((rate, key), pending) in self.budgets(keys).zip(pending) {
            let n = NonZeroU32::new(pending.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
            let wait = match self
                .store
                .charge(&self.key(key), rate, n, Charge::DryRun)
                .await
            {
                Ok(GcraOutcome::Allowed) => continue,
                Ok(GcraOutcome::Wait(wait)) => wait,
                // More logins in flight than the whole budget: one of them
                // will have finished within a second.
                Ok(GcraOutcome::TooLarge) => Duration::from_secs(1),
                Err(error) => return Err(store_failed(&error)),
            };
            refused = Some(refused.map_or(wait, |other| other.max(wait)));
        }
        match refused {
            Some(retry_after) => Err(LoginThrottled::throttled(retry_after)),
            None => Ok(()),
        }
    }

    /// The rate and key of each budget that applies to `keys`.
    fn budgets<'a>(
        &'a self,
        keys: &'a AttemptKeys,
    ) -> impl Iterator<Item = (Gcra, &'a ThrottleKey)> {
        let client = keys
            .client
            .iter()
            .flat_map(|(pair, client)| [(self.per_pair, pair), (self.per_client, client)]);
        std::iter::once((self.per_username, &keys.username)).chain(client)
    }

    /// The store's key for `key`: `throttle:` and a salted BLAKE2b-256 hash
    /// of it, so that the store never holds a username or an address.
    fn key(&self, key: &ThrottleKey) -> String {
        let mut hash = Blake2b::<U32>::new();
        // Every part is length-prefixed: no two keys hash the same input.
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        part(b"tower-auth login throttle v1");
        part(self.store.namespace().as_bytes());
        match key {
            ThrottleKey::Pair { username, client } => {
                part(b"pair");
                part(username.as_bytes());
                part(client.as_bytes());
            }
            ThrottleKey::Username(username) => {
                part(b"username");
                part(username.as_bytes());
            }
            ThrottleKey::Client(client) => {
                part(b"client");
                part(client.as_bytes());
            }
        }
        format!(
            "throttle:{}",
            Base64UrlUnpadded::encode_string(&hash.finalize())
        )
    }

    /// Spends one failure of every budget (a budget spent meanwhile by
    /// concurrent failures stays spent); a store failure is logged.
    async fn record(&self, keys: &AttemptKeys) {
        for (rate, key) in self.budgets(keys) {
            let key = self.key(key);
            if let Err(error) = self
                .store
                .charge(&key, rate, NonZeroU32::MIN, Charge::Spend)
                .await
            {
                tracing::error!(
                    error = %error.0,
                    outcome = "throttle_store_unavailable",
                    "login throttle: a failed login could not be counted in the shared store"
                );
                return;
            }
        }
    }

    /// Gives the (username, client) pair its whole budget back.
    async fn reset(&self, keys: &AttemptKeys) {
        if let Some((pair, _)) = &keys.client
            && let Err(error) = self.store.forget(&self.key(pair)).await
        {
            tracing::warn!(
                error = %error.0,
                "login throttle: a successful login could not reset its budget in the shared store"
            );
        }
    }
}

/// A key as governor sees it: the table key, and whether this call may
/// spend (`write`) or only asks whether it could (a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Probe {
    key: ThrottleKey,
    write: bool,
}

impl Probe {
    fn peek(key: &ThrottleKey) -> Self {
        Probe {
            key: key.clone(),
            write: false,
        }
    }

    fn spend(key: &ThrottleKey) -> Self {
        Probe {
            key: key.clone(),
            write: true,
        }
    }
}

/// Weighs an entry by its key's bytes plus [`ENTRY_OVERHEAD`].
#[derive(Clone)]
struct KeyWeighter;

impl quick_cache::Weighter<ThrottleKey, Nanos> for KeyWeighter {
    fn weight(&self, key: &ThrottleKey, _: &Nanos) -> u64 {
        key.len() as u64 + ENTRY_OVERHEAD
    }
}

type Table = quick_cache::unsync::Cache<ThrottleKey, Nanos, KeyWeighter>;

/// The bounded table of governor states (each key's theoretical arrival
/// time), shared by the three limiters: a governor [`StateStore`] that
/// writes only for [`Probe::spend`].
#[derive(Clone)]
struct FailureTable(Arc<Mutex<Table>>);

impl FailureTable {
    fn new(max_memory: u64) -> Self {
        // Only what is allocated up front: the table grows up to its bound.
        let table = Table::with_weighter(1024, max_memory, KeyWeighter);
        FailureTable(Arc::new(Mutex::new(table)))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.0)
    }
}

impl StateStore for FailureTable {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, probe: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut table = self.lock();
        // A dry run counts as a use too: an account that is still being
        // tried stays in the table.
        let current = table.get(&probe.key).copied();
        let (outcome, next) = f(current)?;
        if probe.write {
            table.insert(probe.key.clone(), next);
        }
        Ok(outcome)
    }
}

/// Locks `mutex`; every change under these locks is a whole insert or
/// remove, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(max: u32) -> LoginThrottle {
        LoginThrottle::builder()
            .per_username_and_client(max, Duration::from_secs(60))
            .per_username(2 * max, Duration::from_secs(60))
            .per_client(3 * max, Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// A login for `username` from `client` that passes the throttle, then fails.
    async fn fail(throttle: &LoginThrottle, username: &str, client: Option<&str>) {
        let attempt = throttle.check(username, client).await.unwrap();
        attempt.failed().await;
    }

    /// A login for `username` from `client` that passes the throttle, then succeeds.
    async fn succeed(throttle: &LoginThrottle, username: &str, client: Option<&str>) {
        let attempt = throttle.check(username, client).await.unwrap();
        attempt.succeeded().await;
    }

    #[tokio::test]
    async fn failures_spend_the_pair_budget_and_a_success_gives_it_back() {
        let throttle = small(3);
        for _ in 0..3 {
            fail(&throttle, "johndoe", Some("a")).await;
        }
        let refused = throttle.check("johndoe", Some("a")).await.unwrap_err();
        assert!(refused.retry_after() > Duration::ZERO);
        assert!(refused.retry_after() <= Duration::from_secs(20));
        // Another client, another pair; case variants are the same name.
        succeed(&throttle, "JohnDoe", Some("b")).await;
        assert!(throttle.check("JOHNDOE", Some("a")).await.is_err());

        let throttle = small(3);
        for _ in 0..2 {
            fail(&throttle, "johndoe", Some("a")).await;
        }
        succeed(&throttle, "johndoe", Some("a")).await;
        for _ in 0..3 {
            fail(&throttle, "johndoe", Some("a")).await;
        }
        assert!(throttle.check("johndoe", Some("a")).await.is_err());
    }

    #[tokio::test]
    async fn logins_in_flight_count_and_dropped_ones_count_nothing() {
        let throttle = small(2);
        let first = throttle.check("johndoe", Some("a")).await.unwrap();
        let second = throttle.check("johndoe", Some("a")).await.unwrap();
        assert!(
            throttle.check("johndoe", Some("a")).await.is_err(),
            "raced past the budget"
        );
        drop(first);
        drop(second);
        fail(&throttle, "johndoe", Some("a")).await;
        fail(&throttle, "johndoe", Some("a")).await;
        assert!(throttle.check("johndoe", Some("a")).await.is_err());
    }

    #[tokio::test]
    async fn the_username_and_client_budgets_span_pairs() {
        let throttle = small(2);
        // Per username: 4 failures from 2 clients.
        for client in ["a", "b"] {
            for _ in 0..2 {
                fail(&throttle, "johndoe", Some(client)).await;
            }
        }
        assert!(throttle.check("johndoe", Some("c")).await.is_err());
        // Per client: 6 failures over 3 usernames.
        for username in ["u1", "u2", "u3"] {
            for _ in 0..2 {
                fail(&throttle, username, Some("z")).await;
            }
        }
        assert!(throttle.check("u4", Some("z")).await.is_err());
        assert!(throttle.check("u4", Some("y")).await.is_ok());
        // Without a client, the username budget alone.
        let throttle = small(2);
        for _ in 0..4 {
            fail(&throttle, "johndoe", None).await;
        }
        assert!(throttle.check("johndoe", None).await.is_err());
    }

    #[tokio::test]
    async fn a_flood_of_usernames_stays_within_the_memory_bound() {
        let throttle = LoginThrottle::builder()
            .max_memory(64 * 1024)
            .per_client(u32::MAX, Duration::from_secs(3600))
            .build()
            .unwrap();
        // A guess at one account, touched again and again, among the flood.
        for i in 0..20_000 {
            if let Ok(attempt) = throttle
                .check(&format!("random-{i}"), Some("attacker"))
                .await
            {
                attempt.failed().await;
            }
            if i % 100 == 0
                && let Ok(attempt) = throttle.check("victim", Some("guesser")).await
            {
                attempt.failed().await;
            }
        }
        assert!(
            throttle.tracked_bytes() <= 64 * 1024,
            "{}",
            throttle.tracked_bytes()
        );
        assert!(
            throttle.tracked_keys() < 1000,
            "{}",
            throttle.tracked_keys()
        );
        // The account under attack is still remembered.
        assert!(throttle.check("victim", Some("guesser")).await.is_err());
    }

    /// A shared store that answers like an empty GCRA (allowed unless more
    /// than the burst) or, while `hang` is set, never answers.
    #[derive(Default)]
    struct Hanging {
        hang: std::sync::atomic::AtomicBool,
    }

    impl SharedCounters for Arc<Hanging> {
        async fn charge(
            &self,
            _key: &str,
            rate: Gcra,
            n: NonZeroU32,
            _charge: Charge,
        ) -> Result<GcraOutcome, StoreError> {
            if self.hang.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
            Ok(if n > rate.burst {
                GcraOutcome::TooLarge
            } else {
                GcraOutcome::Allowed
            })
        }

        async fn forget(&self, _key: &str) -> Result<(), StoreError> {
            if self.hang.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
            Ok(())
        }

        async fn acquire_lease(
            &self,
            _: &str,
            _: &str,
            _: u32,
            _: Duration,
        ) -> Result<bool, StoreError> {
            Ok(true)
        }

        async fn renew_lease(
            &self,
            _: &str,
            _: &str,
            _: u32,
            _: Duration,
        ) -> Result<bool, StoreError> {
            Ok(true)
        }

        async fn release_lease(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }

        fn namespace(&self) -> &str {
            "test"
        }
    }

    #[tokio::test]
    async fn a_shared_login_cancelled_while_it_waits_on_the_store_leaves_nothing_in_flight() {
        let store = Arc::new(Hanging::default());
        let throttle = LoginThrottle::builder()
            .per_username_and_client(3, Duration::from_secs(60))
            .shared(Arc::clone(&store))
            .build()
            .unwrap();
        let cancel = Duration::from_millis(5);
        // Checks cancelled (the client hung up) while the store is asked.
        store.hang.store(true, Ordering::Relaxed);
        for _ in 0..10 {
            let check = throttle.check("johndoe", Some("a"));
            assert!(tokio::time::timeout(cancel, check).await.is_err());
        }
        // Failures and successes cancelled while they are written.
        for _ in 0..10 {
            store.hang.store(false, Ordering::Relaxed);
            let attempt = throttle.check("johndoe", Some("a")).await.unwrap();
            store.hang.store(true, Ordering::Relaxed);
            assert!(
                tokio::time::timeout(cancel, attempt.failed())
                    .await
                    .is_err()
            );
            store.hang.store(false, Ordering::Relaxed);
            let attempt = throttle.check("johndoe", Some("a")).await.unwrap();
            store.hang.store(true, Ordering::Relaxed);
            assert!(
                tokio::time::timeout(cancel, attempt.succeeded())
                    .await
                    .is_err()
            );
        }
        // None of them is still counted in flight: three logins fit the
        // budget of three at once, and a fourth does not.
        store.hang.store(false, Ordering::Relaxed);
        let mut attempts = Vec::new();
        for _ in 0..3 {
            attempts.push(throttle.check("johndoe", Some("a")).await.unwrap());
        }
        assert!(throttle.check("johndoe", Some("a")).await.is_err());
        assert!(
            lock(&throttle.inner.failures.in_flight)
                .values()
                .all(|n| *n == 3)
        );
        drop(attempts);
        assert!(lock(&throttle.inner.failures.in_flight).is_empty());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let key = |ip: &str| ClientAddr(ip.parse().unwrap()).throttle_key();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::1"), key("2001:db8:1:2::9"));
    }

    #[test]
    fn configuration_is_checked() {
        let build = |builder: LoginThrottleBuilder| builder.build().is_err();
        assert!(build(
            LoginThrottle::builder().per_username(0, Duration::from_secs(60))
        ));
        assert!(build(
            LoginThrottle::builder().per_client(10, Duration::from_nanos(5))
        ));
        assert!(build(LoginThrottle::builder().max_memory(10)));
    }
}
