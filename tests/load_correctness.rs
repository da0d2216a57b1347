//! Load correctness: 100,000 requests at concurrency 256 against a real
//! server on `127.0.0.1:0` (hosted in this test process), mixing valid,
//! expired, forged, revoked, disabled, scope-lacking and missing tokens.
//! Every request's answer is known in advance; the run asserts zero wrong
//! decisions and that resident memory settles (no growth across the second
//! half beyond a small tolerance).
//!
//! Ignored by default; CI runs it in release (`.ci/run`):
//! `cargo test --release --test load_correctness -- --ignored`.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use common::*;
use jsonwebtoken::EncodingKey;
use tower_auth::{AuthLayer, Credentials, MemoryUserStore, Scopes, SimpleUser};

const REQUESTS: usize = 100_000;
const CONCURRENCY: usize = 256;
/// Distinct tokens per kind, so the verified-token cache sees churn.
const VARIANTS: usize = 500;

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
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Valid,
        Kind::Expired,
        Kind::Forged,
        Kind::Revoked,
        Kind::Disabled,
        Kind::LacksScope,
        Kind::Missing,
    ];

    fn expected_status(self) -> u16 {
        match self {
            Kind::Valid => 200,
            Kind::LacksScope => 403,
            _ => 401,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a release-mode load run; CI runs it with --ignored"]
async fn a_hundred_thousand_mixed_requests_get_zero_wrong_decisions_and_memory_settles() {
    let codec = hs256_codec();
    let store = MemoryUserStore::new();
    let scopes = Scopes::parse("me items").unwrap();
    store.insert(SimpleUser::new("johndoe", "unused").with_scopes(scopes.clone()));
    store.insert(SimpleUser::new("alice", "unused").with_scopes(Scopes::parse("me").unwrap()));
    store.insert(SimpleUser::new("revoked", "unused").with_scopes(scopes.clone()));
    let mut bob = SimpleUser::new("bob", "unused").with_scopes(scopes.clone());
    bob.active = false;
    store.insert(bob);

    let now = now();
    let mut tokens: Vec<Vec<String>> = Vec::new();
    for kind in Kind::ALL {
        let list = (0..VARIANTS)
            .map(|i| {
                // `jti` makes each variant a distinct token.
                let mut claims = codec.new_claims(
                    match kind {
                        Kind::Revoked => "revoked",
                        Kind::Disabled => "bob",
                        Kind::LacksScope => "alice",
                        _ => "johndoe",
                    },
                    match kind {
                        Kind::LacksScope => Scopes::parse("me").unwrap(),
                        _ => scopes.clone(),
                    },
                    0,
                    (),
                );
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
                    _ => codec.issue(&claims).unwrap(),
                }
            })
            .collect();
        tokens.push(list);
    }
    // Revoke after issuing: the token version moves past the tokens' 0.
    assert!(store.update("revoked", |u| u.token_version = 1));

    let auth = authenticator(store, codec, Credentials::bearer());
    let app = Router::new()
        .route(
            "/items",
            get(whoami).route_layer(auth.require_scopes(["items"]).unwrap()),
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
                let token = &tokens[n % Kind::ALL.len()][(n / Kind::ALL.len()) % VARIANTS];
                let mut request = client.get(&url);
                if kind != Kind::Missing {
                    request = request.bearer_auth(token);
                }
                let outcome = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response.text().await.unwrap_or_default();
                        let right = status == kind.expected_status()
                            && (kind != Kind::Valid || body == "johndoe");
                        (!right).then(|| format!("#{n} {kind:?}: {status} {body:?}"))
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
