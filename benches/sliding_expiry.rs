//! The cost of sliding expiry: the same authenticated axum route with and
//! without a policy, on a fresh token (should be equal: a few integer
//! comparisons) and on a due token (one re-issue and signature per request).

mod oneshot;
mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use tower_auth::{AuthLayer, Authenticator, Key, Scopes, SlidingExpiry, TokenCodec};

const GROUP: &str = "sliding_expiry";
const HOUR: u64 = 3600;

fn codec() -> TokenCodec {
    TokenCodec::builder(Key::hs256(&[7; 32]).unwrap())
        .access_lifetime(Duration::from_secs(HOUR))
        .build()
        .unwrap()
}

fn router(policy: Option<SlidingExpiry>) -> Router {
    let mut builder = Authenticator::builder(support::users(), codec());
    if let Some(policy) = policy {
        builder = builder.sliding_expiry(policy);
    }
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::required(builder.build().unwrap()))
}

/// A token issued `age` seconds ago with a one-hour window.
fn token(age: u64) -> String {
    let codec = codec();
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());
    claims.iat = claims.iat.map(|iat| iat - age);
    claims.auth_time = claims.iat;
    claims.exp -= age;
    codec.issue(&claims).unwrap()
}

fn bench(c: &mut Criterion) {
    support::mark_run_start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let policy = SlidingExpiry::new(Duration::from_secs(8 * HOUR));
    let (fresh, due) = (token(0), token(40 * 60));
    let cases = [
        ("fresh_without_policy", None, &fresh),
        ("fresh_with_policy", Some(policy.clone()), &fresh),
        ("due_without_policy", None, &due),
        ("due_with_policy", Some(policy), &due),
    ];
    let mut group = c.benchmark_group(GROUP);
    for (name, policy, token) in cases {
        let app = router(policy);
        let header = format!("Bearer {token}");
        oneshot::bench_get(&mut group, name, &runtime, &app, &header);
    }
    group.finish();
    support::print_ratios(
        GROUP,
        &[
            ("fresh_with_policy", "fresh_without_policy"),
            ("due_with_policy", "due_without_policy"),
        ],
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
