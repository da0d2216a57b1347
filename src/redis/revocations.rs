//! This instance's copy of the revoked sessions, and the task that keeps it
//! up to date from Redis; see the [`redis`](super) module docs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, RedisResult};

use super::scripts;
use crate::counters::StoreError;
use crate::store::SessionStatus;
use crate::token::unix_now;

/// How long the revocation stream keeps entries (milliseconds). A reader
/// that has not read for half of it reloads everything instead.
pub(super) const STREAM_RETENTION_MS: u64 = 10 * 60 * 1000;

/// How often, at most, the local set sweeps out revocations that ran out
/// (seconds).
const SWEEP_INTERVAL: u64 = 60;

/// The most revocations one script call writes back after Redis lost them.
const RESEED_BATCH: usize = 500;

/// The revoked sessions this instance knows of, and how fresh that
/// knowledge is.
pub(super) struct Revocations {
    /// Session id -> until when it stays revoked (Unix seconds).
    revoked: RwLock<HashMap<String, u64>>,
    /// The Unix time after which the next insert sweeps.
    next_sweep: AtomicU64,
    /// The origin of `fresh_ms`.
    base: Instant,
    /// When (milliseconds after `base`, plus one) the set was last known to
    /// hold every revocation Redis had; 0: never.
    fresh_ms: AtomicU64,
    max_staleness: Duration,
    fail_open: bool,
    /// Whether the current stale spell has been logged (once per spell).
    stale_logged: AtomicBool,
}

impl Revocations {
    pub(super) fn new(max_staleness: Duration, fail_open: bool) -> Self {
        Revocations {
            revoked: RwLock::new(HashMap::new()),
            next_sweep: AtomicU64::new(0),
            base: Instant::now(),
            fresh_ms: AtomicU64::new(0),
            max_staleness,
            fail_open,
            stale_logged: AtomicBool::new(false),
        }
    }

    pub(super) fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    pub(super) fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// The request path's check: from memory only. A session this instance
    /// knows is revoked is refused whatever the freshness; any other is
    /// accepted only while the set is within its staleness bound (or with
    /// fail-open).
    pub(super) fn status(&self, sid: &str) -> Result<SessionStatus, StoreError> {
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sid)
            .is_some_and(|until| *until > unix_now());
        if revoked {
            return Ok(SessionStatus::Revoked);
        }
        if self.age().is_some_and(|age| age <= self.max_staleness) {
            // A plain load first: the usual case writes nothing shared.
            if self.stale_logged.load(Ordering::Relaxed)
                && self.stale_logged.swap(false, Ordering::Relaxed)
            {
                tracing::info!("revoked sessions are fresh again");
            }
            return Ok(SessionStatus::Active);
        }
        let first = !self.stale_logged.swap(true, Ordering::Relaxed);
        if self.fail_open {
            if first {
                tracing::warn!(
                    bound_ms = self.max_staleness.as_millis() as u64,
                    "revoked sessions are staler than their bound (Redis unreachable): \
                     accepting sessions anyway (fail-open)"
                );
            }
            Ok(SessionStatus::Active)
        } else {
            if first {
                tracing::warn!(
                    bound_ms = self.max_staleness.as_millis() as u64,
                    "revoked sessions are staler than their bound (Redis unreachable): \
                     refusing requests with a session (503) until they catch up"
                );
            }
            Err(StoreError::new(
                "the revoked sessions are staler than their bound: Redis is unreachable",
            ))
        }
    }

    /// How long ago the set was last known fresh (`None`: never).
    fn age(&self) -> Option<Duration> {
        let fresh = self.fresh_ms.load(Ordering::Acquire).checked_sub(1)?;
        let now = self.base.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(fresh)))
    }

    /// The set held every revocation Redis had when `sent` (a read) was
    /// sent.
    fn mark_fresh(&self, sent: Instant) {
        let ms = sent.saturating_duration_since(self.base).as_millis() as u64 + 1;
        self.fresh_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Remembers that `sid` is revoked until `until` (never shortening an
    /// earlier revocation).
    pub(super) fn insert(&self, sid: &str, until: u64) {
        self.merge(std::iter::once((sid.to_owned(), until)));
    }

    fn merge(&self, entries: impl IntoIterator<Item = (String, u64)>) {
        let now = unix_now();
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        for (sid, until) in entries {
            if until > now {
                let entry = revoked.entry(sid).or_insert(until);
                *entry = (*entry).max(until);
            }
        }
        if now >= self.next_sweep.load(Ordering::Relaxed) {
            self.next_sweep
                .store(now + SWEEP_INTERVAL, Ordering::Relaxed);
            revoked.retain(|_, until| *until > now);
        }
    }

    /// Every revocation still in force, for writing back into Redis.
    fn unexpired(&self) -> Vec<(String, u64)> {
        let now = unix_now();
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(sid, until)| (sid.clone(), *until))
            .collect()
    }
}

/// The background task that feeds [`Revocations`] from Redis, on a
/// connection of its own.
pub(super) struct Follower {
    client: redis::Client,
    config: AsyncConnectionConfig,
    prefix: String,
    stream: String,
    revoked_key: String,
    epoch_key: String,
    local: Arc<Revocations>,
    heartbeat: Duration,
    /// The value of `PREFIX:epoch` this instance last saw.
    epoch: Option<String>,
    /// The last stream entry applied.
    last_id: String,
    /// When the last read succeeded.
    last_read: Instant,
}

