//! Issue 16: a stale token does not block public routes under the optional
//! layer (the refusal is answered where something asks for the identity),
//! and every challenge from a route that needs scopes names them.
#![cfg(feature = "axum")]

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::*;
use tower_auth::axum::{ScopeRequirement, Scoped, token_endpoint};
use tower_auth::limit::RateLimit;
use tower_auth::{
    AuthLayer, Authenticated, Authenticator, Claims, Credentials, PasswordHasher, Scopes,
    SimpleUser, SlidingExpiry, TokenCodec,
};

struct NeedsMe;
impl ScopeRequirement for NeedsMe {
    const SCOPES: &'static [&'static str] = &["me"];
}

async fn users_me(me: Authenticated<SimpleUser>) -> String {
    me.user.username.clone()
}

async fn maybe_me(me: Option<Authenticated<SimpleUser>>) -> String {
    me.map_or_else(|| "anonymous".to_owned(), |me| me.user.username.clone())
}

async fn scoped_me(me: Scoped<NeedsMe, SimpleUser>) -> String {
    me.user.username.clone()
}

async fn claims(claims: Claims<()>) -> String {
    claims.sub
}

/// An authenticator over the default users, johndoe's password `secret`
/// hashed with cheap parameters, and sliding expiry.
async fn auth(codec: &TokenCodec) -> Authenticator<SimpleUser> {
    let hasher = PasswordHasher::builder().params(64, 1, 1).build().unwrap();
    let hash = hasher.hash("secret").await.unwrap();
    Authenticator::builder(users(&hash), codec.clone())
        .realm(REALM)
        .passwords(hasher)
        .sliding_expiry(SlidingExpiry::new(Duration::from_secs(8 * 3600)))
        .build()
        .unwrap()
}

/// `password_flow`'s pattern: one optional layer over every route, public
/// and protected.
fn app(auth: Authenticator<SimpleUser>) -> Router {
    Router::new()
        .route("/token", post(token_endpoint::<SimpleUser, ()>))
        .route("/signup", post(|| async { "signed up" }))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/limited-health",
            get(|| async { "ok" })
                .route_layer(auth.limit_rate(RateLimit::per_minute(600).unwrap())),
        )
        .route("/users/me", get(users_me))
        .route("/maybe", get(maybe_me))
        .route("/scoped", get(scoped_me))
        .route("/claims", get(claims))
        .route(
            "/guarded",
            get(whoami).route_layer(auth.require_scopes(["me"]).unwrap()),
        )
        .layer(AuthLayer::optional(auth.clone()))
        .with_state(auth)
}

fn expired(codec: &TokenCodec) -> String {
    let mut claims = codec.new_claims("johndoe", Scopes::parse("me items").unwrap(), 0, ());
    claims.iat = Some(now() - 3600);
    claims.auth_time = claims.iat;
    claims.exp = now() - 60;
    codec.issue(&claims).unwrap()
}

