//! [`SharedStore`] on Redis: refresh-token families and revoked sessions;
//! see the [`redis`](super) module docs.

use std::time::Duration;

use super::revocations::STREAM_RETENTION_MS;
use super::{RedisStore, scripts, store_error};
use crate::counters::StoreError;
use crate::session::{Family, Rotation, TokenHash};
use crate::store::{SessionStatus, SharedStore};
use crate::token::unix_now;

/// How many times a rotation reads the family again after another request
/// changed it between its read and its write. Each retry means another
/// request on the same family succeeded meanwhile, so a handful is plenty;
/// past it, the refresh answers 503 rather than loop.
const MAX_ROTATE_ATTEMPTS: usize = 8;

/// What a compare-and-set does when the family is still as read.
enum Write<'a> {
    /// Store the rotated family and index its new token.
    Keep(&'a Family, &'a TokenHash),
    /// Revoke the session (reuse).
    Revoke(u64),
    /// Forget the family (expired).
    Forget,
}

impl RedisStore {
    /// The JSON of the family that holds `token`, as Redis has it.
    async fn family_json(&self, token: &TokenHash) -> Result<Option<String>, StoreError> {
        scripts::FIND
            .arg(&self.inner.prefix)
            .arg(token.to_string())
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)
    }

    /// Writes `write` if family `sid` is still `read`; `false` when it
    /// changed.
    async fn compare_and_set(
        &self,
        sid: &str,
        read: &str,
        write: Write<'_>,
    ) -> Result<bool, StoreError> {
        let mut invocation = scripts::COMPARE_AND_SET.prepare_invoke();
        invocation
            .arg(&self.inner.prefix)
            .arg(unix_now())
            .arg(STREAM_RETENTION_MS)
            .arg(sid)
            .arg(read);
        match write {
            Write::Keep(family, successor) => {
                invocation
                    .arg("keep")
                    .arg(to_json(family)?)
                    .arg(family.expires_at())
                    .arg(successor.to_string())
                    .arg(family.absolute_expiry);
            }
            Write::Revoke(until) => {
                invocation.arg("revoke").arg(until);
            }
            Write::Forget => {
                invocation.arg("forget");
            }
        }
        let done: i64 = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }
}

fn to_json(family: &Family) -> Result<String, StoreError> {
    serde_json::to_string(family).map_err(|error| StoreError(Box::new(error)))
}

fn from_json(json: &str) -> Result<Family, StoreError> {
    serde_json::from_str(json).map_err(|error| StoreError(Box::new(error)))
}

/// Refresh-token families and revoked sessions on Redis, with this
/// instance's own copy of the revoked sessions for the request path; see
/// the [`redis`](super) module docs for the keys, the staleness bound and
/// what happens when Redis is unreachable or loses its data.
///
/// A Redis error in any method but `session_status` is a [`StoreError`]
/// (503 `temporarily_unavailable`). A session revoked here is in this
/// instance's copy at once, even when writing it to Redis fails (the client
/// then gets 503 and may retry).
impl SharedStore for RedisStore {
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError> {
        self.inner.revocations.status(sid)
    }

    async fn revoke_session(&self, sid: &str, until: u64) -> Result<(), StoreError> {
        self.inner.revocations.insert(sid, until);
        scripts::REVOKE
            .arg(&self.inner.prefix)
            .arg(unix_now())
            .arg(STREAM_RETENTION_MS)
            .arg(sid)
            .arg(until)
            .invoke_async::<()>(&mut self.connection())
            .await
            .map_err(store_error)
    }

    async fn create_family(&self, family: Family, revoke_until: u64) -> Result<(), StoreError> {
        let evicted: Vec<String> = scripts::CREATE
            .arg(&self.inner.prefix)
            .arg(unix_now())
            .arg(STREAM_RETENTION_MS)
            .arg(&family.sid)
            .arg(&family.subject)
            .arg(to_json(&family)?)
            .arg(family.expires_at())
            .arg(family.current.to_string())
            .arg(family.absolute_expiry)
            .arg(self.inner.max_families)
            .arg(revoke_until)
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        for sid in &evicted {
            self.inner.revocations.insert(sid, revoke_until);
        }
        Ok(())
    }

    async fn find_family(&self, token: &TokenHash) -> Result<Option<Family>, StoreError> {
        let Some(json) = self.family_json(token).await? else {
            return Ok(None);
        };
        let family = from_json(&json)?;
        Ok(family.holds(token).then_some(family))
    }

