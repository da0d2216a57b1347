//! argon2id password hashing and verification, off the async workers.
//!
//! - New hashes use argon2id with OWASP's parameters (m = 19456 KiB, t = 2,
//!   p = 1) unless configured otherwise, as PHC strings.
//! - Verification accepts any argon2 (`argon2id`, `argon2i`, `argon2d`) PHC
//!   string, with the parameters stored in it — but first refuses parameters
//!   above a [`ParamCeiling`]: argon2 aborts the whole process on absurd
//!   memory costs such as `m=4294967295`, and a stored hash is data.
//! - All argon2 work runs in `tokio::task::spawn_blocking`, behind a
//!   semaphore sized to the machine's cores by default, so a login flood
//!   neither blocks the async workers nor piles up blocking threads.
//! - [`verify_unknown_user`](PasswordHasher::verify_unknown_user) runs
//!   argon2 with the costliest parameters this hasher has seen, so "no such
//!   user" costs as much as "wrong password"; see
//!   [timing](#timing-every-refused-login-costs-the-same).
//! - Passwords longer than [`max_password_len`](PasswordHasherBuilder::max_password_len)
//!   (default 1024 bytes) are refused before any hashing.
//!
//! # The concurrency cap and the queue
//!
//! Each argon2 job owns its permit: the permit moves into the blocking
//! closure and is released when argon2 returns (or panics), never when the
//! request that asked goes away. A client that hangs up mid-login cannot
//! free a permit while its argon2 job still runs, so at most
//! [`max_concurrency`](PasswordHasherBuilder::max_concurrency) jobs (and
//! their memory, `m_cost` KiB each) run at once, whatever clients do.
//!
//! In front of the permits waits a bounded queue
//! ([`max_queue`](PasswordHasherBuilder::max_queue), default
//! [`DEFAULT_QUEUE_PER_PERMIT`] per permit): a hash or verification that
//! finds it full is refused at once with [`PasswordError::Busy`], which the
//! token endpoint answers with 503 `temporarily_unavailable` and
//! `Retry-After: 1`. A waiter whose client hangs up leaves the queue.
//! [`PasswordHasher::stats`] shows the jobs running, the most that ever ran
//! at once, and the waiters.
//!
//! # Timing: every refused login costs the same
//!
//! A table that has seen its parameters change holds hashes of different
//! costs: the FastAPI tutorial's `m=65536,t=3,p=4` takes about six times
//! what the current `m=19456,t=2,p=1` takes. If refusals cost what the
//! parameters at hand cost, timing tells an unknown username (or a
//! passwordless, malformed or over-ceiling one) from a real one. Three
//! measures together close that, and [`login`](crate::login) applies them:
//!
//! 1. **The dummy follows the stored hashes.**
//!    [`verify_unknown_user`](PasswordHasher::verify_unknown_user) runs
//!    argon2id with the costliest parameters (by memory × passes) among the
//!    stored hashes this hasher has verified so far, never less than the
//!    current ones. An app that knows its table holds older, costlier hashes
//!    sets them from the first request with
//!    [`dummy_params`](PasswordHasherBuilder::dummy_params); until then, the
//!    first login of a user with a costlier hash teaches it. A user without
//!    a password, and a stored hash that is malformed or above the ceiling
//!    (refused before argon2 touches it), run the same dummy: the refusal
//!    costs what a real verification costs (DESIGN decision 13).
//! 2. **Failed logins have a floor.** Each argon2 job measures its own
//!    duration on its blocking thread; [`failure_floor`](PasswordHasher::failure_floor)
//!    is the slowest of the last 32. A refused login is not answered before
//!    that long after its password work started (a `tokio::time::sleep`,
//!    no CPU). This covers what (1) cannot: a known user whose hash is
//!    cheaper than another's (current parameters next to the tutorial's)
//!    is refused no faster than the costliest one. Successful logins are not
//!    padded: their answer says what their timing would.
//! 3. **Stored hashes converge.** After a successful login with an outdated
//!    hash the login rehashes the password with the current parameters and
//!    hands it to the store (see [`needs_rehash`](PasswordHasher::needs_rehash)
//!    and [`UserStore::update_password_hash`](crate::UserStore::update_password_hash)),
//!    so the spread, and the floor with it, shrinks as users log in.
//!
//! The cost: a refused login takes as long as the costliest verification
//! seen recently; a successful one, its own hash's cost. Measured by
//! `login_under_attack::login_timing` (README, SECURITY.md).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ConfigError;

