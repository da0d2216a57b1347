//! Section 5 of issue 2: the tower layer (both modes) and the axum
//! extractors (with the layer, and without it, FastAPI `Depends` style).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, options};
use common::*;
use http::StatusCode;
use tower_auth::{AuthLayer, Authenticated, Credentials, SimpleUser};

/// `/me` counts its calls and answers the username, `anonymous`, or the
/// layer's refusal (asked as a plain tower service would ask).
fn counting_app(layer: AuthLayer<SimpleUser>, calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/me",
            get(move |request: axum::extract::Request| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match Authenticated::<SimpleUser>::from_layer(request.extensions()) {
                    Ok(Some(auth)) => auth.user.username.clone().into_response(),
                    Ok(None) => "anonymous".into_response(),
                    Err(refusal) => refusal.into_response(),
                }
            }),
        )
        .layer(layer)
}

#[tokio::test]
async fn required_layer_rejects_before_the_handler_runs() {
    let codec = hs256_codec();
    let auth = authenticator(users("unused"), codec.clone(), Credentials::bearer());
    let calls = Arc::new(AtomicUsize::new(0));
    let base = serve(counting_app(AuthLayer::required(auth), calls.clone())).await;

    get_anonymous(&base, "/me").await.assert_no_credentials();
    get_bearer(&base, "/me", "garbage")
        .await
        .assert_invalid_token_because("malformed");
    get_bearer(&base, "/me", &token_for(&codec, "bob", ""))
        .await
        .assert_invalid_token_because("inactive_user");
    Reply::from(
        client()
            .get(format!("{base}/me"))
            .header("authorization", "Bearer")
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_invalid_request();
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler ran");

    let reply = get_bearer(&base, "/me", &token_for(&codec, "johndoe", "")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "johndoe");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn optional_layer_passes_anonymous_through_and_records_bad_tokens() {
    let codec = hs256_codec();
    let auth = authenticator(users("unused"), codec.clone(), Credentials::bearer());
    let calls = Arc::new(AtomicUsize::new(0));
    let base = serve(counting_app(AuthLayer::optional(auth), calls.clone())).await;

    let reply = get_anonymous(&base, "/me").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "anonymous");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let reply = get_bearer(&base, "/me", &token_for(&codec, "johndoe", "")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "johndoe");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A bad token is not "anonymous": the request goes on (decision 6),
    // and asking for the identity answers 401.
    get_bearer(&base, "/me", "garbage")
        .await
        .assert_invalid_token_because("malformed");
    let mut expired = codec.new_claims("johndoe", tower_auth::Scopes::none(), 0, ());
    expired.exp = now() - 60;
    get_bearer(&base, "/me", &codec.issue(&expired).unwrap())
        .await
        .assert_invalid_token_because("expired");
    Reply::from(
        client()
            .get(format!("{base}/me"))
            .header("authorization", "Bearer a b")
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_invalid_request();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "the handler asked each time"
    );
}

#[tokio::test]
async fn options_passes_through_the_required_layer_untouched() {
    let codec = hs256_codec();
    let auth = authenticator(users("unused"), codec, Credentials::bearer());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let preflight = move || async move {
        counter.fetch_add(1, Ordering::SeqCst);
        (StatusCode::NO_CONTENT, [("x-preflight", "handled")])
    };
    let app = Router::new()
        .route("/me", options(preflight.clone()).get(whoami))
        .route(
            "/scoped",
            options(preflight)
                .get(whoami)
                .route_layer(auth.require_scopes(["me"]).unwrap()),
        )
        .layer(AuthLayer::required(auth));
    let base = serve(app).await;

    for path in ["/me", "/scoped"] {
        for token in [None, Some("garbage")] {
            let mut request = client()
                .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
                .header("origin", "https://app.example")
                .header("access-control-request-method", "GET");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let reply = Reply::from(request.send().await.unwrap()).await;
            assert_eq!(reply.status, 204, "{path} {token:?}: {reply:?}");
            assert_eq!(reply.headers["x-preflight"], "handled");
            assert!(reply.challenge.is_none());
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // GET on the same route is still protected.
    get_anonymous(&base, "/me").await.assert_no_credentials();
}

#[cfg(feature = "axum")]
mod extractors {
    use super::*;
    use axum::extract::FromRef;
    use tower_auth::axum::{ScopeRequirement, Scoped};
    use tower_auth::{Authenticator, Claims, Scopes, TokenCodec};

    async fn me(auth: Authenticated<SimpleUser>) -> String {
        auth.user.username.clone()
    }

    async fn maybe_me(auth: Option<Authenticated<SimpleUser>>) -> String {
        auth.map_or_else(|| "anonymous".to_owned(), |a| a.user.username.clone())
    }

    struct NeedsMe;
    impl ScopeRequirement for NeedsMe {
        const SCOPES: &'static [&'static str] = &["me"];
    }

    struct NeedsItems;
    impl ScopeRequirement for NeedsItems {
        const SCOPES: &'static [&'static str] = &["me", "items"];
    }

    async fn scoped_me(auth: Scoped<NeedsMe, SimpleUser>) -> String {
        auth.user.username.clone()
    }

    async fn scoped_items(auth: Scoped<NeedsItems, SimpleUser>) -> String {
        format!("{} {}", auth.user.username, auth.claims.scope)
    }

    async fn claims(claims: Claims<()>) -> String {
        format!("{} [{}]", claims.sub, claims.scope)
    }

    fn routes<S: Clone + Send + Sync + 'static>() -> Router<S>
    where
        Authenticated<SimpleUser>: axum::extract::FromRequestParts<S>,
        Option<Authenticated<SimpleUser>>: axum::extract::FromRequestParts<S>,
        Scoped<NeedsMe, SimpleUser>: axum::extract::FromRequestParts<S>,
        Scoped<NeedsItems, SimpleUser>: axum::extract::FromRequestParts<S>,
    {
        Router::new()
            .route("/me", get(me))
            .route("/maybe", get(maybe_me))
            .route("/scoped/me", get(scoped_me))
            .route("/scoped/items", get(scoped_items))
    }

    fn auth(codec: &TokenCodec) -> Authenticator<SimpleUser> {
        authenticator(users("unused"), codec.clone(), Credentials::bearer())
    }

    #[derive(Clone, FromRef)]
    struct AppState {
        auth: Authenticator<SimpleUser>,
        greeting: &'static str,
    }

    /// The same routes three ways: behind the required layer (state `()`),
    /// with the Authenticator as the state, and inside a larger state.
    async fn three_servers(codec: &TokenCodec) -> [String; 3] {
        let layered = routes::<()>()
            .route("/claims", get(claims))
            .layer(AuthLayer::required(auth(codec)));
        let as_state = routes().with_state(auth(codec));
        let in_state = routes().with_state(AppState {
            auth: auth(codec),
            greeting: "hi",
        });
        [
            serve(layered).await,
            serve(as_state).await,
            serve(in_state).await,
        ]
    }

    /// Requests every server must answer the same way on `/me`.
    fn probes(codec: &TokenCodec) -> Vec<(&'static str, Option<String>)> {
        let mut expired = codec.new_claims("johndoe", Scopes::none(), 0, ());
        expired.exp = now() - 60;
        vec![
            ("no credentials", None),
            ("other scheme", Some("Basic dXNlcjpwYXNz".into())),
            ("bearer alone", Some("Bearer".into())),
            ("two tokens", Some("Bearer a b".into())),
            ("garbage token", Some("Bearer garbage".into())),
            (
                "expired",
                Some(format!("Bearer {}", codec.issue(&expired).unwrap())),
            ),
            (
                "unknown user",
                Some(format!("Bearer {}", token_for(codec, "nobody", ""))),
            ),
            (
                "disabled user",
                Some(format!("Bearer {}", token_for(codec, "bob", ""))),
            ),
            (
                "valid",
                Some(format!("Bearer {}", token_for(codec, "johndoe", "me"))),
            ),
        ]
    }

    async fn probe(base: &str, path: &str, authorization: &Option<String>) -> Reply {
        let mut request = client().get(format!("{base}{path}"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    #[tokio::test]
    async fn authenticated_via_layer_and_via_state_give_the_same_answers() {
        let codec = hs256_codec();
        let servers = three_servers(&codec).await;
        for (what, authorization) in probes(&codec) {
            let replies = [
                probe(&servers[0], "/me", &authorization).await,
                probe(&servers[1], "/me", &authorization).await,
                probe(&servers[2], "/me", &authorization).await,
            ];
            for reply in &replies[1..] {
                assert_eq!(reply.status, replies[0].status, "{what}: {reply:?}");
                assert_eq!(reply.challenge, replies[0].challenge, "{what}");
                assert_eq!(reply.bytes, replies[0].bytes, "{what}");
                assert_eq!(reply.reason(), replies[0].reason(), "{what}");
            }
            match what {
                "valid" => assert_eq!(replies[0].text(), "johndoe"),
                "no credentials" | "other scheme" => {
                    replies[0].assert_no_credentials();
                    replies[0].assert_reason("missing_credentials");
                }
                "bearer alone" | "two tokens" => {
                    replies[0].assert_invalid_request();
                    replies[0].assert_reason("invalid_request");
                }
                "garbage token" => replies[0].assert_invalid_token_because("malformed"),
                "expired" => replies[0].assert_invalid_token_because("expired"),
                "unknown user" => replies[0].assert_invalid_token_because("unknown_user"),
                "disabled user" => replies[0].assert_invalid_token_because("inactive_user"),
                other => panic!("no expectation for the probe {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn optional_authenticated_is_none_without_credentials_and_401_with_bad_ones() {
        let codec = hs256_codec();
        // Without the layer (the required layer would answer 401 first).
        let [_, as_state, in_state] = three_servers(&codec).await;
        for base in [as_state, in_state] {
            let reply = get_anonymous(&base, "/maybe").await;
            assert_eq!(reply.status, 200, "{base}: {reply:?}");
            assert_eq!(reply.text(), "anonymous");
            let reply = get_bearer(&base, "/maybe", &token_for(&codec, "johndoe", "")).await;
            assert_eq!(reply.text(), "johndoe");
            get_bearer(&base, "/maybe", "garbage")
                .await
                .assert_invalid_token_because("malformed");
        }
        // Under the optional layer too.
        let app = routes::<()>().layer(AuthLayer::optional(auth(&codec)));
        let base = serve(app).await;
        assert_eq!(get_anonymous(&base, "/maybe").await.text(), "anonymous");
        assert_eq!(
            get_bearer(&base, "/maybe", &token_for(&codec, "alice", ""))
                .await
                .text(),
            "alice"
        );
        get_bearer(&base, "/maybe", "garbage")
            .await
            .assert_invalid_token_because("malformed");
    }

    #[tokio::test]
    async fn scoped_extractor_requires_every_scope() {
        let codec = hs256_codec();
        let servers = three_servers(&codec).await;
        for base in &servers {
            let me_only = token_for(&codec, "johndoe", "me");
            let reply = get_bearer(base, "/scoped/me", &me_only).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(reply.text(), "johndoe");

            let reply = get_bearer(base, "/scoped/items", &me_only).await;
            reply.assert_refused(403, "insufficient_scope", "insufficient_scope");
            assert_eq!(
                reply.challenge.as_deref(),
                Some(
                    format!(
                        "{}, scope=\"items me\"",
                        challenge("insufficient_scope", reply.description())
                    )
                    .as_str()
                )
            );

            let both = token_for(&codec, "johndoe", "me items");
            let reply = get_bearer(base, "/scoped/items", &both).await;
            assert_eq!(reply.text(), "johndoe items me");

            // Anonymous: 401, never 403. The extractor's challenges name
            // its scopes; behind the required layer, the layer answers
            // first and knows no route's scopes.
            let scope = |scopes: &str| match base == &servers[0] {
                true => String::new(),
                false => format!(", scope=\"{scopes}\""),
            };
            let reply = get_anonymous(base, "/scoped/items").await;
            assert_eq!(reply.status, 401, "{reply:?}");
            assert_ne!(reply.error(), "invalid_token");
            reply.assert_reason("missing_credentials");
            assert_eq!(
                reply.challenge,
                Some(format!("Bearer realm=\"{REALM}\"{}", scope("items me")))
            );
            let reply = get_bearer(base, "/scoped/me", "garbage").await;
            assert_eq!(reply.status, 401, "{reply:?}");
            reply.assert_error_body("invalid_token");
            reply.assert_reason("malformed");
            assert_eq!(
                reply.challenge,
                Some(format!(
                    "{}{}",
                    challenge("invalid_token", reply.description()),
                    scope("me")
                ))
            );
        }
    }

    #[tokio::test]
    async fn claims_extractor_reads_what_the_layer_verified() {
        let codec = hs256_codec();
        let [layered, _, _] = three_servers(&codec).await;
        let reply = get_bearer(
            &layered,
            "/claims",
            &token_for(&codec, "johndoe", "items me"),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.text(), "johndoe [items me]");
        get_anonymous(&layered, "/claims")
            .await
            .assert_no_credentials();

        // Optional layer, anonymous: the Claims extractor answers 401.
        let app = Router::new()
            .route("/claims", get(claims))
            .layer(AuthLayer::optional(auth(&codec)));
        let base = serve(app).await;
        get_anonymous(&base, "/claims")
            .await
            .assert_no_credentials();
        let reply = get_bearer(&base, "/claims", &token_for(&codec, "alice", "me")).await;
        assert_eq!(reply.text(), "alice [me]");
    }

    #[tokio::test]
    async fn extractors_without_layer_or_authenticator_in_state_are_a_clear_500() {
        let codec = hs256_codec();
        let app = routes::<()>().route("/claims", get(claims));
        let base = serve(app).await;
        let token = token_for(&codec, "johndoe", "me items");
        for path in ["/me", "/maybe", "/scoped/me", "/claims"] {
            for reply in [
                get_anonymous(&base, path).await,
                get_bearer(&base, path, &token).await,
            ] {
                assert_eq!(reply.status, 500, "{path}: {reply:?}");
                reply.assert_error_body("server_error");
                assert!(reply.description().contains("AuthLayer"), "{reply:?}");
                assert!(reply.challenge.is_none());
            }
        }
        let reply = get_anonymous(&base, "/me").await;
        assert!(
            reply.description().contains("router state"),
            "the message names both fixes: {reply:?}"
        );
    }

    #[tokio::test]
    async fn claims_extractor_with_state_but_no_layer_is_a_clear_500() {
        let codec = hs256_codec();
        let app = Router::new()
            .route("/claims", get(claims))
            .with_state(auth(&codec));
        let base = serve(app).await;
        let reply = get_bearer(&base, "/claims", &token_for(&codec, "johndoe", "")).await;
        assert_eq!(reply.status, 500, "{reply:?}");
        assert!(reply.description().contains("AuthLayer"), "{reply:?}");
    }

    #[tokio::test]
    async fn claims_extractor_of_another_claim_type_than_the_layer_is_a_clear_500() {
        /// Not the layer's claim type, `()`.
        #[derive(Clone, serde::Serialize, serde::Deserialize)]
        struct Tenant {
            tenant: Option<String>,
        }
        async fn tenant_claims(claims: Claims<Tenant>) -> String {
            claims.sub
        }
        let codec = hs256_codec();
        let app = Router::new()
            .route("/claims", get(tenant_claims))
            .layer(AuthLayer::optional(auth(&codec)));
        let base = serve(app).await;
        let reply = get_bearer(&base, "/claims", &token_for(&codec, "johndoe", "")).await;
        assert_eq!(reply.status, 500, "{reply:?}");
        assert!(reply.description().contains("claim type"), "{reply:?}");
        // Anonymous, there are no claims of any type: the usual 401.
        get_anonymous(&base, "/claims")
            .await
            .assert_no_credentials();
    }

    #[tokio::test]
    async fn larger_state_still_reaches_its_other_parts() {
        let codec = hs256_codec();
        let app = Router::new()
            .route(
                "/greet",
                get(
                    |axum::extract::State(greeting): axum::extract::State<&'static str>,
                     auth: Authenticated<SimpleUser>| async move {
                        format!("{greeting} {}", auth.user.username)
                    },
                ),
            )
            .with_state(AppState {
                auth: auth(&codec),
                greeting: "hello",
            });
        let base = serve(app).await;
        let reply = get_bearer(&base, "/greet", &token_for(&codec, "johndoe", "")).await;
        assert_eq!(reply.text(), "hello johndoe");
        get_anonymous(&base, "/greet").await.assert_no_credentials();
    }
}
