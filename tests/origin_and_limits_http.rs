//! The Origin guard on cookie-authenticated HTTP requests and the per-subject
//! rate-limit layer, through `AuthLayer` on a real server (no axum
//! extractors: this runs in the hyper user's build too).

mod common;

use axum::Router;
use axum::routing::post;
use common::*;
use tower_auth::limit::RateLimit;
use tower_auth::{AuthLayer, Credentials};

const APP: &str = "https://app.example.com";

async fn serve_app(limit: Option<RateLimit>) -> (String, String) {
    let codec = hs256_codec();
    let token = token_for(&codec, "johndoe", "me");
    let auth = tower_auth::Authenticator::builder(users("unused"), codec)
        .realm(REALM)
        .credentials(Credentials::bearer().cookie("at"))
        .allowed_origins([APP])
        .render_errors(reason_header)
        .build()
        .unwrap();
    let mut app = Router::new().route("/me", post(whoami).get(whoami).delete(whoami));
    if let Some(limit) = limit {
        app = app.layer(auth.limit_rate(limit));
    }
    let app = app.layer(AuthLayer::required(auth));
    (serve(app).await, token)
}

async fn send(
    base: &str,
    method: reqwest::Method,
    credential: (&str, String),
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client()
        .request(method, format!("{base}/me"))
        .header(credential.0, credential.1);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn unsafe_cookie_requests_need_an_allowed_origin() {
    let (base, token) = serve_app(None).await;
    let cookie = || ("cookie", format!("at={token}"));
    let bearer = || ("authorization", format!("Bearer {token}"));
    use reqwest::Method as M;

    for (method, headers) in [
        (M::POST, vec![("origin", APP)]),
        (M::DELETE, vec![("origin", "https://APP.example.com:443")]),
        (M::POST, vec![("sec-fetch-site", "same-origin")]),
        (M::GET, vec![("origin", "https://evil.example")]),
        (M::GET, vec![]),
    ] {
        let reply = send(&base, method.clone(), cookie(), &headers).await;
        assert_eq!(
            (reply.status, reply.text()),
            (200, "johndoe".into()),
            "{method} {headers:?}"
        );
    }
    for (method, headers, reason) in [
        (M::POST, vec![], "origin_missing"),
        (M::POST, vec![("origin", "null")], "origin_null"),
        (
            M::POST,
            vec![("origin", "https://evil.example")],
            "origin_not_allowed",
        ),
        (
            M::DELETE,
            vec![
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            "origin_not_allowed",
        ),
        (
            M::POST,
            vec![("sec-fetch-site", "same-site")],
            "origin_not_allowed",
        ),
    ] {
        let reply = send(&base, method.clone(), cookie(), &headers).await;
        assert_eq!(reply.status, 403, "{method} {headers:?}");
        assert!(
            reply.challenge.is_none(),
            "no Bearer challenge: the credentials are fine"
        );
        reply.assert_refused(403, "invalid_origin", reason);
    }
    // The bearer header is no ambient credential: never checked.
    for headers in [
        vec![],
        vec![("origin", "null")],
        vec![("origin", "https://evil.example")],
    ] {
        let reply = send(&base, M::POST, bearer(), &headers).await;
        assert_eq!(reply.status, 200, "{headers:?}");
    }
}

#[tokio::test]
async fn a_cached_cookie_token_still_meets_the_origin_guard() {
    let (base, token) = serve_app(None).await;
    use reqwest::Method as M;
    let foreign = [("origin", "https://evil.example")];
    // Verified and cached by an allowed request, then sent from a foreign
    // page: the guard runs on the cache's answer too.
    let cookie = ("cookie", format!("at={token}"));
    let allowed = send(&base, M::POST, cookie.clone(), &[("origin", APP)]).await;
    assert_eq!(allowed.status, 200);
    let refused = send(&base, M::POST, cookie, &foreign).await;
    refused.assert_refused(403, "invalid_origin", "origin_not_allowed");
    // A token that cannot be in the cache is checked first, as before the
    // cache existed: malformed is 400 whatever the Origin.
    let malformed = ("cookie", "at=not\\a\\token".to_owned());
    let reply = send(&base, M::POST, malformed, &foreign).await;
    assert_eq!(reply.status, 400);
    reply.assert_error_body("invalid_request");
}

#[tokio::test]
async fn the_rate_limit_layer_answers_429_per_subject() {
    let limit = RateLimit::new(3, std::time::Duration::from_secs(3600)).unwrap();
    let (base, token) = serve_app(Some(limit)).await;
    let alice = token_for(&hs256_codec(), "alice", "me");
    for _ in 0..3 {
        assert_eq!(get_bearer(&base, "/me", &token).await.status, 200);
    }
    let refused = get_bearer(&base, "/me", &token).await;
    refused.assert_refused(429, "too_many_requests", "rate");
    assert!(refused.challenge.is_none());
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    // Keyed by subject: another user is not affected.
    assert_eq!(get_bearer(&base, "/me", &alice).await.status, 200);
    // Unauthenticated requests are the AuthLayer's to refuse.
    get_anonymous(&base, "/me").await.assert_no_credentials();
}