/// The default cap on a password's length, in bytes.
pub const DEFAULT_MAX_PASSWORD_LEN: usize = 1024;

/// How many hashes may wait per permit unless told otherwise; see
/// [`PasswordHasherBuilder::max_queue`].
pub const DEFAULT_QUEUE_PER_PERMIT: usize = 8;

/// How many recent argon2 jobs [`PasswordHasher::failure_floor`] looks at.
const RECENT_JOBS: usize = 32;

/// The salt of the dummy verification: any fixed 16 bytes do, its output is
/// thrown away.
const DUMMY_SALT: &[u8] = b"tower-auth dummy";

/// Why hashing or verifying did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password is longer than the configured cap.
    #[error("the password is too long")]
    TooLong,
    /// The stored string is not an argon2 PHC string.
    #[error("the stored hash is not an argon2 PHC string")]
    MalformedHash,
    /// The stored hash's parameters exceed the ceiling; argon2 did not run.
    #[error("the stored hash's parameters exceed the ceiling")]
    AboveCeiling,
    /// argon2 itself failed, or its worker thread did.
    #[error("password hashing failed")]
    Hashing,
    /// Every permit is taken and the queue in front of them is full: try
    /// again after [`retry_after`](Self::retry_after). Nothing ran.
    #[error("too many password hashes at once")]
    Busy,
}

impl PasswordError {
    /// How long to wait before trying again, when waiting helps
    /// ([`Busy`](Self::Busy): one second, several argon2 jobs' time).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// The largest argon2 parameters a stored hash may ask for.
///
/// The default allows m = 256 MiB, t = 16, p = 16: far above any sane
/// setting, far below what takes a server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCeiling {
    /// Memory cost in KiB.
    pub max_m_cost: u32,
    /// Iterations.
    pub max_t_cost: u32,
    /// Parallelism.
    pub max_p_cost: u32,
}

impl Default for ParamCeiling {
    fn default() -> Self {
        ParamCeiling {
            max_m_cost: 256 * 1024,
            max_t_cost: 16,
            max_p_cost: 16,
        }
    }
}

/// Configures a [`PasswordHasher`].
#[must_use]
pub struct PasswordHasherBuilder {
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    ceiling: ParamCeiling,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
    max_password_len: usize,
    dummy_params: Option<(u32, u32, u32)>,
}

impl PasswordHasherBuilder {
    /// argon2id parameters for new hashes: memory in KiB, iterations,
    /// parallelism.
    pub fn params(mut self, m_cost: u32, t_cost: u32, p_cost: u32) -> Self {
        (self.m_cost, self.t_cost, self.p_cost) = (m_cost, t_cost, p_cost);
        self
    }

    /// The ceiling for stored hashes' parameters.
    pub fn ceiling(mut self, ceiling: ParamCeiling) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// How many hashes may run at once. Default: the number of cores.
    pub fn max_concurrency(mut self, permits: usize) -> Self {
        self.max_concurrency = Some(permits);
        self
    }

    /// How many hashes may wait for a permit; one more is refused at once
    /// with [`PasswordError::Busy`] (`0`: whatever finds every permit taken
    /// is refused). Default: [`DEFAULT_QUEUE_PER_PERMIT`] per permit, a wait
    /// of at most about that many argon2 jobs' time.
    pub fn max_queue(mut self, waiting: usize) -> Self {
        self.max_queue = Some(waiting);
        self
    }

