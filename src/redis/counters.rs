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

#[cfg(test)]
mod tests {
    //! The Lua GCRA against governor's own answers, on the Redis at
    //! `REDIS_URL` (default `redis://127.0.0.1:6379`; skipped with a notice
    //! when unreachable, failing under `CI=true`). Each test uses keys of
    //! its own.

    use std::num::NonZeroU32;
    use std::time::Duration;

    use governor::clock::{Clock, DefaultClock};
    use governor::{DefaultKeyedRateLimiter, Quota};

    use super::*;

    async fn store(test: &str) -> Option<RedisStore> {
        crate::redis::test_redis::store(test, |builder| builder).await
    }

    fn key(test: &str) -> String {
        format!("test:{test}:{}", uuid::Uuid::new_v4().simple())
    }

    fn n(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// governor's answer for the same charge, as a [`GcraOutcome`].
    fn governor(limiter: &DefaultKeyedRateLimiter<u8>, n: u32) -> GcraOutcome {
        match limiter.check_key_n(&0, NonZeroU32::new(n).unwrap()) {
            Ok(Ok(())) => GcraOutcome::Allowed,
            Ok(Err(not_until)) => {
                GcraOutcome::Wait(not_until.wait_time_from(DefaultClock::default().now()))
            }
            Err(_) => GcraOutcome::TooLarge,
        }
    }

    /// Same kind of answer, and waits within `slack` of each other (the
    /// two clocks ran a little apart between the calls).
    fn same(redis: GcraOutcome, governor: GcraOutcome, slack: Duration) {
        match (redis, governor) {
            (GcraOutcome::Wait(a), GcraOutcome::Wait(b)) => {
                assert!(a.abs_diff(b) <= slack, "redis waits {a:?}, governor {b:?}");
            }
            (a, b) => assert_eq!(a, b),
        }
    }

    #[tokio::test]
    async fn the_lua_gcra_answers_as_governor_does() {
        let Some(store) = store("the_lua_gcra_answers_as_governor_does").await else {
            return;
        };
        // 5 per hour: one unit back every 12 minutes, so the test's own
        // time barely moves the answers.
        let rate = Gcra::per_period(5, Duration::from_secs(3600)).unwrap();
        let quota = Quota::with_period(rate.emission_interval)
            .unwrap()
            .allow_burst(rate.burst);
        let limiter = DefaultKeyedRateLimiter::<u8>::keyed(quota);
        let key = key("gcra");
        let slack = Duration::from_secs(2);
        // The burst: 2 + 3 units at once, then nothing more; a refused
        // charge spends nothing; 2 units wait one interval more than 1;
        // more than the burst is TooLarge, not a wait.
        for (units, expect_allowed) in [(2, true), (3, true), (1, false), (2, false), (1, false)] {
            let redis = store
                .charge(&key, rate, n(units), Charge::Spend)
                .await
                .unwrap();
            same(redis, governor(&limiter, units), slack);
            assert_eq!(
                redis == GcraOutcome::Allowed,
                expect_allowed,
                "{units}: {redis:?}"
            );
        }
        let one = store.charge(&key, rate, n(1), Charge::Spend).await.unwrap();
        let two = store.charge(&key, rate, n(2), Charge::Spend).await.unwrap();
        match (one, two) {
            (GcraOutcome::Wait(one), GcraOutcome::Wait(two)) => {
                assert!(one.abs_diff(rate.emission_interval) <= slack, "{one:?}");
                assert!(
                    (two - one).abs_diff(rate.emission_interval) <= slack,
                    "{two:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        for units in [6, 100] {
            let redis = store
                .charge(&key, rate, n(units), Charge::Spend)
                .await
                .unwrap();
            assert_eq!(redis, GcraOutcome::TooLarge);
            assert_eq!(governor(&limiter, units), GcraOutcome::TooLarge);
        }
    }

    #[tokio::test]
    async fn a_steady_rate_comes_back_one_unit_per_interval() {
        let Some(store) = store("a_steady_rate_comes_back_one_unit_per_interval").await else {
            return;
        };
        // 1 unit per 50 ms, burst 1: the second charge waits, and once the
        // wait is over a charge is allowed again (polled, never timed).
        let rate = Gcra::per_period(1, Duration::from_millis(50)).unwrap();
        let key = key("steady");
        let first = store.charge(&key, rate, n(1), Charge::Spend).await.unwrap();
        assert_eq!(first, GcraOutcome::Allowed);
        let GcraOutcome::Wait(wait) = store.charge(&key, rate, n(1), Charge::Spend).await.unwrap()
        else {
            panic!("a burst of 1 let a second unit through");
        };
        assert!(wait <= rate.emission_interval, "{wait:?}");
        let mut allowed = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if store.charge(&key, rate, n(1), Charge::Spend).await.unwrap() == GcraOutcome::Allowed
            {
                allowed = true;
                break;
            }
        }
        assert!(allowed, "the rate never gave a unit back");
    }

    #[tokio::test]
    async fn a_dry_run_spends_nothing_and_keys_expire_when_full_again() {
        let Some(store) = store("a_dry_run_spends_nothing_and_keys_expire_when_full_again").await
        else {
            return;
        };
        let rate = Gcra::per_period(2, Duration::from_secs(60)).unwrap();
        let key = key("dry");
        for _ in 0..5 {
            let outcome = store
                .charge(&key, rate, n(2), Charge::DryRun)
                .await
                .unwrap();
            assert_eq!(outcome, GcraOutcome::Allowed);
        }
        let mut connection = store.connection();
        let exists: bool = redis::cmd("EXISTS")
            .arg(store.key("gcra", &key))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(!exists, "a dry run wrote its key");
        assert_eq!(
            store.charge(&key, rate, n(1), Charge::Spend).await.unwrap(),
            GcraOutcome::Allowed
        );
        // One unit spent of 2 per minute: full again within 30 s.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(store.key("gcra", &key))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!((1..=30_000).contains(&ttl), "{ttl}");
        store.forget(&key).await.unwrap();
        assert_eq!(
            store.charge(&key, rate, n(2), Charge::Spend).await.unwrap(),
            GcraOutcome::Allowed
        );
    }

    #[tokio::test]
    async fn leases_are_capped_released_and_lapse_when_not_renewed() {
        let Some(store) = store("leases_are_capped_released_and_lapse_when_not_renewed").await
        else {
            return;
        };
        let key = key("leases");
        let long = Duration::from_secs(60);
        assert!(store.acquire_lease(&key, "a", 2, long).await.unwrap());
        assert!(store.acquire_lease(&key, "b", 2, long).await.unwrap());
        assert!(!store.acquire_lease(&key, "c", 2, long).await.unwrap());
        // Renewing a held lease is not a new one.
        assert!(store.renew_lease(&key, "a", 2, long).await.unwrap());
        store.release_lease(&key, "a").await.unwrap();
        assert!(store.acquire_lease(&key, "c", 2, long).await.unwrap());
        // A lease nobody renews lapses by itself (a dead instance's).
        store.release_lease(&key, "c").await.unwrap();
        assert!(
            store
                .acquire_lease(&key, "short", 2, Duration::from_millis(100))
                .await
                .unwrap()
        );
        assert!(!store.acquire_lease(&key, "d", 2, long).await.unwrap());
        let mut freed = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if store.acquire_lease(&key, "d", 2, long).await.unwrap() {
                freed = true;
                break;
            }
        }
        assert!(freed, "a lapsed lease kept its slot");
        // The set expires with its longest lease.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(store.key("leases", &key))
            .query_async(&mut store.connection())
            .await
            .unwrap();
        assert!((1..=60_000).contains(&ttl), "{ttl}");
    }
}
