//! Sections 3 and 4 of issue 2: users loaded per request, and the one way
//! errors are rendered, over real HTTP.

mod common;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::Full;
use std::sync::Arc;

use tower_auth::{
    AuthError, AuthLayer, Authenticator, Credentials, MemoryUserStore, SimpleUser, UserStore,
};

async fn serve_users() -> (String, tower_auth::TokenCodec, MemoryUserStore<SimpleUser>) {
    let codec = hs256_codec();
    let store = users("unused");
    let auth = authenticator(store.clone(), codec.clone(), Credentials::bearer());
    (serve(protected_app(auth)).await, codec, store)
}

#[tokio::test]
async fn unknown_subject_is_invalid_token() {
    let (base, codec, _) = serve_users().await;
    let reply = get_bearer(&base, "/me", &token_for(&codec, "nobody", "")).await;
    reply.assert_invalid_token_because("unknown_user");
    // A subject that never existed was never revoked: the text, shared with
    // disabled users and revoked tokens, must be true of all three.
    assert_eq!(reply.description(), USER_REFUSED);
}

/// The one description for an unknown subject, a disabled user and a
/// revoked token.
const USER_REFUSED: &str =
    "the access token is not accepted: its account is unknown, disabled or has revoked it";

#[tokio::test]
async fn user_removed_after_issue_is_invalid_token() {
    let (base, codec, store) = serve_users().await;
    let token = token_for(&codec, "alice", "");
    assert_eq!(get_bearer(&base, "/me", &token).await.status, 200);
    store.remove("alice");
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("unknown_user");
}

#[tokio::test]
async fn disabled_user_is_invalid_token() {
    let (base, codec, store) = serve_users().await;
    // bob is disabled from the start.
    get_bearer(&base, "/me", &token_for(&codec, "bob", ""))
        .await
        .assert_invalid_token_because("inactive_user");
    // alice is disabled while holding a token.
    let token = token_for(&codec, "alice", "");
    assert_eq!(get_bearer(&base, "/me", &token).await.status, 200);
    store.update("alice", |u| u.active = false);
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("inactive_user");
}

#[tokio::test]
async fn token_version_bumped_after_issue_revokes_the_token() {
    let (base, codec, store) = serve_users().await;
    let token = token_for(&codec, "johndoe", "");
    assert_eq!(get_bearer(&base, "/me", &token).await.status, 200);
    store.update("johndoe", |u| u.token_version += 1);
    let reply = get_bearer(&base, "/me", &token).await;
    reply.assert_invalid_token_because("revoked");
    // A token carrying the new version works.
    let fresh = codec
        .issue(&codec.new_claims("johndoe", tower_auth::Scopes::none(), 1, ()))
        .unwrap();
    assert_eq!(get_bearer(&base, "/me", &fresh).await.status, 200);
}

/// A token signed without a `token_version` claim (by another issuer, or
/// before versions existed) counts as version 0: raising the user's version
/// revokes it like any other.
#[tokio::test]
async fn a_token_without_a_version_claim_is_revoked_by_a_version_bump() {
    let (base, _, store) = serve_users().await;
    let claims = payload("alice");
    assert!(claims.get("token_version").is_none(), "{claims}");
    let unversioned = sign_hs256(&at_header(tower_auth::Algorithm::HS256), &claims);
    let reply = get_bearer(&base, "/me", &unversioned).await;
    assert_eq!((reply.status, reply.text()), (200, "alice".into()));

    store.update("alice", |u| u.token_version = 1);
    get_bearer(&base, "/me", &unversioned)
        .await
        .assert_invalid_token_because("revoked");
}

#[tokio::test]
async fn unknown_disabled_and_revoked_share_one_answer() {
    let (base, codec, store) = serve_users().await;
    let unknown = get_bearer(&base, "/me", &token_for(&codec, "nobody", "")).await;
    let disabled = get_bearer(&base, "/me", &token_for(&codec, "bob", "")).await;
    let token = token_for(&codec, "alice", "");
    store.update("alice", |u| u.token_version = 7);
    let revoked = get_bearer(&base, "/me", &token).await;
    assert_eq!(unknown.bytes, disabled.bytes);
    assert_eq!(unknown.bytes, revoked.bytes);
    assert_eq!(revoked.description(), USER_REFUSED);
    assert_eq!(unknown.challenge, disabled.challenge);
    assert_eq!(unknown.challenge, revoked.challenge);
    // ... for three different reasons, which only the server knows.
    assert_eq!(
        [unknown.reason(), disabled.reason(), revoked.reason()],
        ["unknown_user", "inactive_user", "revoked"]
    );
}

/// A store whose database is down, with the error types apps use: the
/// boxed error of most database layers, and `anyhow::Error`. Neither
/// implements `std::error::Error`; both convert into the crate's boxed error.
struct DownStore<E>(fn() -> E);

