//! The verified-token cache: the claims of tokens whose signature has been
//! verified, so a client that sends the same token on every request pays
//! for the signature once.
//!
//! What it is, and why each choice:
//!
//! - **Keyed by the exact token bytes.** A token that differs in one byte is
//!   a different entry and is verified in full. (ES256 signatures are
//!   malleable: a re-encoded signature of a cached token is another entry,
//!   verified on its own; nothing here *identifies* a token by its bytes,
//!   see the crate's decision 8.)
//! - **Tied to one key set.** The cache remembers the
//!   [`TokenCodec`]'s key-set identity, given to every codec when it is built
//!   (clones share it). Asked on behalf of a codec with another key set, it
//!   is never consulted nor filled: a codec built without a key never
//!   accepts, from here, a token that key verified.
//! - **Only verified tokens go in.** A refused token is never cached, so
//!   nobody without a valid token can fill it.
//! - **Every hit re-runs the codec's claim checks** (`exp`, `nbf`, `iss`,
//!   `aud`: the same function a miss runs) against the clock, so an entry
//!   is never *used* after its token's `exp`; the hit that finds it expired
//!   drops it.
//! - **Expired entries are swept out** by the first insert a minute or more
//!   after the previous sweep (one pass over at most `capacity` entries, on
//!   the path that has just verified a signature anyway). Until then an
//!   expired entry takes memory within the bound, but is never used.
//! - **Bounded** by an entry count, on [`quick_cache`] (CLOCK-Pro
//!   eviction). The memory it can hold is about the capacity times (the
//!   token length cap + the size of the claims). quick_cache rather than
//!   moka, whose per-entry expiry drops entries at `exp` to the second: in
//!   callgrind a moka hit cost about three times a quick_cache hit (~1,500
//!   against ~535 instructions), and a first sight with eviction (miss,
//!   verify, insert) about 6,400 instructions more than no cache at all,
//!   against ~2,400.
//! - The claims sit behind an `Arc`: a hit clones a pointer, never the
//!   claims.
//! - **Hashed with foldhash**, randomly seeded per cache: it hashes the
//!   whole token on every request, several times faster than SipHash.
//!   Flooding one bucket would need many verified tokens whose hashes
//!   collide under an unknown seed, and only verified tokens go in.
//!
//! The user is *not* cached: [`Authenticator`](crate::Authenticator) loads
//! it and checks `is_active` and the token version on every request, so a
//! disabled user or a raised token version takes effect at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::UnitWeighter;
use quick_cache::sync::{Cache, DefaultLifecycle};
use serde::de::DeserializeOwned;

use super::{Claims, TokenCodec, TokenRejection, unix_now};

/// How often, at most, inserts sweep out expired entries (seconds).
const SWEEP_INTERVAL: u64 = 60;

type Entries<X> = Cache<Box<[u8]>, Arc<Claims<X>>, UnitWeighter, foldhash::fast::RandomState>;

/// Verified claims by token, for the tokens of one key set.
pub(crate) struct VerifiedTokens<X> {
    key_set: u64,
    entries: Entries<X>,
    /// The Unix time (seconds) after which the next insert sweeps.
    next_sweep: AtomicU64,
}

