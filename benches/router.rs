//! The price of authentication on a whole request: the same axum `Router`
//! with and without [`AuthLayer`], driven in-process with
//! `tower::ServiceExt::oneshot` (no sockets), HS256 bearer token, user from a
//! `MemoryUserStore`, `Authenticated<U>` taken by the handler.
//!
//! ```text
//! cargo bench --bench router
//! ```
//!
//! Cases: `no_auth` (the baseline), `auth_cached` (the same token every
//! time: the verified-token cache answers), `auth_uncached` (the cache
//! turned off: every request verifies the signature). The token carries a
//! session id as a login's does, and the session store holds 10,000 revoked
//! sessions, so the revocation check costs what it costs in a busy app.

mod oneshot;
mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use tower_auth::{AuthLayer, Authenticated, Authenticator, Key, Scopes, SimpleUser, TokenCodec};

const GROUP: &str = "router";

fn codec() -> TokenCodec {
    TokenCodec::builder(Key::hs256(&[7; 32]).unwrap())
        .access_lifetime(Duration::from_secs(3600))
        .build()
        .unwrap()
}

async fn public() -> &'static str {
    "ok"
}

async fn protected(auth: axum::Extension<Authenticated<SimpleUser>>) -> &'static str {
    std::hint::black_box(&auth.user);
    "ok"
}

fn bench(c: &mut Criterion) {
    support::mark_run_start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let codec = codec();
    let mut claims = codec.new_claims("johndoe", Scopes::parse("me items").unwrap(), 0, ());
    claims.sid = Some("0b3c7f21a9e84d6c9f0e2d4b6a8c1e3f".to_owned());
    let token = codec.issue(&claims).unwrap();
    let sessions = runtime.block_on(support::sessions_with_revocations(10_000));
    let header = format!("Bearer {token}");
    let no_auth = Router::new().route("/", get(public));
    let cached = Router::new()
        .route("/", get(protected))
        .layer(AuthLayer::required(
            Authenticator::builder(support::users(), codec.clone())
                .shared_store(sessions.clone())
                .build()
                .unwrap(),
        ));
    let uncached = Router::new()
        .route("/", get(protected))
        .layer(AuthLayer::required(
            Authenticator::builder(support::users(), codec.clone())
                .shared_store(sessions.clone())
                .token_cache_capacity(0)
                .build()
                .unwrap(),
        ));

    let mut group = c.benchmark_group(GROUP);
    for (name, app) in [
        ("no_auth", no_auth),
        ("auth_cached", cached),
        ("auth_uncached", uncached),
    ] {
        oneshot::bench_get(&mut group, name, &runtime, &app, &header);
    }
    group.finish();
    support::print_ratios(
        GROUP,
        &[("auth_cached", "no_auth"), ("auth_uncached", "no_auth")],
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
