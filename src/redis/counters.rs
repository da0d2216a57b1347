//! [`SharedCounters`] on Redis: the GCRA and the leases behind shared
//! [rate limits](crate::limit::RateLimit::shared), [connection
//! caps](crate::limit::ConnectionLimit::shared) and the shared [login
//! throttle](crate::throttle::LoginThrottleBuilder::shared).
//!
//! | key | holds | expires |
//! | --- | --- | --- |
//! | `PREFIX:gcra:KEY` | a GCRA's theoretical arrival time (µs, server clock) | when it passes: the allowance is full again |
//! | `PREFIX:leases:KEY` | a sorted set: lease id -> expiry (ms, server clock) | with its longest lease |
//!
//! Each operation is one Lua script (or one command), so it is atomic in
//! Redis: instances racing on a key behave as one would. Both scripts read
//! the time from Redis (`TIME`), never from the instance, so instances
//! whose clocks disagree still share one clock. The scripts name the one
//! key they touch in `KEYS`.

use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{RedisStore, store_error};
use crate::counters::{Charge, Gcra, GcraOutcome, SharedCounters, StoreError};

/// The GCRA, as governor computes it (`governor::gcra`), on the server's
/// clock. Returns 0 when the charge conforms, else the wait in whole
/// microseconds (at least 1).
///
/// Times are microseconds since 2024-01-01 (a Lua number is a double: an
/// offset from a recent epoch keeps about 15 ns of precision, where
/// microseconds since 1970 would keep 0.25 µs); the emission interval may
/// be fractional. The caller has checked 1 <= n <= burst.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1]: the key's theoretical arrival time (TAT), absent when full
-- ARGV[1]: emission interval T, in microseconds (may be fractional)
-- ARGV[2]: burst: the most units held at once
-- ARGV[3]: n, the units to charge (1 <= n <= burst)
-- ARGV[4]: '1' to spend, '0' for a dry run
local time = redis.call('TIME')
local now = (tonumber(time[1]) - 1704067200) * 1000000 + tonumber(time[2])
local t = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
-- The delay tolerance: what the burst holds beyond its first unit.
local tau = t * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
-- n units conform once now >= TAT + (n - 1) T - tau.
local earliest = tat + (n - 1) * t - tau
if now < earliest then
  return math.max(1, math.ceil(earliest - now))
end
if ARGV[4] == '1' then
  local new_tat = math.max(tat, now) + n * t
  -- The key lives until its TAT passes: then the allowance is full and
  -- an absent key means the same.
  local ttl = math.max(1, math.ceil((new_tat - now) / 1000))
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
end
return 0
",
    )
});

/// Takes or renews a lease: allowed when the lease is held already or
/// fewer than `max` unexpired leases are. Returns 1 when held, else 0.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1]: the sorted set of leases: member = lease id, score = expiry (ms)
-- ARGV[1]: the lease id
-- ARGV[2]: max, the most unexpired leases at once
-- ARGV[3]: the lease's time to live, in milliseconds
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Leases whose holders stopped renewing them (a dead instance) lapse here.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
-- The set lives as long as its longest lease.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
",
    )
});

/// A duration in whole milliseconds, at least 1.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisStore {
    async fn lease(
        &self,
        key: &str,
        lease: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let held: i64 = LEASE
            .key(self.key("leases", key))
            .arg(lease)
            .arg(max)
            .arg(millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(held == 1)
    }
}

impl SharedCounters for RedisStore {
    async fn charge(
        &self,
        key: &str,
        rate: Gcra,
        n: NonZeroU32,
        charge: Charge,
    ) -> Result<GcraOutcome, StoreError> {
        if n > rate.burst {
            return Ok(GcraOutcome::TooLarge);
        }
        // Microseconds, fractional: a byte budget's interval is often a few µs.
        let interval = rate.emission_interval.as_nanos() as f64 / 1000.0;
        let spend = match charge {
            Charge::Spend => "1",
            Charge::DryRun => "0",
        };
        let wait: u64 = GCRA
            .key(self.key("gcra", key))
            .arg(format!("{interval:.3}"))
            .arg(rate.burst.get())
            .arg(n.get())
            .arg(spend)
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(match wait {
            0 => GcraOutcome::Allowed,
            micros => GcraOutcome::Wait(Duration::from_micros(micros)),
        })
    }

    async fn forget(&self, key: &str) -> Result<(), StoreError> {
        redis::cmd("DEL")
            .arg(self.key("gcra", key))
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(store_error)
    }

    async fn acquire_lease(
        &self,
        key: &str,
        lease: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.lease(key, lease, max, ttl).await
    }

    async fn renew_lease(
        &self,
        key: &str,
        lease: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // The same script: a lease still held is extended; one that lapsed
        // is taken again if a slot is free.
        self.lease(key, lease, max, ttl).await
    }

    async fn release_lease(&self, key: &str, lease: &str) -> Result<(), StoreError> {
        redis::cmd("ZREM")
            .arg(self.key("leases", key))
            .arg(lease)
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(store_error)
    }

    fn namespace(&self) -> &str {
        &self.inner.prefix
    }
}