impl<X: DeserializeOwned + Send + Sync + 'static> VerifiedTokens<X> {
    /// A cache of at most `capacity` tokens verified by `codec`'s key set.
    pub(crate) fn new(codec: &TokenCodec, capacity: u64) -> Self {
        // Only an estimate, used to size shards: the tables grow as needed.
        let estimated_entries = usize::try_from(capacity).unwrap_or(usize::MAX);
        VerifiedTokens {
            key_set: codec.key_set_id(),
            entries: Cache::with(
                estimated_entries,
                capacity,
                UnitWeighter,
                foldhash::fast::RandomState::default(),
                DefaultLifecycle::default(),
            ),
            next_sweep: AtomicU64::new(0),
        }
    }

    /// The claims of `token` if it is here, re-checked against the clock
    /// (the hit that finds them expired drops them); `None` if it is not.
    /// It takes bytes: every token here was verified, so it is known to be
    /// well-formed, and a caller can look it up before checking its syntax.
    pub(crate) fn get(
        &self,
        codec: &TokenCodec,
        token: &[u8],
    ) -> Option<Result<Arc<Claims<X>>, TokenRejection>> {
        self.get_at(codec, token, unix_now())
    }

    /// Verifies a token [`get`](Self::get) did not find, and keeps its
    /// claims.
    pub(crate) fn verify_new(
        &self,
        codec: &TokenCodec,
        token: &str,
    ) -> Result<Arc<Claims<X>>, TokenRejection> {
        self.verify_new_at(codec, token, unix_now())
    }

    fn get_at(
        &self,
        codec: &TokenCodec,
        token: &[u8],
        now: u64,
    ) -> Option<Result<Arc<Claims<X>>, TokenRejection>> {
        if codec.key_set_id() != self.key_set {
            return None;
        }
        let claims = self.entries.get(token)?;
        Some(match codec.check_claims(&claims, now) {
            Ok(()) => Ok(claims),
            Err(rejection) => {
                if rejection == TokenRejection::Expired {
                    self.entries.remove(token);
                }
                Err(rejection)
            }
        })
    }

    fn verify_new_at(
        &self,
        codec: &TokenCodec,
        token: &str,
        now: u64,
    ) -> Result<Arc<Claims<X>>, TokenRejection> {
        let claims = Arc::new(codec.verify_at::<X>(token, now)?);
        if codec.key_set_id() == self.key_set {
            self.sweep_if_due(now);
            self.entries
                .insert(token.as_bytes().into(), Arc::clone(&claims));
        }
        Ok(claims)
    }

    /// Drops the entries of expired tokens, once a [`SWEEP_INTERVAL`].
    fn sweep_if_due(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        // One caller wins the sweep; the others go on.
        if now >= due
            && self
                .next_sweep
                .compare_exchange(
                    due,
                    now + SWEEP_INTERVAL,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.entries.retain(|_, claims| now < claims.exp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scopes;
    use crate::token::Key;

    fn codec(secret: &[u8]) -> TokenCodec {
        TokenCodec::builder(Key::hs256(secret).unwrap())
            .build()
            .unwrap()
    }

    fn token(codec: &TokenCodec) -> String {
        codec
            .issue(&codec.new_claims("u1", Scopes::none(), 0, ()))
            .unwrap()
    }

    /// What the authenticator does with a token: the cache, else a
    /// verification that fills it.
    impl VerifiedTokens<()> {
        fn verify(&self, codec: &TokenCodec, token: &str) -> Result<Arc<Claims>, TokenRejection> {
            self.verify_at(codec, token, unix_now())
        }

        fn verify_at(
            &self,
            codec: &TokenCodec,
            token: &str,
            now: u64,
        ) -> Result<Arc<Claims>, TokenRejection> {
            match self.get_at(codec, token.as_bytes(), now) {
                Some(cached) => cached,
                None => self.verify_new_at(codec, token, now),
            }
        }
    }

    fn cached(cache: &VerifiedTokens<()>, token: &str) -> bool {
        cache.entries.contains_key(token.as_bytes())
    }

    #[test]
    fn a_hit_returns_the_same_claims_without_copying() {
        let codec = codec(&[1; 32]);
        let cache = VerifiedTokens::<()>::new(&codec, 100);
        let token = token(&codec);
        let first = cache.verify(&codec, &token).unwrap();
        assert!(cached(&cache, &token));
        let second = cache.verify(&codec, &token).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*first, codec.verify::<()>(&token).unwrap());
    }

    #[test]
    fn get_finds_only_verified_tokens_of_its_key_set_by_their_bytes() {
        let keys = codec(&[1; 32]);
        let cache = VerifiedTokens::<()>::new(&keys, 100);
        let issued = token(&keys);
        assert!(cache.get(&keys, issued.as_bytes()).is_none());
        let verified = cache.verify_new(&keys, &issued).unwrap();
        let hit = cache.get(&keys, issued.as_bytes()).unwrap().unwrap();
        assert!(Arc::ptr_eq(&verified, &hit));
        // The same secret built again is another key set: it neither finds
        // the entry nor fills the cache.
        let rebuilt = codec(&[1; 32]);
        assert!(cache.get(&rebuilt, issued.as_bytes()).is_none());
        let rebuilt_token = token(&rebuilt);
        cache.verify_new(&rebuilt, &rebuilt_token).unwrap();
        assert!(!cached(&cache, &rebuilt_token));
    }

    #[test]
    fn refused_tokens_are_not_cached() {
        let codec = codec(&[1; 32]);
        let cache = VerifiedTokens::<()>::new(&codec, 100);
        // The signature's last character, always changed.
        let mut forged = token(&codec);
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'Q' } else { 'A' });
        assert!(cache.verify(&codec, &forged).is_err());
        assert!(!cached(&cache, &forged));
        assert_eq!(cache.entries.len(), 0);
    }

    #[test]
    fn a_hit_rechecks_exp_and_nbf_against_the_clock() {
        let codec = codec(&[1; 32]);
        let cache = VerifiedTokens::<()>::new(&codec, 100);
        let now = unix_now();
        let mut claims = codec.new_claims("u1", Scopes::none(), 0, ());
        claims.nbf = Some(now);
        let token = codec.issue(&claims).unwrap();
        cache.verify_at(&codec, &token, now).unwrap();
        assert!(cached(&cache, &token));
        // The same entry, asked about a time before `nbf`.
        assert_eq!(
            cache.verify_at(&codec, &token, now - 1).unwrap_err(),
            TokenRejection::NotYetValid
        );
        cache.verify_at(&codec, &token, now).unwrap();
        assert!(cached(&cache, &token));
        // ... and at `exp`: refused, and dropped.
        assert_eq!(
            cache.verify_at(&codec, &token, claims.exp).unwrap_err(),
            TokenRejection::Expired
        );
        assert!(!cached(&cache, &token));
    }

    #[test]
    fn expired_entries_are_swept_by_the_first_insert_a_minute_later() {
        let codec = codec(&[1; 32]);
        let cache = VerifiedTokens::<()>::new(&codec, 100);
        let now = unix_now();
        let short = |exp: u64| {
            let mut claims = codec.new_claims("u1", Scopes::none(), 0, ());
            claims.exp = exp;
            codec.issue(&claims).unwrap()
        };
        // The first insert sweeps (nothing yet) and sets the next sweep.
        let expiring = short(now + 10);
        cache.verify_at(&codec, &expiring, now).unwrap();
        let lasting = short(now + 3600);
        cache.verify_at(&codec, &lasting, now + 5).unwrap();
        // Past `exp`, before the next sweep: kept, but never used.
        let third = short(now + 3600);
        cache.verify_at(&codec, &third, now + 30).unwrap();
        assert!(cached(&cache, &expiring));
        // A minute on, the next insert drops it, and only it.
        let fourth = short(now + 3600);
        cache
            .verify_at(&codec, &fourth, now + SWEEP_INTERVAL)
            .unwrap();
        assert!(!cached(&cache, &expiring));
        assert!([lasting, third, fourth].iter().all(|t| cached(&cache, t)));
    }

    #[test]
    fn another_key_set_never_sees_the_entries() {
        let old = codec(&[1; 32]);
        let cache = VerifiedTokens::<()>::new(&old, 100);
        let token = token(&old);
        cache.verify(&old, &token).unwrap();
        assert!(cached(&cache, &token));

        // The same secret, built again: another key set, as after a rotation
        // that removed and re-added a key. It verifies for itself.
        let rebuilt = codec(&[1; 32]);
        assert!(cache.verify(&rebuilt, &token).is_ok());
        let other = codec(&[2; 32]);
        assert_eq!(
            cache.verify(&other, &token).unwrap_err(),
            TokenRejection::BadSignature
        );
        // A clone of the codec is the same key set.
        assert!(cache.verify(&old.clone(), &token).is_ok());
    }

    #[test]
    fn a_codec_without_the_key_never_gets_its_tokens_from_the_cache() {
        // A rotation: `both` verifies the old key's token and caches it.
        let old = Key::hs256(&[1; 32]).unwrap().with_kid("old");
        let new = Key::hs256(&[2; 32]).unwrap().with_kid("new");
        let old_only = TokenCodec::builder(old.clone()).build().unwrap();
        let both = TokenCodec::builder(new.clone())
            .also_verify(old)
            .build()
            .unwrap();
        let cache = VerifiedTokens::<()>::new(&both, 100);
        let old_token = token(&old_only);
        cache.verify(&both, &old_token).unwrap();
        assert!(cached(&cache, &old_token));

        // The same cache asked on behalf of a codec without the old key:
        // not found, and verified by that codec, which refuses it.
        let new_only = TokenCodec::builder(new).build().unwrap();
        assert!(cache.get(&new_only, old_token.as_bytes()).is_none());
        assert_eq!(
            cache.verify(&new_only, &old_token).unwrap_err(),
            TokenRejection::UnknownKey
        );
        // The entry is still there for the codec that verified it.
        assert!(cache.verify(&both, &old_token).is_ok());
    }

    #[test]
    fn the_entry_count_is_bounded() {
        let codec = codec(&[1; 32]);
        let cache = VerifiedTokens::<()>::new(&codec, 4);
        for _ in 0..50 {
            cache.verify(&codec, &token(&codec)).unwrap();
        }
        assert!(cache.entries.len() <= 4);
    }
}
