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
//!
//! With the `redis` feature and a Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`), two more, in the same run
//! (`cargo bench --features redis --bench router`):
//!
//! - `auth_redis`: `auth_cached` with a `RedisStore` as the shared store
//!   (the revocation check answers from the store's local set, never from
//!   Redis), against `no_auth`;
//! - `redis_refresh/refresh_grant`: a refresh grant over HTTP (reqwest to a
//!   real axum server on loopback, `POST /token` with
//!   `grant_type=refresh_token`: the family read, rotated and written back
//!   on Redis), its median latency printed. The chain of refresh tokens
//!   starts from a new login every 100 refreshes (outside the timing), as
//!   a real family is refreshed a few dozen times a day, not thousands.
//!
//! Without Redis they are skipped with a notice.

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
    #[cfg(feature = "redis")]
    let redis = redis::bench_auth(&mut group, &runtime, &codec, &header);
    group.finish();
    support::print_ratios(
        GROUP,
        &[
            ("auth_cached", "no_auth"),
            ("auth_uncached", "no_auth"),
            ("auth_redis", "no_auth"),
            ("auth_redis", "auth_cached"),
        ],
    );
    #[cfg(feature = "redis")]
    if let Some(redis) = redis {
        redis::bench_refresh(c, &redis);
    }
}

#[cfg(feature = "redis")]
mod redis {
    //! The cases that need Redis.

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::routing::{get, post};
    use criterion::measurement::WallTime;
    use criterion::{BenchmarkGroup, Criterion};
    use tokio::runtime::Runtime;
    use tower_auth::axum::token_endpoint;
    use tower_auth::redis::RedisStore;
    use tower_auth::session::RefreshTokens;
    use tower_auth::{
        AuthLayer, Authenticator, MemoryUserStore, PasswordHasher, Scopes, SimpleUser, TokenCodec,
    };

    use super::{oneshot, protected, support};

    /// Redis, and a runtime of its own that keeps the store's background
    /// task running between measurements (the benches' runtime only runs
    /// while a request is measured).
    pub struct Redis {
        url: String,
        runtime: Runtime,
    }

    /// Every bench prefix of this run, deleted at its end.
    static PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Deletes this run's keys (families expire only after days).
    async fn delete_bench_keys(url: &str) {
        let Ok(client) = ::redis::Client::open(url) else {
            return;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let prefixes = std::mem::take(&mut *PREFIXES.lock().unwrap());
        for prefix in prefixes {
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut connection)
                .await
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: Result<(), _> = ::redis::cmd("DEL")
                    .arg(chunk)
                    .query_async(&mut connection)
                    .await;
            }
        }
    }

    fn connect(runtime: &Runtime, url: &str) -> Option<RedisStore> {
        let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
        PREFIXES.lock().unwrap().push(prefix.clone());
        runtime.block_on(async {
            match tokio::time::timeout(
                Duration::from_secs(3),
                RedisStore::builder(url).prefix(prefix).connect(),
            )
            .await
            {
                Ok(Ok(store)) => Some(store),
                _ => None,
            }
        })
    }

    /// `auth_redis`, or `None` (with a notice) without Redis.
    pub fn bench_auth(
        group: &mut BenchmarkGroup<'_, WallTime>,
        runtime: &Runtime,
        codec: &TokenCodec,
        header: &str,
    ) -> Option<Redis> {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let redis = Redis {
            url,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        };
        let Some(store) = connect(&redis.runtime, &redis.url) else {
            println!(
                "NOTICE: Redis unreachable (set REDIS_URL): auth_redis and refresh_grant skipped"
            );
            return None;
        };
        let app = Router::new()
            .route("/", get(protected))
            .layer(AuthLayer::required(
                Authenticator::builder(support::users(), codec.clone())
                    .shared_store(store)
                    .build()
                    .unwrap(),
            ));
        oneshot::bench_get(group, "auth_redis", runtime, &app, header);
        Some(redis)
    }

    /// `redis_refresh/refresh_grant`, and its median.
    pub fn bench_refresh(c: &mut Criterion, redis: &Redis) {
        let Some(store) = connect(&redis.runtime, &redis.url) else {
            println!("NOTICE: Redis unreachable: refresh_grant skipped");
            return;
        };
        let passwords = PasswordHasher::builder().params(8, 1, 1).build().unwrap();
        let users = MemoryUserStore::new();
        let hash = redis.runtime.block_on(passwords.hash("secret")).unwrap();
        users.insert(SimpleUser::new("johndoe", hash).with_scopes(Scopes::parse("me").unwrap()));
        let codec = super::codec();
        let auth = Authenticator::builder(users, codec)
            .passwords(passwords)
            .refresh_tokens(RefreshTokens::new())
            .shared_store(store)
            .build()
            .unwrap();
        let app = Router::new()
            .route("/token", post(token_endpoint::<SimpleUser, ()>))
            .with_state(auth)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let base = redis.runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}/token", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            base
        });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let post = |form: &[(&str, &str)]| {
            let request = client.post(&base).form(form).send();
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                body["refresh_token"].as_str().unwrap().to_owned()
            }
        };
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let mut token = String::new();
        let mut refreshes = 0u32;
        let mut group = c.benchmark_group("redis_refresh");
        group.bench_function("refresh_grant", |b| {
            b.iter_custom(|iters| {
                redis.runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if refreshes.is_multiple_of(100) {
                            token = post(&[("username", "johndoe"), ("password", "secret")]).await;
                        }
                        refreshes += 1;
                        let start = Instant::now();
                        token = post(&[
                            ("grant_type", "refresh_token"),
                            ("refresh_token", token.as_str()),
                        ])
                        .await;
                        let took = start.elapsed();
                        latencies.lock().unwrap().push(took);
                        total += took;
                    }
                    total
                })
            })
        });
        group.finish();
        redis.runtime.block_on(delete_bench_keys(&redis.url));
        let mut latencies = latencies.lock().unwrap();
        latencies.sort_unstable();
        if !latencies.is_empty() {
            let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
            println!(
                "\nredis_refresh: refresh grant over HTTP, Redis on loopback: p50 {:.3} ms, p99 {:.3} ms ({} refreshes)",
                at(0.5).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                latencies.len()
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
