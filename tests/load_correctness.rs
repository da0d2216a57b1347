//! Load correctness: 100,000 requests at concurrency 256 against a real
//! server on `127.0.0.1:0` (hosted in this test process), mixing valid,
//! expired, forged, revoked, disabled, scope-lacking, missing, malformed
//! tokens and tokens of unknown users. Each kind has its own subjects
//! (several users per kind, valid tokens with several scope sets), and every
//! request's answer is known in advance: the status, the body's `error`, and
//! the reason the server refused it (the test-only reason header) — or, for
//! a valid token, the user and scopes the handler saw. The run asserts zero
//! wrong decisions and that resident memory settles (no growth across the
//! second half beyond a small tolerance).
//!
//! Ignored by default; CI runs it in release (`.ci/run`):
//! `cargo test --release --test load_correctness -- --ignored`.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;
use axum::{Extension, Router};
use common::*;
use jsonwebtoken::EncodingKey;
use tower_auth::{AuthLayer, Authenticated, Credentials, MemoryUserStore, Scopes, SimpleUser};

const REQUESTS: usize = 100_000;
const CONCURRENCY: usize = 256;
/// Distinct tokens per kind, so the verified-token cache sees churn.
const VARIANTS: usize = 500;
/// Distinct subjects per kind: `{kind}-0` ... `{kind}-15`.
const SUBJECTS: usize = 16;
/// The scope sets valid tokens carry (the route requires `items`).
const VALID_SCOPES: [&str; 3] = ["items", "items me", "admin items me"];

/// Resident set size of this process, in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm resident field");
    pages * 4096
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Valid,
    Expired,
    Forged,
    Revoked,
    Disabled,
    LacksScope,
    Missing,
    UnknownUser,
    Malformed,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Valid,
        Kind::Expired,
        Kind::Forged,
        Kind::Revoked,
        Kind::Disabled,
        Kind::LacksScope,
        Kind::Missing,
        Kind::UnknownUser,
        Kind::Malformed,
    ];

    /// The subject of this kind's `i`-th token.
    fn subject(self, i: usize) -> String {
        format!("{self:?}-{}", i % SUBJECTS).to_lowercase()
    }

    /// The scopes of this kind's `i`-th token.
    fn scopes(self, i: usize) -> Scopes {
        match self {
            Kind::LacksScope => Scopes::parse("me").unwrap(),
            _ => Scopes::parse(VALID_SCOPES[i % VALID_SCOPES.len()]).unwrap(),
        }
    }

    /// Status, body `error` and reason code of a refusal; `None` for a
    /// request that must succeed.
    fn expected_refusal(self) -> Option<(u16, &'static str, &'static str)> {
        Some(match self {
            Kind::Valid => return None,
            Kind::Expired => (401, "invalid_token", "expired"),
            Kind::Forged => (401, "invalid_token", "bad_signature"),
            Kind::Revoked => (401, "invalid_token", "revoked"),
            Kind::Disabled => (401, "invalid_token", "inactive_user"),
            Kind::LacksScope => (403, "insufficient_scope", "insufficient_scope"),
            Kind::Missing => (401, "unauthorized", "missing_credentials"),
            Kind::UnknownUser => (401, "invalid_token", "unknown_user"),
            Kind::Malformed => (401, "invalid_token", "malformed"),
        })
    }

    /// Whether the `n`-th request of this kind, with `token` index `i`,
    /// got the right answer.
    fn is_right(self, i: usize, status: u16, reason: &str, body: &str) -> bool {
        match self.expected_refusal() {
            None => {
                status == 200
                    && reason.is_empty()
                    && body == format!("{} [{}]", self.subject(i), self.scopes(i))
            }
            Some((want_status, code, want_reason)) => {
                let error = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|json| json["error"].as_str().map(str::to_owned));
                status == want_status && reason == want_reason && error.as_deref() == Some(code)
            }
        }
    }
}