impl Follower {
    pub(super) fn new(
        client: redis::Client,
        config: AsyncConnectionConfig,
        prefix: &str,
        local: Arc<Revocations>,
        heartbeat: Duration,
    ) -> Self {
        Follower {
            client,
            config,
            prefix: prefix.to_owned(),
            stream: format!("{prefix}:revocations"),
            revoked_key: format!("{prefix}:revoked"),
            epoch_key: format!("{prefix}:epoch"),
            local,
            heartbeat,
            epoch: None,
            last_id: "0-0".to_owned(),
            last_read: Instant::now(),
        }
    }

    /// A new connection, caught up with Redis.
    pub(super) async fn connect_and_resync(&mut self) -> RedisResult<MultiplexedConnection> {
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        self.resync(&mut connection).await?;
        Ok(connection)
    }

    /// Follows the stream until the task is aborted (the last
    /// [`RedisStore`](super::RedisStore) dropped), reconnecting and catching
    /// up after every failure.
    pub(super) async fn run(mut self, mut connection: MultiplexedConnection) {
        let mut failures: u32 = 0;
        loop {
            if let Err(error) = self.follow(&mut connection).await {
                tracing::warn!(%error, "lost Redis: revoked sessions not followed until it is back");
            } else {
                continue;
            }
            loop {
                failures = failures.saturating_add(1);
                // 50 ms, 100 ms, ... at most a heartbeat between attempts.
                let pause = Duration::from_millis(50)
                    .saturating_mul(2u32.saturating_pow(failures.min(10)))
                    .min(self.heartbeat);
                tokio::time::sleep(pause).await;
                match self.connect_and_resync().await {
                    Ok(fresh) => {
                        tracing::info!("Redis is back: revoked sessions caught up");
                        connection = fresh;
                        failures = 0;
                        break;
                    }
                    Err(error) => tracing::debug!(%error, "Redis still unreachable"),
                }
            }
        }
    }

    /// One beat: checks the epoch and reads the stream, blocking for at
    /// most a heartbeat. `Ok` when the connection is still good.
    async fn follow(&mut self, connection: &mut MultiplexedConnection) -> RedisResult<()> {
        if self.last_read.elapsed() > Duration::from_millis(STREAM_RETENTION_MS / 2) {
            // Entries we never read may have been trimmed: reload.
            return self.resync(connection).await;
        }
        let sent = Instant::now();
        let (epoch, reply): (Option<String>, Option<StreamReadReply>) = redis::pipe()
            .cmd("GET")
            .arg(&self.epoch_key)
            .cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(self.heartbeat.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&self.last_id)
            .query_async(connection)
            .await?;
        self.last_read = Instant::now();
        for key in reply.into_iter().flat_map(|reply| reply.keys) {
            let entries = key.ids.iter().filter_map(|entry| {
                let sid: String = entry.get("sid")?;
                let until: u64 = entry.get("until")?;
                Some((sid, until))
            });
            self.local.merge(entries.collect::<Vec<_>>());
            if let Some(last) = key.ids.last() {
                self.last_id.clone_from(&last.id);
            }
        }
        if epoch.is_none() || epoch != self.epoch {
            // Redis lost its data (or another instance noticed first).
            return self.resync(connection).await;
        }
        self.local.mark_fresh(sent);
        Ok(())
    }

    /// Catches up with Redis from scratch: notes the stream's last entry,
    /// writes back what Redis lost (if it did), loads every unexpired
    /// revocation, and reads the stream from the noted entry on.
    async fn resync(&mut self, connection: &mut MultiplexedConnection) -> RedisResult<()> {
        let last: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(connection)
            .await?;
        let noted = last
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone());
        self.check_epoch(connection).await?;
        let sent = Instant::now();
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.revoked_key)
            .arg(format!("({}", unix_now()))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(connection)
            .await?;
        self.local.merge(
            entries
                .into_iter()
                .map(|(sid, until)| (sid, until as u64))
                .collect::<Vec<_>>(),
        );
        self.last_id = noted;
        self.last_read = Instant::now();
        self.local.mark_fresh(sent);
        Ok(())
    }

    /// Compares `PREFIX:epoch` with the value this instance remembers. When
    /// it is missing or changed, Redis lost its data (restarted without
    /// persistence, flushed): every unexpired revocation this instance
    /// knows is written back, and the epoch set anew.
    async fn check_epoch(&mut self, connection: &mut MultiplexedConnection) -> RedisResult<()> {
        let current: Option<String> = redis::cmd("GET")
            .arg(&self.epoch_key)
            .query_async(connection)
            .await?;
        if current.is_some() && current == self.epoch {
            return Ok(());
        }
        if self.epoch.is_some() {
            let known = self.local.unexpired();
            tracing::warn!(
                revocations = known.len(),
                "Redis lost its data (restarted without persistence?): writing back the revoked \
                 sessions this instance knows; refresh-token families are lost"
            );
            for batch in known.chunks(RESEED_BATCH) {
                let mut invocation = scripts::REVOKE.prepare_invoke();
                invocation
                    .arg(&self.prefix)
                    .arg(unix_now())
                    .arg(STREAM_RETENTION_MS);
                for (sid, until) in batch {
                    invocation.arg(sid).arg(*until);
                }
                invocation.invoke_async::<()>(connection).await?;
            }
        }
        if current.is_none() {
            let fresh = uuid::Uuid::new_v4().simple().to_string();
            redis::cmd("SET")
                .arg(&self.epoch_key)
                .arg(fresh)
                .arg("NX")
                .query_async::<()>(connection)
                .await?;
        }
        self.epoch = redis::cmd("GET")
            .arg(&self.epoch_key)
            .query_async(connection)
            .await?;
        Ok(())
    }
}
