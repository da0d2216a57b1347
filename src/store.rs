//! The state an app's instances must share, behind one trait,
//! [`SharedStore`]: revoked sessions and refresh-token families (see
//! [`session`](crate::session)). [`MemoryStore`] keeps it in this process —
//! the default, right for an app that runs as one instance.
//!
//! The request path never waits on it: [`SharedStore::session_status`] answers
//! from memory. Every other method may wait on the network.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use crate::counters::StoreError;
use crate::session::{Family, Rotation, TokenHash};
use crate::token::unix_now;

/// Whether a session may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Not revoked (as far as the store knows, within its staleness bound).
    Active,
    /// Logged out, or ended by refresh-token reuse.
    Revoked,
}

/// Where the state shared by an app's instances lives: refresh-token
/// families and revoked sessions. [`MemoryStore`] is the default;
/// a store shared by several instances (Redis) implements the same trait.
///
/// Every method but [`session_status`](Self::session_status) may wait on the
/// network. `session_status` runs on every authenticated request that
/// carries a `sid` and must answer from memory: a shared store keeps a local
/// copy of the revoked sessions, fed by the shared one, and answers
/// [`StoreError`] when that copy may be staler than its stated bound.
pub trait SharedStore: Send + Sync + 'static {
    /// Whether session `sid` may be used. Called on the request path: it
    /// must not wait.
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError>;

    /// Revokes session `sid` until `until` (when the last access token that
    /// could carry it expires), and ends its refresh-token family if it has
    /// one.
    fn revoke_session(
        &self,
        sid: &str,
        until: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps a new family until it expires. A store may bound the families
    /// a subject keeps (see [`MemoryStore`]); it then ends the oldest,
    /// revoking its session until `revoke_until`.
    fn create_family(
        &self,
        family: Family,
        revoke_until: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The family that holds `token` (current or spent), if any.
    fn find_family(
        &self,
        token: &TokenHash,
    ) -> impl Future<Output = Result<Option<Family>, StoreError>> + Send;

    /// In one atomic step: [`Family::rotate`] on the family that holds
    /// `presented` (`Unknown` when none does). On
    /// [`Reused`](Rotation::Reused) the store also revokes the family's
    /// session until `revoke_until`.
    fn rotate(
        &self,
        presented: &TokenHash,
        successor: &TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> impl Future<Output = Result<Rotation, StoreError>> + Send;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`SharedStore`] with its type erased, for the
/// [`Authenticator`](crate::Authenticator).
pub(crate) trait DynSharedStore: Send + Sync {
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError>;
    fn revoke_session<'a>(
        &'a self,
        sid: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn create_family(
        &self,
        family: Family,
        revoke_until: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    fn find_family<'a>(
        &'a self,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Family>, StoreError>>;
    fn rotate<'a>(
        &'a self,
        presented: &'a TokenHash,
        successor: &'a TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>>;
}

impl<S: SharedStore> DynSharedStore for S {
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError> {
        SharedStore::session_status(self, sid)
    }

    fn revoke_session<'a>(
        &'a self,
        sid: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SharedStore::revoke_session(self, sid, until))
    }

    fn create_family(
        &self,
        family: Family,
        revoke_until: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(SharedStore::create_family(self, family, revoke_until))
    }

    fn find_family<'a>(
        &'a self,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Family>, StoreError>> {
        Box::pin(SharedStore::find_family(self, token))
    }

    fn rotate<'a>(
        &'a self,
        presented: &'a TokenHash,
        successor: &'a TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        Box::pin(SharedStore::rotate(
            self,
            presented,
            successor,
            now,
            grace,
            revoke_until,
        ))
    }
}

/// The default families a subject may keep in a [`MemoryStore`].
pub const DEFAULT_MAX_FAMILIES_PER_SUBJECT: usize = 100;

/// How often, at most, a [`MemoryStore`] sweeps out what has expired
/// (seconds).
const SWEEP_INTERVAL: u64 = 60;