    async fn rotate(
        &self,
        presented: &TokenHash,
        successor: &TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> Result<Rotation, StoreError> {
        for _ in 0..MAX_ROTATE_ATTEMPTS {
            let Some(read) = self.family_json(presented).await? else {
                return Ok(Rotation::Unknown);
            };
            let family = from_json(&read)?;
            if !family.holds(presented) {
                return Ok(Rotation::Unknown);
            }
            let sid = family.sid.clone();
            // The rules are Family::rotate's; Redis only keeps the result.
            let (rotation, kept) = family.rotate(presented, successor, now, grace);
            let write = match (&rotation, &kept) {
                (Rotation::Rotated(_), Some(kept)) => Write::Keep(kept, successor),
                (Rotation::Reused(_), _) => Write::Revoke(revoke_until),
                (_, None) => Write::Forget,
                // Replayed, Unknown: nothing changes.
                (_, Some(_)) => return Ok(rotation),
            };
            let revoked = matches!(write, Write::Revoke(_));
            if self.compare_and_set(&sid, &read, write).await? {
                if revoked {
                    self.inner.revocations.insert(&sid, revoke_until);
                }
                return Ok(rotation);
            }
            tracing::debug!("refresh-token family changed while rotating: reading it again");
        }
        Err(StoreError::new(
            "a refresh-token family kept changing while rotating",
        ))
    }
}

#[cfg(test)]
mod tests {
    //! The store's semantics against a real Redis (`REDIS_URL`, default
    //! `redis://127.0.0.1:6379`): the same conformance tests as
    //! `MemoryStore`'s, and what only a shared store must do. Skipped with a
    //! notice when Redis is unreachable, failing under `CI=true`.

    use std::time::Duration;

    use super::RedisStore;
    use crate::redis::test_redis;
    use crate::session::{RefreshToken, Rotation};
    use crate::store::conformance::{self, family};
    use crate::store::{SessionStatus, SharedStore};
    use crate::token::unix_now;

    /// A store on its own prefix keeping `max_families` per subject.
    async fn store(test: &str, max_families: usize) -> Option<RedisStore> {
        test_redis::store(test, |builder| {
            builder.max_families_per_subject(max_families)
        })
        .await
    }

    #[tokio::test]
    async fn rotation_grace_and_reuse() {
        let Some(store) = store("rotation", 100).await else {
            return;
        };
        conformance::rotation_grace_and_reuse(&store, unix_now()).await;
    }

    #[tokio::test]
    async fn a_spent_token_after_the_grace_window_is_reuse() {
        let Some(store) = store("grace", 100).await else {
            return;
        };
        conformance::a_spent_token_after_the_grace_window_is_reuse(&store, unix_now()).await;
    }

    #[tokio::test]
    async fn families_expire_when_idle_or_at_their_absolute_lifetime() {
        let Some(store) = store("expiry", 100).await else {
            return;
        };
        conformance::families_expire_when_idle_or_at_their_absolute_lifetime(&store, unix_now())
            .await;
    }

    #[tokio::test]
    async fn logout_revokes_one_session_and_its_family_only() {
        let Some(store) = store("logout", 100).await else {
            return;
        };
        conformance::logout_revokes_one_session_and_its_family_only(&store).await;
    }

    #[tokio::test]
    async fn a_subject_keeps_at_most_its_families() {
        let Some(store) = store("bounded", 3).await else {
            return;
        };
        conformance::a_subject_keeps_at_most_its_families(&store).await;
    }

    /// Two requests (or instances) racing on one token: exactly one
    /// rotates; every other gets the same successor (replayed).
    #[tokio::test]
    async fn racing_rotations_rotate_once() {
        let Some(store) = store("race", 100).await else {
            return;
        };
        let now = unix_now();
        let first = RefreshToken::generate().unwrap();
        let fam = family(&first, "race", "u", now);
        let successor = first.successor(&fam.key);
        store.create_family(fam, now + 1800).await.unwrap();
        let (p, s) = (first.hash(), successor.hash());
        let outcomes = futures_join_all((0..8).map(|_| {
            let store = store.clone();
            async move {
                store
                    .rotate(&p, &s, now + 1, Duration::from_secs(5), now + 1800)
                    .await
                    .unwrap()
            }
        }))
        .await;
        let rotated = outcomes
            .iter()
            .filter(|o| matches!(o, Rotation::Rotated(_)))
            .count();
        let replayed = outcomes
            .iter()
            .filter(|o| matches!(o, Rotation::Replayed(_)))
            .count();
        assert_eq!((rotated, replayed), (1, 7), "{outcomes:?}");
        let kept = store.find_family(&s).await.unwrap().unwrap();
        assert_eq!(kept.current, s);
        assert!(kept.spent.is_empty(), "one rotation, not several");
    }

    /// A revocation made through one store is seen by another store on the
    /// same prefix (another instance), from memory.
    #[tokio::test]
    async fn a_revocation_reaches_another_instance() {
        let Some(a) = store("reach", 100).await else {
            return;
        };
        let b = RedisStore::builder(test_redis::url())
            .prefix(a.inner.prefix.clone())
            .connect()
            .await
            .unwrap();
        a.revoke_session("gone", unix_now() + 60).await.unwrap();
        for _ in 0..100 {
            if b.session_status("gone").unwrap() == SessionStatus::Revoked {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the revocation never reached the other instance");
    }

    /// The follower task ends with the last clone of its store.
    #[tokio::test]
    async fn the_follower_stops_with_the_last_clone() {
        let Some(store) = store("drop", 100).await else {
            return;
        };
        let probe = store.inner.revocations.clone();
        let clone = store.clone();
        drop(store);
        assert!(
            std::sync::Arc::strong_count(&probe) >= 2,
            "the task still runs"
        );
        drop(clone);
        for _ in 0..100 {
            if std::sync::Arc::strong_count(&probe) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the follower task outlived its store");
    }

    async fn futures_join_all<F: std::future::Future + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut outputs = Vec::new();
        for handle in handles {
            outputs.push(handle.await.unwrap());
        }
        outputs
    }
}