#[tokio::test]
async fn a_stale_token_does_not_block_public_routes() {
    let codec = hs256_codec();
    let base = serve(app(auth(&codec).await)).await;
    let stale = expired(&codec);

    let login = client()
        .post(format!("{base}/token"))
        .bearer_auth(&stale)
        .form(&[("username", "johndoe"), ("password", "secret")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "the stale token blocked the login");
    let fresh: serde_json::Value = login.json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();

    let signup = client()
        .post(format!("{base}/signup"))
        .bearer_auth(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 200);
    for path in ["/health", "/limited-health"] {
        let reply = get_bearer(&base, path, &stale).await;
        assert_eq!((reply.status, reply.text()), (200, "ok".into()), "{path}");
    }
    let reply = get_bearer(&base, "/nowhere", &stale).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(reply.challenge.is_none());

    // Whatever asks for the identity answers 401, with the description.
    for path in ["/users/me", "/maybe", "/claims"] {
        let reply = get_bearer(&base, path, &stale).await;
        reply.assert_invalid_token();
        assert_eq!(reply.description(), "the access token expired", "{path}");
        assert!(reply.headers.get("x-refreshed-token").is_none());
    }
    assert_eq!(
        get_bearer(&base, "/users/me", &fresh).await.text(),
        "johndoe"
    );
    assert_eq!(get_anonymous(&base, "/maybe").await.text(), "anonymous");
}

#[tokio::test]
async fn the_answer_where_the_identity_is_asked_for_is_the_layers_answer() {
    let codec = hs256_codec();
    let optional = serve(app(auth(&codec).await)).await;
    let auth = auth(&codec).await;
    let required = serve(
        Router::new()
            .route("/users/me", get(users_me))
            .layer(AuthLayer::required(auth.clone()))
            .with_state(auth),
    )
    .await;
    let disabled = token_for(&codec, "bob", "me");
    for token in [expired(&codec), "garbage".to_owned(), disabled] {
        let late = get_bearer(&optional, "/users/me", &token).await;
        let early = get_bearer(&required, "/users/me", &token).await;
        assert_eq!(late.status, 401);
        assert_eq!(
            (late.status, &late.challenge, &late.bytes),
            (early.status, &early.challenge, &early.bytes)
        );
    }
    let malformed = Reply::from(
        client()
            .get(format!("{optional}/users/me"))
            .header("authorization", "Bearer a b")
            .send()
            .await
            .unwrap(),
    )
    .await;
    malformed.assert_invalid_request();
    let health = Reply::from(
        client()
            .get(format!("{optional}/health"))
            .header("authorization", "Bearer a b")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, 200, "{health:?}");
}

/// The exact challenge a scope guard or `Scoped` sends for `error`.
fn scoped_challenge(error: Option<(&str, &str)>, scope: &str) -> String {
    match error {
        None => format!("Bearer realm=\"{REALM}\", scope=\"{scope}\""),
        Some((code, description)) => format!(
            "Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{description}\", scope=\"{scope}\""
        ),
    }
}

#[tokio::test]
async fn every_challenge_from_a_route_that_needs_scopes_names_them() {
    let codec = hs256_codec();
    let layered = serve(app(auth(&codec).await)).await;
    // The extractor without any layer, the Authenticator as state.
    let as_state = serve(
        Router::new()
            .route("/scoped", get(scoped_me))
            .with_state(auth(&codec).await),
    )
    .await;
    let expired = expired(&codec);
    let revoked = token_for(&codec, "bob", "me");
    let cases = [
        (&layered, "/scoped"),
        (&layered, "/guarded"),
        (&as_state, "/scoped"),
    ];
    for (base, path) in cases {
        let reply = get_anonymous(base, path).await;
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(
            reply.challenge.as_deref(),
            Some(scoped_challenge(None, "me").as_str()),
            "{base}{path}"
        );
        for (token, description) in [
            (&expired, "the access token expired"),
            (
                &revoked,
                "the access token is not accepted: its account is unknown, disabled or has revoked it",
            ),
        ] {
            let reply = get_bearer(base, path, token).await;
            assert_eq!(reply.status, 401, "{path}");
            reply.assert_error_body("invalid_token");
            assert_eq!(reply.description(), description);
            assert_eq!(
                reply.challenge.as_deref(),
                Some(scoped_challenge(Some(("invalid_token", description)), "me").as_str()),
                "{base}{path}"
            );
        }
        let reply = get_bearer(base, path, &token_for(&codec, "johndoe", "items")).await;
        assert_eq!(reply.status, 403, "{path}");
        assert_eq!(
            reply.challenge.as_deref(),
            Some(
                scoped_challenge(
                    Some(("insufficient_scope", "the access token lacks the scope: me")),
                    "me"
                )
                .as_str()
            ),
        );
    }
    // A route that needs no scope keeps the bare challenge.
    get_anonymous(&layered, "/users/me")
        .await
        .assert_no_credentials();
}

/// The Authenticator's own `Credentials`, so the test shows the cookie path
/// too: a stale cookie on the session login does not block it.
#[tokio::test]
async fn a_stale_cookie_does_not_block_the_session_login() {
    let codec = hs256_codec();
    let hasher = PasswordHasher::builder().params(64, 1, 1).build().unwrap();
    let hash = hasher.hash("secret").await.unwrap();
    let auth = Authenticator::builder(users(&hash), codec.clone())
        .realm(REALM)
        .passwords(hasher)
        .credentials(Credentials::bearer().cookie("at"))
        .build()
        .unwrap();
    let base = serve(
        Router::new()
            .route(
                "/login",
                post(tower_auth::axum::session_login::<SimpleUser, ()>),
            )
            .layer(AuthLayer::optional(auth.clone()))
            .with_state(auth),
    )
    .await;
    let response = client()
        .post(format!("{base}/login"))
        .header("cookie", format!("at={}", expired(&codec)))
        .form(&[("username", "johndoe"), ("password", "secret")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("set-cookie").is_some());
}
