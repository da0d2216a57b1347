//! What the benches share: the user they authenticate, and reading
//! criterion's estimates back to print ratios against a baseline measured in
//! the same run.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::SystemTime;

use tower_auth::store::{MemoryStore, SharedStore};
use tower_auth::{MemoryUserStore, Scopes, SimpleUser};

/// The store every bench looks its user up in: `johndoe`, scopes `me items`.
pub fn users() -> MemoryUserStore<SimpleUser> {
    let users = MemoryUserStore::new();
    users.insert(
        SimpleUser::new("johndoe", "unused").with_scopes(Scopes::parse("me items").unwrap()),
    );
    users
}

/// A session store holding `revoked` logged-out sessions (none of them the
/// benches' own), as a busy app's would.
#[allow(dead_code)] // Not every bench uses it.
pub async fn sessions_with_revocations(revoked: usize) -> MemoryStore {
    let sessions = MemoryStore::new();
    let until = u64::MAX / 2;
    for n in 0..revoked {
        sessions
            .revoke_session(&format!("{n:032x}"), until)
            .await
            .unwrap();
    }
    sessions
}

static RUN_STARTED: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);

/// Call first thing in a bench: estimates older than this call are from an
/// earlier run and are never reported as this run's.
pub fn mark_run_start() {
    LazyLock::force(&RUN_STARTED);
}

/// The mean time criterion measured for `group/function` in this run, in
/// nanoseconds, read from its `estimates.json` (absent in `--test` runs and
/// for groups a filter skipped).
pub fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let dir = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("criterion"));
    let path = dir
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if written < *RUN_STARTED {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Prints `candidate / baseline` for each pair, as time ratios (1.00 = the
/// same cost) and throughput ratios (baseline time / candidate time).
pub fn print_ratios(group: &str, pairs: &[(&str, &str)]) {
    println!("\n{group}: ratios measured in this run");
    for (candidate, baseline) in pairs {
        match (mean_ns(group, candidate), mean_ns(group, baseline)) {
            (Some(c), Some(b)) => println!(
                "  {candidate:<32} vs {baseline:<32} time x{:.2}  throughput x{:.2}  ({c:.0} ns vs {b:.0} ns)",
                c / b,
                b / c
            ),
            _ => println!("  {candidate} vs {baseline}: not measured in this run"),
        }
    }
}
