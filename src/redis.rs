//! [`RedisStore`]: the state an app's instances share, on one Redis
//! (feature `redis`). Every instance of an app connects to the same Redis
//! with the same key prefix.
//!
//! Keys are namespaced by the prefix (default `tower-auth`) and expire on
//! their own; every update that reads and writes is one atomic step in
//! Redis (a Lua script), so two instances racing behave as one would.
//!
//! # Sessions and refresh-token families
//!
//! [`RedisStore`] implements [`SharedStore`](crate::store::SharedStore):
//!
//! | key | holds | expires |
//! | --- | --- | --- |
//! | `PREFIX:family:SID` | a refresh-token family as JSON (hashes of its tokens, its key) | when the family does (idle or absolute) |
//! | `PREFIX:family-tokens:SID` | the hashes of every token the family holds or held | at the family's absolute expiry |
//! | `PREFIX:token:HASH` | the session id of the family that holds the token | at the family's absolute expiry |
//! | `PREFIX:subject:SUB` | a subject's session ids with families, oldest first | at the latest absolute expiry |
//! | `PREFIX:revoked` | revoked session id -> until when (a sorted set) | entries removed once past |
//! | `PREFIX:revocations` | a stream announcing each revocation | entries older than 10 minutes trimmed |
//! | `PREFIX:epoch` | a random value, to notice a Redis that lost its data | never |
//!
//! Redis holds the BLAKE2b hashes of refresh tokens (never a token) and
//! each family's key, from which a family's next token is derived from the
//! current one: Redis must be trusted (reachable only by the app, with a
//! password or ACL). Nothing in this module logs a key, a token, a hash or
//! the Redis URL.
//!
//! A rotation reads the family, decides with
//! [`Family::rotate`](crate::session::Family::rotate) in Rust
//! (the rules live in one place) and writes the result with a compare-and-set
//! script: only if the family is still exactly what was read; otherwise it
//! reads again (a bounded number of times). Two instances racing on one
//! refresh token thus behave as one: one rotates, the other, reading the
//! rotated family, gets the same successor within the grace window (and is
//! reuse after it).
//!
//! The scripts compute the keys they touch from the prefix: one Redis (a
//! primary, with replicas if you like), not Redis Cluster. Redis 7.0 or
//! later (`EXPIRETIME`; `ZADD GT`, `SET EXAT` and `XADD MINID` are 6.2).
//!
//! # Revocations: a local set with a staleness bound
//!
//! [`session_status`](crate::store::SharedStore::session_status) runs on every
//! authenticated request that carries a `sid`, and never waits on Redis: it
//! answers from this instance's own set of revoked sessions. A background
//! task (on a connection of its own) keeps that set up to date: it blocks on
//! the revocation stream (`XREAD BLOCK`) for at most a *heartbeat*, a quarter
//! of the staleness bound, and each answer, even an empty one, marks the
//! set fresh as of the moment the read was sent. A revocation made on
//! another instance is therefore seen here within a network round trip, and
//! a revocation made here is in the local set at once.
//!
//! If the set has not been fresh for longer than the **staleness bound**
//! ([`RedisStoreBuilder::max_staleness`], default 2 s), Redis is considered
//! unreachable: `session_status` answers [`StoreError`] and the request is
//! refused with 503 `temporarily_unavailable` (fail closed), rather than
//! accept a token whose session another instance may have revoked. With
//! [`RedisStoreBuilder::fail_open`] such requests are accepted instead, and
//! a warning is logged. Either way, a revoked token can pass on an instance
//! that has not heard of the revocation yet for at most the bound.
//!
//! When the task reconnects it notes the stream's last entry, loads every
//! unexpired revocation from the sorted set, then reads the stream from the
//! noted entry on: nothing revoked while it was away is missed.
//!
//! # A Redis that lost its data
//!
//! A Redis restarted without persistence comes back empty. Each instance
//! remembers the random value of `PREFIX:epoch`; finding it missing or
//! changed, it writes every unexpired revocation it knows back into Redis
//! (announcing each on the stream), so no revocation is lost as long as one
//! instance that knew it lives. Refresh-token families are lost: their
//! tokens are answered `invalid_grant` and users log in again. Turn on
//! Redis's AOF persistence (`appendonly yes`) to keep them.

mod revocations;
mod scripts;
mod sessions;

mod counters;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::counters::StoreError;
use crate::store::DEFAULT_MAX_FAMILIES_PER_SUBJECT;

use self::revocations::{Follower, Revocations};

/// The key prefix a [`RedisStore`] uses unless told otherwise.
pub const DEFAULT_PREFIX: &str = "tower-auth";

/// The staleness bound a [`RedisStore`] keeps unless told otherwise; see
/// [`RedisStoreBuilder::max_staleness`].
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(2);

/// The smallest staleness bound a [`RedisStore`] accepts.
pub const MIN_STALENESS: Duration = Duration::from_millis(100);

/// The state an app's instances share, on Redis; see the
/// [module docs](self). Cheap to clone (clones share the connection and the
/// local state); the background task that follows revocations stops when
/// the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_auth::store::StoreError> {
/// use std::time::Duration;
/// use tower_auth::redis::RedisStore;
///
/// // The defaults: prefix `tower-auth`, a 2 s staleness bound, fail closed.
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .prefix("my-app")
///     .max_staleness(Duration::from_secs(1))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reconnects by itself; commands are multiplexed over one connection.
    connection: ConnectionManager,
    prefix: String,
    /// This instance's copy of the revoked sessions.
    revocations: Arc<Revocations>,
    max_families: usize,
    /// The task that feeds `revocations`; aborted with the last clone.
    follower: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("max_staleness", &self.inner.revocations.max_staleness())
            .field("fail_open", &self.inner.revocations.fail_open())
            .finish_non_exhaustive()
    }
}