impl<E: Into<tower_auth::user::BoxError> + Send + 'static> UserStore for DownStore<E> {
    type User = SimpleUser;
    type Error = E;

    async fn find_by_subject(&self, _sub: &str) -> Result<Option<Arc<SimpleUser>>, E> {
        Err((self.0)())
    }

    async fn find_by_username(&self, _name: &str) -> Result<Option<Arc<SimpleUser>>, E> {
        Err((self.0)())
    }
}

#[tokio::test]
async fn stores_may_fail_with_boxed_errors_and_anyhow() {
    async fn status_with<S: UserStore<User = SimpleUser>>(store: S) -> u16 {
        let codec = hs256_codec();
        let auth = Authenticator::builder(store, codec.clone())
            .realm(REALM)
            .build()
            .unwrap();
        let base = serve(protected_app(auth)).await;
        let reply = get_bearer(&base, "/me", &token_for(&codec, "johndoe", "")).await;
        reply.assert_error_body("temporarily_unavailable");
        reply.status
    }
    let boxed = DownStore(|| -> Box<dyn std::error::Error + Send + Sync> { "db down".into() });
    assert_eq!(status_with(boxed).await, 503);
    let anyhow = DownStore(|| anyhow::anyhow!("db down"));
    assert_eq!(status_with(anyhow).await, 503);
}

#[tokio::test]
async fn failing_store_is_503_with_nothing_internal_in_the_body() {
    let codec = hs256_codec();
    let auth = Authenticator::builder(FailingStore, codec.clone())
        .realm(REALM)
        .render_errors(reason_header)
        .build()
        .unwrap();
    let base = serve(protected_app(auth)).await;
    let reply = get_bearer(&base, "/me", &token_for(&codec, "johndoe", "")).await;
    reply.assert_refused(503, "temporarily_unavailable", "user_store");
    assert_eq!(reply.headers["retry-after"], "5", "{reply:?}");
    let text = reply.text();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("db password"), "{text}");
    for (name, value) in &reply.headers {
        let value = value.to_str().unwrap_or("");
        assert!(!value.contains("hunter2"), "{name}: {value}");
    }
}

/// `/me` requires `me`; `/items` requires `me` and `items`.
fn scoped_app(auth: Authenticator<SimpleUser>, layer: AuthLayer<SimpleUser>) -> Router {
    Router::new()
        .route(
            "/me",
            get(whoami).route_layer(auth.require_scopes(["me"]).unwrap()),
        )
        .route(
            "/items",
            get(whoami).route_layer(auth.require_scopes(["me", "items"]).unwrap()),
        )
        .layer(layer)
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope_naming_the_required_scopes() {
    let codec = hs256_codec();
    let auth = authenticator(users("unused"), codec.clone(), Credentials::bearer());
    let base = serve(scoped_app(auth.clone(), AuthLayer::required(auth))).await;

    let me_only = token_for(&codec, "johndoe", "me");
    assert_eq!(get_bearer(&base, "/me", &me_only).await.status, 200);
    let reply = get_bearer(&base, "/items", &me_only).await;
    reply.assert_refused(403, "insufficient_scope", "insufficient_scope");
    assert_eq!(
        reply.challenge.as_deref(),
        Some(
            format!(
                "{}, scope=\"items me\"",
                challenge("insufficient_scope", reply.description())
            )
            .as_str()
        ),
    );
    assert!(reply.description().contains("items"), "{reply:?}");

    // No scopes at all: both routes name their requirement.
    let none = token_for(&codec, "johndoe", "");
    let reply = get_bearer(&base, "/me", &none).await;
    reply.assert_refused(403, "insufficient_scope", "insufficient_scope");
    assert!(
        reply
            .challenge
            .as_deref()
            .unwrap()
            .ends_with(", scope=\"me\""),
        "{reply:?}"
    );

    let both = token_for(&codec, "johndoe", "me items");
    assert_eq!(get_bearer(&base, "/items", &both).await.status, 200);
}

#[tokio::test]
async fn anonymous_request_on_a_scope_protected_route_is_401_not_403() {
    let codec = hs256_codec();
    let auth = authenticator(users("unused"), codec, Credentials::bearer());
    // Optional layer: the anonymous request reaches the scope check, whose
    // challenge names the route's scopes.
    let base = serve(scoped_app(auth.clone(), AuthLayer::optional(auth.clone()))).await;
    for (path, scope) in [("/items", "items me"), ("/me", "me")] {
        let reply = get_anonymous(&base, path).await;
        assert_eq!(reply.status, 401, "{reply:?}");
        assert_ne!(reply.error(), "invalid_token");
        reply.assert_reason("missing_credentials");
        assert_eq!(
            reply.challenge,
            Some(format!("Bearer realm=\"{REALM}\", scope=\"{scope}\""))
        );
    }
    // Required layer: the same answer.
    let base = serve(scoped_app(auth.clone(), AuthLayer::required(auth))).await;
    let reply = get_anonymous(&base, "/items").await;
    reply.assert_no_credentials();
    reply.assert_reason("missing_credentials");
}

/// Replaces the body with `custom:{code}` as text; keeps status and headers.
fn plain_text_hook(err: &AuthError, default: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, _) = default.into_parts();
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    let code = match err {
        AuthError::MissingCredentials => "missing",
        AuthError::InvalidRequest(_) => "malformed",
        AuthError::InvalidToken(_) => "bad-token",
        AuthError::InsufficientScope { .. } => "scope",
        _ => "other",
    };
    Response::from_parts(parts, Full::new(Bytes::from(format!("custom:{code}"))))
}