/// The user the handler saw and the scopes in effect.
async fn who_and_scopes(Extension(auth): Extension<Authenticated<SimpleUser>>) -> String {
    format!("{} [{}]", auth.user.username, auth.claims.scope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a release-mode load run; CI runs it with --ignored"]
async fn a_hundred_thousand_mixed_requests_get_zero_wrong_decisions_and_memory_settles() {
    let codec = hs256_codec();
    let store = MemoryUserStore::new();
    // Every kind but the unknown users has its own users, holding every
    // scope a token of that kind carries (the scope-lacking ones hold `me`
    // only).
    let all_scopes = Scopes::parse("admin items me").unwrap();
    for kind in Kind::ALL {
        if matches!(kind, Kind::UnknownUser | Kind::Missing | Kind::Malformed) {
            continue;
        }
        for i in 0..SUBJECTS {
            let scopes = match kind {
                Kind::LacksScope => Scopes::parse("me").unwrap(),
                _ => all_scopes.clone(),
            };
            let mut user = SimpleUser::new(kind.subject(i), "unused").with_scopes(scopes);
            user.active = kind != Kind::Disabled;
            store.insert(user);
        }
    }

    let now = now();
    let mut tokens: Vec<Vec<String>> = Vec::new();
    for kind in Kind::ALL {
        let list = (0..VARIANTS)
            .map(|i| {
                // `jti` makes each variant a distinct token.
                let mut claims = codec.new_claims(kind.subject(i), kind.scopes(i), 0, ());
                claims.jti = Some(format!("{kind:?}-{i}"));
                match kind {
                    Kind::Expired => {
                        claims.exp = now - 60 - i as u64;
                        codec.issue(&claims).unwrap()
                    }
                    Kind::Forged => {
                        let payload = serde_json::to_value(&claims).unwrap();
                        sign_raw(
                            &at_header(tower_auth::Algorithm::HS256),
                            &payload,
                            &EncodingKey::from_secret(OTHER_SECRET),
                        )
                    }
                    Kind::Missing => String::new(),
                    // Three base64url parts, none of them JSON.
                    Kind::Malformed => format!("bm90.anNvbg.{i}"),
                    _ => codec.issue(&claims).unwrap(),
                }
            })
            .collect();
        tokens.push(list);
    }
    // Revoke after issuing: the token version moves past the tokens' 0.
    for i in 0..SUBJECTS {
        assert!(store.update(&Kind::Revoked.subject(i), |u| u.token_version = 1));
    }

    // `authenticator` installs the hook that names the reason of a refusal.
    let auth = authenticator(store, codec, Credentials::bearer());
    let app = Router::new()
        .route(
            "/items",
            get(who_and_scopes).route_layer(auth.require_scopes(["items"]).unwrap()),
        )
        .layer(AuthLayer::required(auth));
    let base = serve(app).await;
    let url = format!("{base}/items");
    let tokens = Arc::new(tokens);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(Mutex::new(Vec::<String>::new()));
    let samples = Arc::new(Mutex::new(Vec::<(usize, u64)>::new()));
    let mut workers = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let (client, url, tokens) = (client.clone(), url.clone(), tokens.clone());
        let (next, wrong, samples) = (next.clone(), wrong.clone(), samples.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= REQUESTS {
                    break;
                }
                if n % 1000 == 0 {
                    samples.lock().unwrap().push((n, rss_bytes()));
                }
                // A fixed, interleaved mix: the answer is known in advance.
                let kind = Kind::ALL[n % Kind::ALL.len()];
                let i = (n / Kind::ALL.len()) % VARIANTS;
                let token = &tokens[n % Kind::ALL.len()][i];
                let mut request = client.get(&url);
                if kind != Kind::Missing {
                    request = request.bearer_auth(token);
                }
                let outcome = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let reason = response
                            .headers()
                            .get(REASON_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = response.text().await.unwrap_or_default();
                        let right = kind.is_right(i, status, &reason, &body);
                        (!right).then(|| format!("#{n} {kind:?} {i}: {status} {reason:?} {body:?}"))
                    }
                    Err(err) => Some(format!("#{n} {kind:?}: transport error {err}")),
                };
                if let Some(report) = outcome {
                    wrong.lock().unwrap().push(report);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }

    let wrong = wrong.lock().unwrap();
    assert!(
        wrong.is_empty(),
        "{} wrong decisions out of {REQUESTS}; first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );

    let mut samples = samples.lock().unwrap().clone();
    samples.sort_unstable();
    let mid = samples[samples.len() / 2].1;
    let second_half_max = samples[samples.len() / 2..]
        .iter()
        .map(|(_, rss)| *rss)
        .max()
        .unwrap();
    // Allocator noise: 10% or 16 MiB, whichever is larger.
    let tolerance = (mid / 10).max(16 << 20);
    eprintln!(
        "RSS: first {} MiB, mid {} MiB, second-half max {} MiB, last {} MiB",
        samples[0].1 >> 20,
        mid >> 20,
        second_half_max >> 20,
        samples[samples.len() - 1].1 >> 20
    );
    assert!(
        second_half_max <= mid + tolerance,
        "resident memory grew across the second half: {} MiB at the midpoint, up to {} MiB",
        mid >> 20,
        second_half_max >> 20
    );
}