    /// The argon2 parameters of the costliest hashes the app's table holds
    /// (memory in KiB, iterations, parallelism), when they are costlier than
    /// the current ones: the dummy verification of unknown users runs with
    /// them from the first request instead of learning them from the first
    /// login of such a user. Checked against argon2's limits and the ceiling
    /// when built. See [timing](self#timing-every-refused-login-costs-the-same).
    ///
    /// ```
    /// use tower_auth::PasswordHasher;
    ///
    /// // The table still holds hashes made by pwdlib's defaults.
    /// let hasher = PasswordHasher::builder().dummy_params(65536, 3, 4).build().unwrap();
    /// ```
    pub fn dummy_params(mut self, m_cost: u32, t_cost: u32, p_cost: u32) -> Self {
        self.dummy_params = Some((m_cost, t_cost, p_cost));
        self
    }

    /// The longest password accepted, in bytes.
    pub fn max_password_len(mut self, max: usize) -> Self {
        self.max_password_len = max;
        self
    }

    /// Checks the parameters against argon2's limits and the ceiling.
    pub fn build(self) -> Result<PasswordHasher, ConfigError> {
        let params = Params::new(self.m_cost, self.t_cost, self.p_cost, None)
            .map_err(|_| ConfigError::Password("invalid argon2 parameters"))?;
        if !self.ceiling.allows(&params) {
            return Err(ConfigError::Password(
                "the argon2 parameters exceed the ceiling",
            ));
        }
        let permits = self
            .max_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        if permits == 0 || self.max_password_len == 0 {
            return Err(ConfigError::Password(
                "concurrency and password length must be positive",
            ));
        }
        let mut dummy_params = params.clone();
        if let Some((m_cost, t_cost, p_cost)) = self.dummy_params {
            let seeded = Params::new(m_cost, t_cost, p_cost, None)
                .map_err(|_| ConfigError::Password("invalid argon2 dummy parameters"))?;
            if !self.ceiling.allows(&seeded) {
                return Err(ConfigError::Password(
                    "the argon2 dummy parameters exceed the ceiling",
                ));
            }
            if cost(&seeded) > cost(&dummy_params) {
                dummy_params = seeded;
            }
        }
        let max_queue = self
            .max_queue
            .unwrap_or(permits.saturating_mul(DEFAULT_QUEUE_PER_PERMIT));
        let places = permits
            .checked_add(max_queue)
            .filter(|&places| places <= Semaphore::MAX_PERMITS)
            .ok_or(ConfigError::Password(
                "the password hashing queue is too long",
            ))?;
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                params,
                ceiling: self.ceiling,
                permits: Arc::new(Semaphore::new(permits)),
                places: Arc::new(Semaphore::new(places)),
                max_concurrency: permits,
                max_queue,
                max_password_len: self.max_password_len,
                dummy_params: Mutex::new(dummy_params),
                recent_jobs: Mutex::new([Duration::ZERO; RECENT_JOBS]),
                jobs: JobGauge::default(),
            }),
        })
    }
}

impl ParamCeiling {
    fn allows(&self, params: &Params) -> bool {
        params.m_cost() <= self.max_m_cost
            && params.t_cost() <= self.max_t_cost
            && params.p_cost() <= self.max_p_cost
    }
}

/// What an argon2 run costs, to compare parameters: the memory it fills
/// times the passes over it (lanes share the memory, and this crate's
/// argon2 runs them one after the other), then memory, then lanes.
fn cost(params: &Params) -> (u64, u32, u32) {
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    (work, params.m_cost(), params.p_cost())
}

/// Locks `mutex`; what it guards is one value replaced whole, so a
/// poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner {
    params: Params,
    ceiling: ParamCeiling,
    /// One per argon2 job allowed to run; each job owns its permit until
    /// argon2 returns.
    permits: Arc<Semaphore>,
    /// Permits plus queue: a hash that finds none left is refused at once.
    places: Arc<Semaphore>,
    max_concurrency: usize,
    max_queue: usize,
    max_password_len: usize,
    /// The costliest parameters among stored hashes verified so far (at
    /// least the current ones): what the dummy verification runs with.
    dummy_params: Mutex<Params>,
    /// How long the last [`RECENT_JOBS`] argon2 jobs took, a ring written
    /// at `finished % RECENT_JOBS`.
    recent_jobs: Mutex<[Duration; RECENT_JOBS]>,
    jobs: JobGauge,
}