fn hooked_auth(codec: tower_auth::TokenCodec) -> Authenticator<SimpleUser> {
    Authenticator::builder(users("unused"), codec)
        .realm(REALM)
        .render_errors(plain_text_hook)
        .build()
        .unwrap()
}

/// Asserts `hooked` is the hook's body with `plain`'s status and challenge.
fn assert_hooked(hooked: &Reply, plain: &Reply, body: &str) {
    assert_eq!(hooked.status, plain.status, "{hooked:?}");
    assert_eq!(hooked.challenge, plain.challenge, "{hooked:?}");
    assert!(plain.challenge.is_some());
    assert_eq!(hooked.text(), body);
    assert_eq!(hooked.headers["content-type"], "text/plain");
    assert_ne!(hooked.bytes, plain.bytes);
}

#[tokio::test]
async fn render_hook_replaces_the_body_but_keeps_status_and_challenge_on_the_layer_path() {
    let codec = hs256_codec();
    let plain_auth = authenticator(users("unused"), codec.clone(), Credentials::bearer());
    let plain = serve(scoped_app(
        plain_auth.clone(),
        AuthLayer::required(plain_auth),
    ))
    .await;
    let auth = hooked_auth(codec.clone());
    let hooked = serve(scoped_app(auth.clone(), AuthLayer::required(auth))).await;

    assert_hooked(
        &get_anonymous(&hooked, "/me").await,
        &get_anonymous(&plain, "/me").await,
        "custom:missing",
    );
    assert_hooked(
        &get_bearer(&hooked, "/me", "not-a-jwt").await,
        &get_bearer(&plain, "/me", "not-a-jwt").await,
        "custom:bad-token",
    );
    let malformed = |base: &str| {
        client()
            .get(format!("{base}/me"))
            .header("authorization", "Bearer a b")
            .send()
    };
    assert_hooked(
        &Reply::from(malformed(&hooked).await.unwrap()).await,
        &Reply::from(malformed(&plain).await.unwrap()).await,
        "custom:malformed",
    );
    // The scope layer renders through the same hook.
    let me_only = token_for(&codec, "johndoe", "me");
    let hooked_403 = get_bearer(&hooked, "/items", &me_only).await;
    assert_hooked(
        &hooked_403,
        &get_bearer(&plain, "/items", &me_only).await,
        "custom:scope",
    );
    assert_eq!(hooked_403.status, 403);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn render_hook_replaces_the_body_but_keeps_status_and_challenge_on_the_extractor_path() {
    use tower_auth::Authenticated;
    use tower_auth::axum::{ScopeRequirement, Scoped};

    struct NeedsItems;
    impl ScopeRequirement for NeedsItems {
        const SCOPES: &'static [&'static str] = &["me", "items"];
    }
    async fn me(auth: Authenticated<SimpleUser>) -> String {
        auth.user.username.clone()
    }
    async fn items(auth: Scoped<NeedsItems, SimpleUser>) -> String {
        auth.user.username.clone()
    }
    // No layer: the extractors run the Authenticator from the state.
    fn app(auth: Authenticator<SimpleUser>) -> Router {
        Router::new()
            .route("/me", get(me))
            .route("/items", get(items))
            .with_state(auth)
    }

    let codec = hs256_codec();
    let plain = serve(app(authenticator(
        users("unused"),
        codec.clone(),
        Credentials::bearer(),
    )))
    .await;
    let hooked = serve(app(hooked_auth(codec.clone()))).await;

    assert_hooked(
        &get_anonymous(&hooked, "/me").await,
        &get_anonymous(&plain, "/me").await,
        "custom:missing",
    );
    assert_hooked(
        &get_bearer(&hooked, "/me", "not-a-jwt").await,
        &get_bearer(&plain, "/me", "not-a-jwt").await,
        "custom:bad-token",
    );
    let me_only = token_for(&codec, "johndoe", "me");
    assert_hooked(
        &get_bearer(&hooked, "/items", &me_only).await,
        &get_bearer(&plain, "/items", &me_only).await,
        "custom:scope",
    );
}

#[tokio::test]
async fn error_bodies_are_json_with_error_and_description() {
    let (base, _, _) = serve_users().await;
    let reply = get_bearer(&base, "/me", "x.y.z").await;
    assert_eq!(reply.headers["content-type"], "application/json");
    reply.assert_invalid_token_because("malformed");
    let reply = get_anonymous(&base, "/me").await;
    assert_eq!(reply.headers["content-type"], "application/json");
}
