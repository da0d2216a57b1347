//! The token road on its own, per algorithm (HS256, RS256, ES256, EdDSA):
//!
//! - `decode`: a bare `jsonwebtoken::decode` with an equivalent
//!   `Validation` (pinned algorithm, `exp`/`nbf` checked, `sub`/`exp`
//!   required, no leeway): the baseline.
//! - `decode_and_lookup`: the same plus a `MemoryUserStore` lookup, the
//!   least any authenticating server does.
//! - `new_token`: [`Authenticator::authenticate_token`] on a token it has
//!   not seen (the cache is on but small, and the bench cycles through 512
//!   distinct tokens, so every call misses and tries to insert).
//! - `cache_off`: the same call with the cache turned off, on one token:
//!   what `new_token` costs without trying to insert.
//! - `cached_token`: the same call on one token, again and again (the cache
//!   answers; the user is still loaded and checked).
//!
//! ```text
//! cargo bench --bench authenticate
//! ```

mod support;

use std::cell::Cell;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use tower_auth::{Algorithm, Authenticator, CredentialKind, Key, Scopes, SimpleUser, TokenCodec};

/// The claims the codec issues, for the bare decode.
#[allow(dead_code)]
#[derive(Deserialize)]
struct BareClaims {
    sub: String,
    exp: u64,
    iat: Option<u64>,
    nbf: Option<u64>,
    jti: Option<String>,
    scope: Option<String>,
    auth_time: Option<u64>,
    token_version: Option<u64>,
}

const POOL: usize = 512;

fn pem(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The codec's key and jsonwebtoken's decoding key for `alg`.
fn keys(alg: Algorithm) -> (Key, DecodingKey) {
    let stem = match alg {
        Algorithm::HS256 => {
            let secret = [7; 32];
            return (
                Key::hs256(&secret).unwrap(),
                DecodingKey::from_secret(&secret),
            );
        }
        Algorithm::RS256 => "rsa",
        Algorithm::ES256 => "ec256",
        Algorithm::EdDSA => "ed25519",
        other => panic!("no test key for {other:?}"),
    };
    let (private, public) = (
        pem(&format!("{stem}_private.pem")),
        pem(&format!("{stem}_public.pem")),
    );
    let decoding = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&public),
        Algorithm::ES256 => DecodingKey::from_ec_pem(&public),
        _ => DecodingKey::from_ed_pem(&public),
    }
    .unwrap();
    (Key::from_pem(alg, &private, &public).unwrap(), decoding)
}

fn bench(c: &mut Criterion) {
    support::mark_run_start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (alg, group_name) in [
        (Algorithm::HS256, "authenticate_hs256"),
        (Algorithm::RS256, "authenticate_rs256"),
        (Algorithm::ES256, "authenticate_es256"),
        (Algorithm::EdDSA, "authenticate_eddsa"),
    ] {
        let (key, decoding) = keys(alg);
        // Building the codec installs the crate's crypto provider, which the
        // bare decode then uses too.
        let codec = TokenCodec::builder(key)
            .access_lifetime(Duration::from_secs(3600))
            .build()
            .unwrap();
        let issue = || {
            codec
                .issue(&codec.new_claims("johndoe", Scopes::parse("me items").unwrap(), 0, ()))
                .unwrap()
        };
        let token = issue();
        let pool: Vec<String> = (0..POOL).map(|_| issue()).collect();
        let store = support::users();
        let cached: Authenticator<SimpleUser> =
            Authenticator::builder(store.clone(), codec.clone())
                .build()
                .unwrap();
        let small: Authenticator<SimpleUser> = Authenticator::builder(store.clone(), codec.clone())
            .token_cache_capacity(16)
            .build()
            .unwrap();
        let off: Authenticator<SimpleUser> = Authenticator::builder(store.clone(), codec.clone())
            .token_cache_capacity(0)
            .build()
            .unwrap();
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);

        let mut group = c.benchmark_group(group_name);
        group.bench_function("decode", |b| {
            b.to_async(&runtime).iter(|| async {
                jsonwebtoken::decode::<BareClaims>(&token, &decoding, &validation)
                    .unwrap()
                    .claims
            })
        });
        group.bench_function("decode_and_lookup", |b| {
            b.to_async(&runtime).iter(|| async {
                let claims = jsonwebtoken::decode::<BareClaims>(&token, &decoding, &validation)
                    .unwrap()
                    .claims;
                store.get(&claims.sub).unwrap()
            })
        });
        let next = Cell::new(0);
        group.bench_function("new_token", |b| {
            b.to_async(&runtime).iter(|| {
                let i = next.get();
                next.set((i + 1) % POOL);
                let token = &pool[i];
                let auth = &small;
                async move {
                    auth.authenticate_token(token, CredentialKind::Bearer)
                        .await
                        .unwrap()
                }
            })
        });
        group.bench_function("cache_off", |b| {
            b.to_async(&runtime).iter(|| async {
                off.authenticate_token(&token, CredentialKind::Bearer)
                    .await
                    .unwrap()
            })
        });
        group.bench_function("cached_token", |b| {
            b.to_async(&runtime).iter(|| async {
                cached
                    .authenticate_token(&token, CredentialKind::Bearer)
                    .await
                    .unwrap()
            })
        });
        group.finish();
        support::print_ratios(
            group_name,
            &[
                ("new_token", "decode"),
                ("new_token", "decode_and_lookup"),
                ("cache_off", "decode_and_lookup"),
                ("cached_token", "decode"),
                ("cached_token", "decode_and_lookup"),
            ],
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