impl Inner {
    /// Remembers how long a finished argon2 job took.
    fn record_duration(&self, took: Duration) {
        let finished = self.jobs.finished.fetch_add(1, Ordering::SeqCst);
        lock(&self.recent_jobs)[finished % RECENT_JOBS] = took;
    }
}

/// What a [`PasswordHasher`]'s argon2 jobs are doing; see
/// [`PasswordHasher::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HasherStats {
    /// argon2 jobs running now.
    pub running: usize,
    /// The most argon2 jobs that ever ran at once.
    pub peak_running: usize,
    /// Logins waiting for a permit now.
    pub queued: usize,
    /// argon2 jobs finished so far.
    pub finished: usize,
    /// The cap on `running` ([`PasswordHasherBuilder::max_concurrency`]).
    pub max_concurrency: usize,
    /// The cap on `queued` ([`PasswordHasherBuilder::max_queue`]).
    pub max_queue: usize,
}

/// Counters of the argon2 jobs, kept by the jobs themselves.
#[derive(Default)]
struct JobGauge {
    running: AtomicUsize,
    peak_running: AtomicUsize,
    queued: AtomicUsize,
    finished: AtomicUsize,
}

/// One argon2 job on its blocking thread: counted as running, owning its
/// permit and its place, for as long as it lives. Dropped when argon2
/// returns or panics; the count goes down before the permit is released
/// (fields drop after `drop`), so `running` never exceeds the permits.
struct RunningJob<'a> {
    gauge: &'a JobGauge,
    _permit: OwnedSemaphorePermit,
    _place: OwnedSemaphorePermit,
}

impl<'a> RunningJob<'a> {
    fn start(
        gauge: &'a JobGauge,
        permit: OwnedSemaphorePermit,
        place: OwnedSemaphorePermit,
    ) -> Self {
        let now = gauge.running.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak_running.fetch_max(now, Ordering::SeqCst);
        RunningJob {
            gauge,
            _permit: permit,
            _place: place,
        }
    }
}

impl Drop for RunningJob<'_> {
    fn drop(&mut self) {
        self.gauge.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a hash waiting for its permit; dropped when it gets one, or when
/// its caller goes away.
struct Waiting<'a>(&'a JobGauge);

impl<'a> Waiting<'a> {
    fn start(gauge: &'a JobGauge) -> Self {
        gauge.queued.fetch_add(1, Ordering::SeqCst);
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hashes and verifies passwords; cheap to clone. See the
/// [module docs](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_auth::PasswordHasher;
///
/// let hasher = PasswordHasher::new();
/// let phc = hasher.hash("correct horse").await.unwrap();
/// assert!(hasher.verify("correct horse", &phc).await.unwrap());
/// assert!(!hasher.verify("wrong", &phc).await.unwrap());
/// assert!(!hasher.needs_rehash(&phc));
/// # }
/// ```
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.inner.params)
            .field("ceiling", &self.inner.ceiling)
            .field("max_password_len", &self.inner.max_password_len)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// OWASP's argon2id parameters, the default ceiling, one permit per core.
    pub fn new() -> Self {
        // The defaults are argon2's own valid parameters, under the default
        // ceiling, with positive limits: building cannot fail.
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }

    /// Starts from the defaults of [`new`](Self::new).
    pub fn builder() -> PasswordHasherBuilder {
        PasswordHasherBuilder {
            m_cost: Params::DEFAULT_M_COST,
            t_cost: Params::DEFAULT_T_COST,
            p_cost: Params::DEFAULT_P_COST,
            ceiling: ParamCeiling::default(),
            max_concurrency: None,
            max_queue: None,
            dummy_params: None,
            max_password_len: DEFAULT_MAX_PASSWORD_LEN,
        }
    }