/// Sessions and families in this process's memory: the default store, for
/// an app that runs as one instance. Cheap to clone (clones share the state).
///
/// Memory stays bounded under a flood of logins and logouts: a revoked
/// session is forgotten once its last access token has expired, a family
/// when it expires or ends, expired entries are swept out at most once a
/// minute by the next write, and a subject keeps at most
/// [`DEFAULT_MAX_FAMILIES_PER_SUBJECT`] families (configurable): a login
/// beyond that ends the subject's oldest family and revokes its session.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<MemoryState>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("revoked_sessions", &state.revoked.len())
            .field("families", &state.families.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct MemoryState {
    /// Revoked session id -> until when it must stay revoked.
    revoked: HashMap<String, u64>,
    /// Family, by session id.
    families: HashMap<String, Family>,
    /// Every token hash a family holds or held -> its session id.
    tokens: HashMap<TokenHash, String>,
    /// A subject's session ids with families, oldest first.
    by_subject: HashMap<String, VecDeque<String>>,
    /// The most families a subject keeps; 0 means the default.
    max_per_subject: usize,
    /// The Unix time after which the next write sweeps.
    next_sweep: u64,
}

impl MemoryStore {
    /// An empty store keeping at most [`DEFAULT_MAX_FAMILIES_PER_SUBJECT`]
    /// families per subject.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most families (refresh-token logins) one subject may keep; a
    /// login beyond that ends their oldest. At least 1.
    pub fn max_families_per_subject(self, max: usize) -> Self {
        self.lock().max_per_subject = max.max(1);
        self
    }

    /// How many revoked sessions and families the store holds now.
    pub fn len(&self) -> (usize, usize) {
        let state = self.lock();
        (state.revoked.len(), state.families.len())
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every change below leaves the maps consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryState {
    fn max_per_subject(&self) -> usize {
        if self.max_per_subject == 0 {
            DEFAULT_MAX_FAMILIES_PER_SUBJECT
        } else {
            self.max_per_subject
        }
    }

    /// Forgets family `sid` and its tokens.
    fn remove_family(&mut self, sid: &str) -> Option<Family> {
        let family = self.families.remove(sid)?;
        self.tokens.remove(&family.current);
        if let Some(previous) = family.previous {
            self.tokens.remove(&previous.hash);
        }
        for spent in &family.spent {
            self.tokens.remove(spent);
        }
        if let Some(sids) = self.by_subject.get_mut(&family.subject) {
            sids.retain(|other| other != sid);
            if sids.is_empty() {
                self.by_subject.remove(&family.subject);
            }
        }
        Some(family)
    }

    fn revoke(&mut self, sid: &str, until: u64) {
        let entry = self.revoked.entry(sid.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        self.remove_family(sid);
    }

    fn sweep_if_due(&mut self, now: u64) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        self.revoked.retain(|_, until| *until > now);
        let expired: Vec<String> = self
            .families
            .iter()
            .filter(|(_, family)| family.expires_at() <= now)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in expired {
            self.remove_family(&sid);
        }
    }
}

impl SharedStore for MemoryStore {
    fn session_status(&self, sid: &str) -> Result<SessionStatus, StoreError> {
        let state = self.lock();
        Ok(match state.revoked.get(sid) {
            Some(until) if *until > unix_now() => SessionStatus::Revoked,
            _ => SessionStatus::Active,
        })
    }

    async fn revoke_session(&self, sid: &str, until: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.sweep_if_due(unix_now());
        state.revoke(sid, until);
        Ok(())
    }

    async fn create_family(&self, family: Family, revoke_until: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.sweep_if_due(unix_now());
        let max = state.max_per_subject();
        let sids = state.by_subject.entry(family.subject.clone()).or_default();
        sids.push_back(family.sid.clone());
        let evicted: Vec<String> = sids.drain(..sids.len().saturating_sub(max)).collect();
        for sid in evicted {
            state.revoke(&sid, revoke_until);
        }
        state.tokens.insert(family.current, family.sid.clone());
        state.families.insert(family.sid.clone(), family);
        Ok(())
    }

    async fn find_family(&self, token: &TokenHash) -> Result<Option<Family>, StoreError> {
        let state = self.lock();
        Ok(state
            .tokens
            .get(token)
            .and_then(|sid| state.families.get(sid))
            .cloned())
    }

    async fn rotate(
        &self,
        presented: &TokenHash,
        successor: &TokenHash,
        now: u64,
        grace: Duration,
        revoke_until: u64,
    ) -> Result<Rotation, StoreError> {
        let mut state = self.lock();
        state.sweep_if_due(now);
        let Some(sid) = state.tokens.get(presented).cloned() else {
            return Ok(Rotation::Unknown);
        };
        let Some(family) = state.families.get(&sid).cloned() else {
            return Ok(Rotation::Unknown);
        };
        let (rotation, kept) = family.rotate(presented, successor, now, grace);
        match kept {
            Some(family) => {
                state.tokens.insert(family.current, sid.clone());
                state.families.insert(sid, family);
            }
            None => {
                if matches!(rotation, Rotation::Reused(_)) {
                    state.revoke(&sid, revoke_until);
                } else {
                    state.remove_family(&sid);
                }
            }
        }
        Ok(rotation)
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! What every [`SharedStore`] must do, as tests generic over the store:
    //! [`MemoryStore`]'s tests below and the Redis store's run the same.
    //! `base` is the Unix time the scenario starts at (a store whose keys
    //! expire by the real clock needs the real time).

    // Not `super::*`: `DynSharedStore`'s methods would shadow the trait's.
    use super::{Duration, SessionStatus, SharedStore};
    use crate::scope::Scopes;
    use crate::session::{Family, FamilyKey, RefreshToken, Rotation};
    use crate::token::unix_now;

    const GRACE: Duration = Duration::from_secs(5);

    pub(crate) fn family(token: &RefreshToken, sid: &str, subject: &str, now: u64) -> Family {
        Family {
            sid: sid.to_owned(),
            subject: subject.to_owned(),
            scope: Scopes::parse("me").unwrap(),
            token_version: 0,
            auth_time: now,
            absolute_expiry: now + 3600,
            idle_timeout: 600,
            last_used: now,
            key: FamilyKey::generate().unwrap(),
            current: token.hash(),
            previous: None,
            spent: Vec::new(),
        }
    }

    fn status(store: &impl SharedStore, sid: &str) -> SessionStatus {
        store.session_status(sid).unwrap()
    }

    /// A fresh session id (stores may be shared by several tests).
    fn sid(name: &str) -> String {
        format!("{name}-{}", uuid::Uuid::new_v4().simple())
    }

    pub(crate) async fn rotation_grace_and_reuse(store: &impl SharedStore, now: u64) {
        let s1 = sid("s1");
        let first = RefreshToken::generate().unwrap();
        let fam = family(&first, &s1, "u", now);
        let second = first.successor(&fam.key);
        store.create_family(fam.clone(), now + 1800).await.unwrap();

        let rotate = |presented: &RefreshToken, successor: &RefreshToken, at: u64| {
            let (p, s) = (presented.hash(), successor.hash());
            async move { store.rotate(&p, &s, at, GRACE, at + 1800).await.unwrap() }
        };
        assert!(matches!(
            rotate(&first, &second, now + 10).await,
            Rotation::Rotated(_)
        ));
        // The same token again within the grace window: the same successor.
        assert!(matches!(
            rotate(&first, &second, now + 14).await,
            Rotation::Replayed(_)
        ));
        // The successor works, and is spent in turn.
        let third = second.successor(&fam.key);
        assert!(matches!(
            rotate(&second, &third, now + 20).await,
            Rotation::Rotated(_)
        ));
        assert_eq!(status(store, &s1), SessionStatus::Active);
        // The first token after its successor was spent: reuse, even
        // within the grace window.
        assert!(matches!(
            rotate(&first, &second, now + 21).await,
            Rotation::Reused(_)
        ));
        // The family is gone, its session revoked.
        assert_eq!(status(store, &s1), SessionStatus::Revoked);
        assert_eq!(store.find_family(&third.hash()).await.unwrap(), None);
        assert!(matches!(
            rotate(&third, &third.successor(&fam.key), now + 22).await,
            Rotation::Unknown
        ));
    }

    pub(crate) async fn a_spent_token_after_the_grace_window_is_reuse(
        store: &impl SharedStore,
        now: u64,
    ) {
        let first = RefreshToken::generate().unwrap();
        let fam = family(&first, &sid("s1"), "u", now);
        let second = first.successor(&fam.key);
        store.create_family(fam, now + 1800).await.unwrap();
        let (a, b) = (first.hash(), second.hash());
        assert!(matches!(
            store
                .rotate(&a, &b, now + 10, GRACE, now + 1810)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        // Spent at 10 with a 5 s grace: 15 is the window's last second.
        assert!(matches!(
            store
                .rotate(&a, &b, now + 15, GRACE, now + 1815)
                .await
                .unwrap(),
            Rotation::Replayed(_)
        ));
        assert!(matches!(
            store
                .rotate(&a, &b, now + 16, GRACE, now + 1816)
                .await
                .unwrap(),
            Rotation::Reused(_)
        ));
    }

    pub(crate) async fn families_expire_when_idle_or_at_their_absolute_lifetime(
        store: &impl SharedStore,
        now: u64,
    ) {
        let first = RefreshToken::generate().unwrap();
        let fam = family(&first, &sid("s1"), "u", now);
        let (a, b) = (first.hash(), first.successor(&fam.key).hash());
        store.create_family(fam.clone(), now + 1800).await.unwrap();
        assert_eq!(
            store
                .rotate(&a, &b, now + 600, GRACE, now + 2400)
                .await
                .unwrap(),
            Rotation::Expired
        );
        assert_eq!(store.find_family(&a).await.unwrap(), None, "forgotten");

        let mut fam = fam;
        fam.sid = sid("s2");
        fam.idle_timeout = 10_000;
        fam.absolute_expiry = now + 100;
        store.create_family(fam, now + 1800).await.unwrap();
        assert_eq!(
            store
                .rotate(&a, &b, now + 100, GRACE, now + 1900)
                .await
                .unwrap(),
            Rotation::Expired
        );
    }

    pub(crate) async fn logout_revokes_one_session_and_its_family_only(store: &impl SharedStore) {
        let (s1, s2, s3) = (sid("s1"), sid("s2"), sid("s3"));
        let (t1, t2) = (
            RefreshToken::generate().unwrap(),
            RefreshToken::generate().unwrap(),
        );
        let now = unix_now();
        store
            .create_family(family(&t1, &s1, "u", now), now + 1800)
            .await
            .unwrap();
        store
            .create_family(family(&t2, &s2, "u", now), now + 1800)
            .await
            .unwrap();
        store.revoke_session(&s1, now + 1800).await.unwrap();
        assert_eq!(status(store, &s1), SessionStatus::Revoked);
        assert_eq!(status(store, &s2), SessionStatus::Active);
        assert_eq!(store.find_family(&t1.hash()).await.unwrap(), None);
        assert!(store.find_family(&t2.hash()).await.unwrap().is_some());
        // A revocation is forgotten once the tokens it covers have expired.
        store.revoke_session(&s3, now - 1).await.unwrap();
        assert_eq!(status(store, &s3), SessionStatus::Active);
    }

    /// For a store keeping at most 3 families per subject.
    pub(crate) async fn a_subject_keeps_at_most_its_families(store: &impl SharedStore) {
        let now = unix_now();
        let subject = sid("u");
        let mut tokens = Vec::new();
        let sids: Vec<String> = (0..10).map(|i| sid(&format!("s{i}"))).collect();
        for sid in &sids {
            let token = RefreshToken::generate().unwrap();
            store
                .create_family(family(&token, sid, &subject, now), now + 1800)
                .await
                .unwrap();
            tokens.push(token);
        }
        // The evicted families' sessions are revoked, the newest three live.
        for (i, (sid, token)) in sids.iter().zip(&tokens).enumerate() {
            let kept = i >= 7;
            let expected = if kept {
                SessionStatus::Active
            } else {
                SessionStatus::Revoked
            };
            assert_eq!(status(store, sid), expected, "session {i}");
            assert_eq!(
                store.find_family(&token.hash()).await.unwrap().is_some(),
                kept,
                "family {i}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::conformance;
    use super::{Duration, MemoryStore, SessionStatus, SharedStore};
    use crate::session::{RefreshToken, Rotation};

    #[tokio::test]
    async fn rotation_grace_and_reuse() {
        let store = MemoryStore::new();
        conformance::rotation_grace_and_reuse(&store, crate::token::unix_now()).await;
        assert_eq!(
            store.len(),
            (1, 0),
            "the family is gone, its session revoked"
        );
    }

    #[tokio::test]
    async fn a_spent_token_after_the_grace_window_is_reuse() {
        conformance::a_spent_token_after_the_grace_window_is_reuse(&MemoryStore::new(), 0).await;
    }

    #[tokio::test]
    async fn families_expire_when_idle_or_at_their_absolute_lifetime() {
        conformance::families_expire_when_idle_or_at_their_absolute_lifetime(
            &MemoryStore::new(),
            0,
        )
        .await;
    }

    #[tokio::test]
    async fn logout_revokes_one_session_and_its_family_only() {
        conformance::logout_revokes_one_session_and_its_family_only(&MemoryStore::new()).await;
    }

    /// Expired revocations are swept out by the first write a minute after
    /// the last sweep, not before, and unexpired ones stay.
    #[tokio::test]
    async fn expired_revocations_are_swept_once_a_minute() {
        let store = MemoryStore::new();
        assert!(store.is_empty());
        let t = crate::token::unix_now() + 1000;
        let nobody = RefreshToken::generate().unwrap().hash();
        let rotate_at = |now: u64| store.rotate(&nobody, &nobody, now, Duration::ZERO, now);
        // The first write sweeps (nothing yet) and sets the next sweep at t + 60.
        assert_eq!(rotate_at(t).await.unwrap(), Rotation::Unknown);
        store.revoke_session("expires", t + 5).await.unwrap();
        store
            .revoke_session("ends at the sweep", t + 60)
            .await
            .unwrap();
        store.revoke_session("stays", t + 1000).await.unwrap();
        let (old, new) = (
            RefreshToken::generate().unwrap(),
            RefreshToken::generate().unwrap(),
        );
        let mut ending = conformance::family(&old, "ending", "u", t);
        ending.absolute_expiry = t + 60;
        store.create_family(ending, t + 60).await.unwrap();
        let lasting = conformance::family(&new, "lasting", "u", t);
        store.create_family(lasting, t + 3600).await.unwrap();
        assert!(!store.is_empty());
        rotate_at(t + 59).await.unwrap();
        assert_eq!(store.len(), (3, 2), "no sweep before a minute has passed");
        rotate_at(t + 60).await.unwrap();
        assert_eq!(
            store.len(),
            (1, 1),
            "what ended by t + 60 is swept, what lasts stays"
        );
        assert!(store.find_family(&new.hash()).await.unwrap().is_some());
        assert_eq!(
            SharedStore::session_status(&store, "stays").unwrap(),
            SessionStatus::Revoked
        );
        assert_eq!(
            format!("{store:?}"),
            "MemoryStore { revoked_sessions: 1, families: 1, .. }"
        );
    }

    /// A revocation covers tokens that expire before `until`: at `until`
    /// itself the session is active again.
    #[tokio::test]
    async fn a_revocation_ends_at_its_until() {
        let store = MemoryStore::new();
        let now = crate::token::unix_now();
        store.revoke_session("s", now).await.unwrap();
        assert_eq!(
            SharedStore::session_status(&store, "s").unwrap(),
            SessionStatus::Active
        );
        store.revoke_session("s", now + 60).await.unwrap();
        assert_eq!(
            SharedStore::session_status(&store, "s").unwrap(),
            SessionStatus::Revoked
        );
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_flood_of_logins() {
        let store = MemoryStore::new().max_families_per_subject(3);
        conformance::a_subject_keeps_at_most_its_families(&store).await;
        let (revoked, families) = store.len();
        assert_eq!(families, 3);
        assert_eq!(revoked, 7, "the evicted families' sessions are revoked");
        let token = RefreshToken::generate().unwrap();
        assert_eq!(store.find_family(&token.hash()).await.unwrap(), None);
    }
}