/// Options of a [`RedisStore`], from [`RedisStore::builder`].
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    max_staleness: Duration,
    fail_open: bool,
    max_families: usize,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("max_staleness", &self.max_staleness)
            .field("fail_open", &self.fail_open)
            .field("max_families_per_subject", &self.max_families)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The key prefix (default [`DEFAULT_PREFIX`]). Every instance of one
    /// app uses the same; two apps on one Redis use different ones.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The staleness bound (default [`DEFAULT_MAX_STALENESS`], 2 s, at
    /// least [`MIN_STALENESS`]): how old this instance's copy of the revoked
    /// sessions may be before a request with a session is refused (503) — or,
    /// with [`fail_open`](Self::fail_open), accepted with a warning.
    ///
    /// The copy is refreshed by a read that blocks for at most a quarter of
    /// the bound (the heartbeat: 500 ms by default), so in normal operation
    /// it is never older than a heartbeat plus a round trip; the other three
    /// quarters absorb a late beat or a busy scheduler without refusing
    /// anyone. 2 s is far shorter than an access token's life, and a
    /// heartbeat every 500 ms costs Redis next to nothing.
    pub fn max_staleness(mut self, bound: Duration) -> Self {
        self.max_staleness = bound;
        self
    }

    /// What to do when this instance's copy of the revoked sessions is
    /// older than the [bound](Self::max_staleness) (Redis unreachable):
    /// `false` (the default) refuses requests that carry a session with
    /// 503 `temporarily_unavailable`; `true` accepts them, logging a
    /// warning, and so may accept a token revoked meanwhile on another
    /// instance. Revocations this instance knows of are refused either way.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// The most refresh-token families one subject may keep (default
    /// [`DEFAULT_MAX_FAMILIES_PER_SUBJECT`], as
    /// [`MemoryStore`](crate::store::MemoryStore)); a login beyond that ends
    /// their oldest and revokes its session. At least 1.
    pub fn max_families_per_subject(mut self, max: usize) -> Self {
        self.max_families = max.max(1);
        self
    }

    /// Connects, loads the revoked sessions and starts following them.
    /// Fails when Redis is unreachable, or the options are impossible.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        if self.max_staleness < MIN_STALENESS {
            return Err(StoreError::new(
                "RedisStore: the staleness bound must be at least 100 ms",
            ));
        }
        let heartbeat = self.max_staleness / 4;
        let client = redis::Client::open(self.url.as_str()).map_err(store_error)?;
        // A command waits at most about a second for an answer or a new
        // connection, so an outage is a prompt 503, not a hung request.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(store_error)?;
        let revocations = Arc::new(Revocations::new(self.max_staleness, self.fail_open));
        // The follower's own connection: a blocking read would stall the
        // shared one. Its reads block for a heartbeat, so they may take
        // that long to answer.
        let follower_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(heartbeat + Duration::from_secs(1)));
        let mut follower = Follower::new(
            client,
            follower_config,
            &self.prefix,
            Arc::clone(&revocations),
            heartbeat,
        );
        let first = follower.connect_and_resync().await.map_err(store_error)?;
        let task = tokio::spawn(follower.run(first));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: self.prefix,
                revocations,
                max_families: self.max_families,
                follower: task.abort_handle(),
            }),
        })
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port/db`), with the
    /// defaults: prefix [`DEFAULT_PREFIX`], staleness bound
    /// [`DEFAULT_MAX_STALENESS`], fail closed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// A store with options; finish with
    /// [`connect`](RedisStoreBuilder::connect).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            max_staleness: DEFAULT_MAX_STALENESS,
            fail_open: false,
            max_families: DEFAULT_MAX_FAMILIES_PER_SUBJECT,
        }
    }

    /// A connection for one command or script (a clone of the shared,
    /// multiplexed one).
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.inner.connection.clone()
    }

    /// The key `prefix:kind:id`.
    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.inner.prefix)
    }
}

/// A Redis error as the store reports it (logged, never sent).
pub(crate) fn store_error(error: redis::RedisError) -> StoreError {
    StoreError(Box::new(error))
}

/// For the tests of this module's parts: the Redis at `REDIS_URL` (default
/// `redis://127.0.0.1:6379`). Skipped with a notice when it is
/// unreachable, failing under `CI=true`.
#[cfg(test)]
pub(crate) mod test_redis {
    use std::time::Duration;

    use super::{RedisStore, RedisStoreBuilder};

    pub(crate) fn url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    /// A store on a prefix of its own, with `options`; `None` (after a
    /// notice) when Redis is unreachable outside CI.
    pub(crate) async fn store(
        test: &str,
        options: impl FnOnce(RedisStoreBuilder) -> RedisStoreBuilder,
    ) -> Option<RedisStore> {
        let prefix = format!("test-{test}-{}", uuid::Uuid::new_v4().simple());
        let builder = options(RedisStore::builder(url()).prefix(prefix));
        let connected = tokio::time::timeout(Duration::from_secs(5), builder.connect()).await;
        match connected {
            Ok(Ok(store)) => Some(store),
            failed if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{test}: Redis is unreachable under CI=true: {failed:?}")
            }
            failed => {
                eprintln!("SKIPPED {test}: Redis is unreachable ({failed:?}); set REDIS_URL");
                None
            }
        }
    }
}