    /// Hashes `password` into a PHC string with the current parameters.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.check_len(password)?;
        let params = self.inner.params.clone();
        let password = password.to_owned();
        self.run_blocking(move || {
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|_| PasswordError::Hashing)
        })
        .await
    }

    /// Whether `password` matches the stored PHC string. The stored
    /// parameters, when costlier than any seen before, become the dummy
    /// verification's.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, PasswordError> {
        self.check_len(password)?;
        let (hash, params) = self.parse_within_ceiling(stored)?;
        self.raise_dummy_params(params);
        let password = password.to_owned();
        self.run_blocking(move || {
            match Argon2::default().verify_password(password.as_bytes(), &hash) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(_) => Err(PasswordError::MalformedHash),
            }
        })
        .await
    }

    /// Spends what the costliest real verification costs, for a login
    /// whose user does not exist, has no password, or whose stored hash is
    /// unusable: argon2id with the costliest parameters seen (see
    /// [timing](self#timing-every-refused-login-costs-the-same)), through
    /// the same permits and queue. The caller answers as for a wrong
    /// password. Fails only as a real verification would: the hasher is
    /// [`Busy`](PasswordError::Busy) or broken. A password over the length
    /// cap runs nothing, as it would not for a real user.
    pub async fn verify_unknown_user(&self, password: &str) -> Result<(), PasswordError> {
        if self.check_len(password).is_err() {
            return Ok(());
        }
        let params = lock(&self.inner.dummy_params).clone();
        let password = password.to_owned();
        self.run_blocking(move || {
            let mut output = [0; 32];
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(password.as_bytes(), DUMMY_SALT, &mut output)
                .map_err(|_| PasswordError::Hashing)
        })
        .await
    }

    /// The least time a refused login should take, counted from when its
    /// password work started: the slowest of the last 32 argon2 jobs
    /// (verifications, dummies and hashes), each timed on its own blocking
    /// thread. Zero before any job ran. See
    /// [timing](self#timing-every-refused-login-costs-the-same).
    pub fn failure_floor(&self) -> Duration {
        lock(&self.inner.recent_jobs)
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
    }

    /// Makes `params` the dummy verification's when they cost more.
    fn raise_dummy_params(&self, params: Params) {
        let mut dummy = lock(&self.inner.dummy_params);
        if cost(&params) > cost(&dummy) {
            *dummy = params;
        }
    }

    /// A snapshot of the argon2 jobs: running now, the most that ever ran at
    /// once, waiting for a permit.
    pub fn stats(&self) -> HasherStats {
        let jobs = &self.inner.jobs;
        HasherStats {
            running: jobs.running.load(Ordering::SeqCst),
            peak_running: jobs.peak_running.load(Ordering::SeqCst),
            queued: jobs.queued.load(Ordering::SeqCst),
            finished: jobs.finished.load(Ordering::SeqCst),
            max_concurrency: self.inner.max_concurrency,
            max_queue: self.inner.max_queue,
        }
    }

    /// Whether a stored hash should be replaced by a fresh one: another
    /// algorithm or version, other parameters, or not a PHC string at all.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else {
            return true;
        };
        let Ok(params) = Params::try_from(&hash) else {
            return true;
        };
        let current = &self.inner.params;
        hash.algorithm != Algorithm::Argon2id.ident()
            || hash.version != Some(Version::V0x13.into())
            || params.m_cost() != current.m_cost()
            || params.t_cost() != current.t_cost()
            || params.p_cost() != current.p_cost()
    }

    fn check_len(&self, password: &str) -> Result<(), PasswordError> {
        if password.len() > self.inner.max_password_len {
            Err(PasswordError::TooLong)
        } else {
            Ok(())
        }
    }

    /// Parses on the calling thread (cheap) and refuses anything argon2
    /// should not be asked to run; returns the hash and its parameters.
    fn parse_within_ceiling(&self, stored: &str) -> Result<(PasswordHash, Params), PasswordError> {
        let hash = PasswordHash::new(stored).map_err(|_| PasswordError::MalformedHash)?;
        Algorithm::try_from(hash.algorithm.as_str()).map_err(|_| PasswordError::MalformedHash)?;
        let params = Params::try_from(&hash).map_err(|_| PasswordError::MalformedHash)?;
        if !self.inner.ceiling.allows(&params) {
            return Err(PasswordError::AboveCeiling);
        }
        Ok((hash, params))
    }

    /// Runs `work` (argon2) on a blocking thread once a permit is free;
    /// [`Busy`](PasswordError::Busy) at once when the queue is full. The
    /// permit and the place move into the blocking job, so dropping this
    /// future (a client hanging up) frees them only when argon2 is done.
    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let place = Arc::clone(&self.inner.places)
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        let permit = {
            let _waiting = Waiting::start(&self.inner.jobs);
            // The semaphore is never closed, so acquiring only waits.
            Arc::clone(&self.inner.permits)
                .acquire_owned()
                .await
                .map_err(|_| PasswordError::Hashing)?
        };
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _job = RunningJob::start(&inner.jobs, permit, place);
            let started = Instant::now();
            let result = work();
            inner.record_duration(started.elapsed());
            result
        })
        .await
        .map_err(|_| PasswordError::Hashing)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The FastAPI tutorial's hash of "secret".
    const TUTORIAL_HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc";

    #[tokio::test]
    async fn verifies_the_tutorial_hash_and_advises_rehash() {
        let hasher = PasswordHasher::new();
        assert!(hasher.verify("secret", TUTORIAL_HASH).await.unwrap());
        assert!(!hasher.verify("Secret", TUTORIAL_HASH).await.unwrap());
        assert!(
            hasher.needs_rehash(TUTORIAL_HASH),
            "m=65536,t=3,p=4 are not the current parameters"
        );
    }

    #[tokio::test]
    async fn new_hashes_are_owasp_argon2id() {
        let phc = PasswordHasher::new().hash("pw").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[tokio::test]
    async fn absurd_stored_parameters_are_refused_before_argon2_runs() {
        let hasher = PasswordHasher::new();
        let huge = "$argon2id$v=19$m=4294967295,t=3,p=4$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc";
        assert_eq!(
            hasher.verify("secret", huge).await,
            Err(PasswordError::AboveCeiling)
        );
    }

    #[tokio::test]
    async fn long_passwords_and_garbage_hashes_are_errors() {
        let hasher = PasswordHasher::builder()
            .max_password_len(8)
            .build()
            .unwrap();
        assert_eq!(hasher.hash("123456789").await, Err(PasswordError::TooLong));
        assert_eq!(
            hasher.verify("x", "$bcrypt$whatever").await,
            Err(PasswordError::MalformedHash)
        );
        assert_eq!(
            hasher.verify("x", "").await,
            Err(PasswordError::MalformedHash)
        );
    }

    #[tokio::test]
    async fn verify_refuses_a_correct_password_over_the_cap() {
        // Hashed where the cap was larger: the password and hash match, so
        // only the cap in `verify` can refuse it.
        let roomy = PasswordHasher::builder()
            .params(8, 1, 1)
            .max_password_len(16)
            .build()
            .unwrap();
        let long = "123456789";
        let hash = roomy.hash(long).await.unwrap();
        assert_eq!(roomy.verify(long, &hash).await, Ok(true));
        let capped = PasswordHasher::builder()
            .params(8, 1, 1)
            .max_password_len(8)
            .build()
            .unwrap();
        assert_eq!(
            capped.verify(long, &hash).await,
            Err(PasswordError::TooLong)
        );
        assert_eq!(capped.verify("12345678", &hash).await, Ok(false));
    }

    #[test]
    fn configuration_is_checked() {
        assert!(PasswordHasher::builder().params(0, 0, 0).build().is_err());
        assert!(
            PasswordHasher::builder()
                .params(1 << 30, 2, 1)
                .build()
                .is_err()
        );
        assert!(
            PasswordHasher::builder()
                .max_concurrency(0)
                .build()
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_panicking_job_gives_back_its_permit_and_its_count() {
        let hasher = PasswordHasher::builder()
            .max_concurrency(1)
            .max_queue(0)
            .build()
            .unwrap();
        let result: Result<(), _> = hasher.run_blocking(|| panic!("argon2 blew up")).await;
        assert_eq!(result, Err(PasswordError::Hashing));
        let stats = hasher.stats();
        assert_eq!((stats.running, stats.peak_running, stats.queued), (0, 1, 0));
        // The only permit is free again: a hash runs, not Busy.
        assert!(hasher.hash("pw").await.is_ok());
    }

    fn dummy_params(hasher: &PasswordHasher) -> (u32, u32, u32) {
        let params = lock(&hasher.inner.dummy_params).clone();
        (params.m_cost(), params.t_cost(), params.p_cost())
    }

    #[tokio::test]
    async fn the_dummy_follows_the_costliest_stored_hash_and_never_falls() {
        let hasher = PasswordHasher::new();
        assert_eq!(dummy_params(&hasher), (19456, 2, 1));
        assert!(!hasher.verify("x", TUTORIAL_HASH).await.unwrap());
        assert_eq!(dummy_params(&hasher), (65536, 3, 4));
        let cheap = PasswordHasher::builder()
            .params(1024, 1, 1)
            .build()
            .unwrap()
            .hash("x")
            .await
            .unwrap();
        assert!(hasher.verify("x", &cheap).await.unwrap());
        assert_eq!(dummy_params(&hasher), (65536, 3, 4));
        // Over the ceiling: refused, and never the dummy's.
        let huge = TUTORIAL_HASH.replace("m=65536", "m=4294967295");
        assert!(hasher.verify("x", &huge).await.is_err());
        assert_eq!(dummy_params(&hasher), (65536, 3, 4));
    }

    #[tokio::test]
    async fn dummy_params_can_be_seeded_and_are_checked() {
        let seeded = PasswordHasher::builder()
            .dummy_params(65536, 3, 4)
            .build()
            .unwrap();
        assert_eq!(dummy_params(&seeded), (65536, 3, 4));
        // Cheaper than the current parameters: the current ones stay.
        let cheaper = PasswordHasher::builder()
            .dummy_params(1024, 1, 1)
            .build()
            .unwrap();
        assert_eq!(dummy_params(&cheaper), (19456, 2, 1));
        assert!(
            PasswordHasher::builder()
                .dummy_params(1 << 30, 3, 4)
                .build()
                .is_err()
        );
        assert!(
            PasswordHasher::builder()
                .dummy_params(0, 0, 0)
                .build()
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_failure_floor_is_the_slowest_recent_job() {
        let hasher = PasswordHasher::builder()
            .params(1024, 1, 1)
            .build()
            .unwrap();
        assert_eq!(hasher.failure_floor(), Duration::ZERO);
        let phc = hasher.hash("x").await.unwrap();
        let cheap = hasher.failure_floor();
        assert!(cheap > Duration::ZERO);
        hasher.verify_unknown_user("x").await.unwrap();
        assert!(!hasher.verify("y", TUTORIAL_HASH).await.unwrap());
        let costly = hasher.failure_floor();
        assert!(costly > cheap, "{costly:?} vs {cheap:?}");
        // 32 cheap jobs later, the costly one has left the window.
        for _ in 0..RECENT_JOBS {
            assert!(hasher.verify("x", &phc).await.unwrap());
        }
        assert!(hasher.failure_floor() < costly);
    }

    #[test]
    fn the_queue_defaults_to_eight_per_permit_and_is_checked() {
        let hasher = PasswordHasher::builder()
            .max_concurrency(3)
            .build()
            .unwrap();
        assert_eq!(hasher.stats().max_queue, 3 * DEFAULT_QUEUE_PER_PERMIT);
        assert!(
            PasswordHasher::builder()
                .max_queue(usize::MAX)
                .build()
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn phc_parsing_never_panics(s in "\\PC{0,120}") {
            let hasher = PasswordHasher::new();
            let _ = hasher.needs_rehash(&s);
            let _ = hasher.parse_within_ceiling(&s);
        }

        #[test]
        fn cheap_hashes_parse_and_reserialize_unchanged(
            password in "\\PC{0,40}",
            m_cost in 8u32..64,
            t_cost in 1u32..3,
        ) {
            let hasher = PasswordHasher::builder().params(m_cost, t_cost, 1).build().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let phc = runtime.block_on(hasher.hash(&password)).unwrap();
            let (parsed, _) = hasher.parse_within_ceiling(&phc).unwrap();
            prop_assert_eq!(parsed.to_string(), phc.clone());
            prop_assert!(!hasher.needs_rehash(&phc));
            prop_assert!(runtime.block_on(hasher.verify(&password, &phc)).unwrap());
        }
    }
}
