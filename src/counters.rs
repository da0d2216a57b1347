//! The core of the state an app's instances share: [`StoreError`], what a
//! shared store answers when it cannot be trusted, and [`SharedCounters`],
//! the counters behind shared [rate limits](crate::limit::RateLimit),
//! [connection caps](crate::limit::ConnectionLimit) and the
//! [login throttle](crate::throttle::LoginThrottle). The store that keeps
//! sessions, and what it keeps, is the [`store`](crate::store) module's;
//! `tower_auth::redis::RedisStore` (feature `redis`) implements both.
//!
//! Two kinds of counter, both on keys that expire by themselves:
//!
//! - a GCRA ([`charge`](SharedCounters::charge)): `n` units charged
//!   against a rate given by its emission interval (one unit comes back
//!   every interval) and its burst (the most units held at once), with
//!   exactly [`governor`]'s semantics, so a limit answers the same in
//!   memory and shared; the key lives until its allowance is full again;
//! - leases ([`acquire_lease`](SharedCounters::acquire_lease)): at most
//!   `max` live leases on a key, each with a time to live, renewed by its
//!   holder and released when it is done; a lease whose holder died
//!   expires by itself, so its slot comes back within one TTL.
//!
//! Local limits never use this trait: they stay on governor and a mutex,
//! in this process, without a network round trip.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::time::Duration;

use crate::user::BoxError;

/// The shared state failed (unreachable, or too stale to trust): answered
/// as 503 `temporarily_unavailable`. The source is logged, never sent.
#[derive(Debug, thiserror::Error)]
#[error("shared store failed")]
pub struct StoreError(#[source] pub BoxError);

impl StoreError {
    /// A store error with this message (logged, never sent to a client).
    pub fn new(message: impl Into<String>) -> Self {
        StoreError(message.into().into())
    }
}

/// A GCRA rate as the shared counters see it: one unit comes back every
/// `emission_interval`, and at most `burst` units are held at once
/// (governor's `Quota::with_period(emission_interval).allow_burst(burst)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// How long one unit takes to come back (`period / max`).
    pub emission_interval: Duration,
    /// The most units held at once, and so the most one charge may take.
    pub burst: NonZeroU32,
}

impl Gcra {
    /// `max` units per `period`, in bursts of up to `max`; `None` when
    /// `max` is zero.
    pub fn per_period(max: u32, period: Duration) -> Option<Self> {
        let burst = NonZeroU32::new(max)?;
        Some(Gcra {
            emission_interval: period / max,
            burst,
        })
    }
}

/// Whether a [charge](SharedCounters::charge) spends the units or only
/// asks whether it could.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Spend them when they conform (a refused charge spends nothing).
    Spend,
    /// Only ask: nothing is spent either way.
    DryRun,
}

/// What a [charge](SharedCounters::charge) answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcraOutcome {
    /// The units conform (and were spent, for [`Charge::Spend`]).
    Allowed,
    /// Not yet: the units would conform after this wait.
    Wait(Duration),
    /// More units than the whole burst: no wait would let them through
    /// (governor's `InsufficientCapacity`).
    TooLarge,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Counters shared by an app's instances: GCRA charges and leases on keys
/// that expire by themselves (see the [module docs](self)). Each operation
/// is one atomic step in the store, so instances racing on one key behave
/// as one instance would.
///
/// Keys are chosen by the caller (this crate's limits put the limit's
/// name in each key, and the login throttle hashes its keys); a store adds
/// its own namespace (a Redis key prefix).
pub trait SharedCounters: Send + Sync + 'static {
    /// Charges `n` units (at least 1) to `key` under `rate`: allowed (and
    /// spent, unless a [`Charge::DryRun`]), the wait until they would
    /// conform, or [`GcraOutcome::TooLarge`] when `n` exceeds the burst.
    /// The key expires when its allowance is full again.
    fn charge(
        &self,
        key: &str,
        rate: Gcra,
        n: NonZeroU32,
        charge: Charge,
    ) -> impl Future<Output = Result<GcraOutcome, StoreError>> + Send;

    /// Forgets `key`'s charges: its whole allowance is back.
    fn forget(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes lease `lease` (a unique id) on `key` for `ttl`, when fewer
    /// than `max` unexpired leases are held on it: `true` when taken.
    fn acquire_lease(
        &self,
        key: &str,
        lease: &str,
        max: u32,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Extends lease `lease` on `key` to `ttl` from now. A lease that has
    /// already expired (its holder was cut off for longer than its TTL) is
    /// taken again when a slot is free: `false` when it is not.
    fn renew_lease(
        &self,
        key: &str,
        lease: &str,
        max: u32,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives lease `lease` on `key` back (nothing when it is not held).
    fn release_lease(
        &self,
        key: &str,
        lease: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A string naming this store's shared state (a Redis key prefix): the
    /// login throttle salts the hashes of its keys with it.
    fn namespace(&self) -> &str;
}

/// [`SharedCounters`] with its type erased, for the limits and the
/// throttle, which hold one behind an `Arc`.
pub(crate) trait DynSharedCounters: Send + Sync {
    fn charge<'a>(
        &'a self,
        key: &'a str,
        rate: Gcra,
        n: NonZeroU32,
        charge: Charge,
    ) -> BoxFuture<'a, Result<GcraOutcome, StoreError>>;
    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    fn acquire_lease<'a>(
        &'a self,
        key: &'a str,
        lease: &'a str,
        max: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn renew_lease<'a>(
        &'a self,
        key: &'a str,
        lease: &'a str,
        max: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn release_lease<'a>(
        &'a self,
        key: &'a str,
        lease: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn namespace(&self) -> &str;
}

impl<S: SharedCounters> DynSharedCounters for S {
    fn charge<'a>(
        &'a self,
        key: &'a str,
        rate: Gcra,
        n: NonZeroU32,
        charge: Charge,
    ) -> BoxFuture<'a, Result<GcraOutcome, StoreError>> {
        Box::pin(SharedCounters::charge(self, key, rate, n, charge))
    }

    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SharedCounters::forget(self, key))
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a str,
        lease: &'a str,
        max: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SharedCounters::acquire_lease(self, key, lease, max, ttl))
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a str,
        lease: &'a str,
        max: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SharedCounters::renew_lease(self, key, lease, max, ttl))
    }

    fn release_lease<'a>(
        &'a self,
        key: &'a str,
        lease: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SharedCounters::release_lease(self, key, lease))
    }

    fn namespace(&self) -> &str {
        SharedCounters::namespace(self)
    }
}
