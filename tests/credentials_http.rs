//! Section 1 of issue 2: where a token is found, over real HTTP.

mod common;

use common::*;
use reqwest::header::{AUTHORIZATION, CONNECTION, COOKIE, HeaderValue, UPGRADE};
use tower_auth::{Credentials, Precedence, TokenCodec};

/// Header, cookie `at` and query `token` sources, in that order.
fn all_sources() -> Credentials {
    Credentials::bearer().cookie("at").query("token")
}

async fn serve_with(credentials: Credentials) -> (String, TokenCodec) {
    let codec = hs256_codec();
    let auth = authenticator(users("unused"), codec.clone(), credentials);
    (serve(protected_app(auth)).await, codec)
}

fn websocket_get(url: String) -> reqwest::RequestBuilder {
    client()
        .get(url)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn bearer_scheme_is_compared_case_insensitively() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply = send(
            client()
                .get(format!("{base}/me"))
                .header(AUTHORIZATION, format!("{scheme} {token}")),
        )
        .await;
        assert_eq!(reply.status, 200, "{scheme}: {reply:?}");
        assert_eq!(reply.text(), "johndoe");
    }
}

#[tokio::test]
async fn no_authorization_header_is_a_bare_challenge_with_realm() {
    let (base, _) = serve_with(all_sources()).await;
    get_anonymous(&base, "/me").await.assert_no_credentials();
}

#[tokio::test]
async fn another_scheme_counts_as_no_credentials() {
    let (base, _) = serve_with(all_sources()).await;
    for value in ["Basic dXNlcjpwYXNz", "Digest username=\"x\"", "Bearerx abc"] {
        let reply = send(
            client()
                .get(format!("{base}/me"))
                .header(AUTHORIZATION, value),
        )
        .await;
        reply.assert_no_credentials();
    }
}

#[tokio::test]
async fn malformed_bearer_credentials_are_invalid_request_never_500() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    let values: Vec<HeaderValue> = vec![
        HeaderValue::from_static("Bearer"),
        HeaderValue::from_str(&format!("Bearer\t{token}")).unwrap(),
        HeaderValue::from_static("Bearer\tx"),
        HeaderValue::from_str(&format!("Bearer  {token}")).unwrap(),
        HeaderValue::from_str(&format!("Bearer {token} {token}")).unwrap(),
        HeaderValue::from_static("Bearer a b"),
        HeaderValue::from_static("Bearer a=b"),
        HeaderValue::from_static("Bearer ab\"c"),
        HeaderValue::from_bytes(b"Bearer ab\xffcd").unwrap(),
        HeaderValue::from_bytes("Bearer t\u{f6}ken".as_bytes()).unwrap(),
    ];
    for value in values {
        let reply = send(
            client()
                .get(format!("{base}/me"))
                .header(AUTHORIZATION, value.clone()),
        )
        .await;
        assert_eq!(reply.status, 400, "{value:?}: {reply:?}");
        reply.assert_invalid_request();
    }
}

#[tokio::test]
async fn two_authorization_headers_are_rejected() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    // Even two identical, valid tokens.
    let reply = send(
        client()
            .get(format!("{base}/me"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(AUTHORIZATION, format!("Bearer {token}")),
    )
    .await;
    reply.assert_invalid_request();
}

#[tokio::test]
async fn query_token_is_ignored_on_a_plain_get() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    get_anonymous(&base, &format!("/me?token={token}"))
        .await
        .assert_no_credentials();
    // Not even decoded: garbage is "no credentials", not invalid_token.
    get_anonymous(&base, "/me?token=garbage")
        .await
        .assert_no_credentials();
}

#[tokio::test]
async fn query_token_is_accepted_on_a_websocket_upgrade() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    let reply = send(websocket_get(format!("{base}/me?token={token}"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "johndoe");
    // And on an upgrade a bad query token is a bad credential.
    send(websocket_get(format!("{base}/me?token=garbage")))
        .await
        .assert_invalid_token_because("malformed");
}

#[tokio::test]
async fn query_token_is_accepted_everywhere_when_allowed() {
    let (base, codec) = serve_with(all_sources().allow_query_everywhere()).await;
    let token = token_for(&codec, "johndoe", "");
    let reply = get_anonymous(&base, &format!("/me?token={token}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "johndoe");
}

#[tokio::test]
async fn cookie_token_is_accepted() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    let reply = send(
        client()
            .get(format!("{base}/me"))
            .header(COOKIE, format!("theme=dark; at={token}; lang=en")),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "johndoe");
}

#[tokio::test]
async fn repeated_cookie_is_invalid_request() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    // One header line, equal values.
    send(
        client()
            .get(format!("{base}/me"))
            .header(COOKIE, format!("at={token}; at={token}")),
    )
    .await
    .assert_invalid_request();
    // Two header lines.
    send(
        client()
            .get(format!("{base}/me"))
            .header(COOKIE, format!("at={token}"))
            .header(COOKIE, format!("at={token}")),
    )
    .await
    .assert_invalid_request();
}

#[tokio::test]
async fn repeated_query_parameter_is_invalid_request() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    send(websocket_get(format!(
        "{base}/me?token={token}&token={token}"
    )))
    .await
    .assert_invalid_request();
    let (base, _) = serve_with(all_sources().allow_query_everywhere()).await;
    get_anonymous(&base, &format!("/me?token={token}&token={token}"))
        .await
        .assert_invalid_request();
}

#[tokio::test]
async fn empty_cookie_and_empty_query_parameter_count_as_absent() {
    let (base, _) = serve_with(all_sources()).await;
    send(client().get(format!("{base}/me")).header(COOKIE, "at="))
        .await
        .assert_no_credentials();
    send(websocket_get(format!("{base}/me?token=")))
        .await
        .assert_no_credentials();
}

#[tokio::test]
async fn empty_cookie_next_to_a_header_token_is_not_ambiguous() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    let reply = send(
        client()
            .get(format!("{base}/me"))
            .bearer_auth(&token)
            .header(COOKIE, "at="),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn token_in_header_and_cookie_is_invalid_request() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    // Even the same token twice.
    send(
        client()
            .get(format!("{base}/me"))
            .bearer_auth(&token)
            .header(COOKIE, format!("at={token}")),
    )
    .await
    .assert_invalid_request();
}

#[tokio::test]
async fn token_in_header_and_query_on_an_upgrade_is_invalid_request() {
    let (base, codec) = serve_with(all_sources()).await;
    let token = token_for(&codec, "johndoe", "");
    send(websocket_get(format!("{base}/me?token={token}")).bearer_auth(&token))
        .await
        .assert_invalid_request();
}

#[tokio::test]
async fn with_first_in_order_precedence_the_header_wins_over_the_cookie() {
    let (base, codec) = serve_with(all_sources().precedence(Precedence::FirstInOrder)).await;
    let token = token_for(&codec, "johndoe", "");
    // Fresh header, stale cookie: the header is used.
    let reply = send(
        client()
            .get(format!("{base}/me"))
            .bearer_auth(&token)
            .header(COOKIE, "at=stale.cookie.token"),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "johndoe");
    // A stale cookie that is not even a token68 loses just the same: only
    // the token used is checked.
    let reply = send(
        client()
            .get(format!("{base}/me"))
            .bearer_auth(&token)
            .header(COOKIE, "at=not\\a\\token"),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Bad header, good cookie: still the header, so the request fails.
    send(
        client()
            .get(format!("{base}/me"))
            .bearer_auth("bad.header.token")
            .header(COOKIE, format!("at={token}")),
    )
    .await
    .assert_invalid_token_because("malformed");
}

#[tokio::test]
async fn token_over_the_configured_cap_is_invalid_token() {
    let (base, codec) = serve_with(all_sources().max_token_len(64)).await;
    let token = token_for(&codec, "johndoe", "");
    assert!(token.len() > 64);
    let reply = get_bearer(&base, "/me", &token).await;
    reply.assert_invalid_token_because("too_long");
    assert!(reply.description().contains("too long"), "{reply:?}");
    // The cap applies to the cookie source too.
    let reply = send(
        client()
            .get(format!("{base}/me"))
            .header(COOKIE, format!("at={token}")),
    )
    .await;
    reply.assert_invalid_token_because("too_long");
    assert!(reply.description().contains("too long"), "{reply:?}");
}

#[tokio::test]
async fn token_over_the_default_8_kib_cap_is_invalid_token() {
    let (base, codec) = serve_with(all_sources()).await;
    // A token of exactly 8 KiB is decoded (and refused as garbage); one byte
    // more is refused as too long before decoding.
    let at_cap = "a".repeat(8 * 1024);
    let reply = get_bearer(&base, "/me", &at_cap).await;
    reply.assert_invalid_token_because("malformed");
    assert!(!reply.description().contains("too long"), "{reply:?}");
    let over = "a".repeat(8 * 1024 + 1);
    let reply = get_bearer(&base, "/me", &over).await;
    reply.assert_invalid_token_because("too_long");
    assert!(reply.description().contains("too long"), "{reply:?}");
    // A real token still passes.
    let ok = get_bearer(&base, "/me", &token_for(&codec, "johndoe", "")).await;
    assert_eq!(ok.status, 200);
}

/// The order the app gives decides: with the cookie listed first, the
/// cookie's token wins over the header's (each names another user).
#[tokio::test]
async fn with_first_in_order_precedence_the_first_source_configured_wins() {
    let credentials = Credentials::from_sources([
        tower_auth::TokenSource::Cookie(tower_auth::SessionCookie::new("at")),
        tower_auth::TokenSource::Bearer,
    ])
    .precedence(Precedence::FirstInOrder);
    assert_eq!(credentials.sources().len(), 2);
    assert_eq!(credentials.sources()[1], tower_auth::TokenSource::Bearer);
    let (base, codec) = serve_with(credentials).await;
    let reply = send(
        client()
            .get(format!("{base}/me"))
            .bearer_auth(token_for(&codec, "johndoe", ""))
            .header(COOKIE, format!("at={}", token_for(&codec, "alice", ""))),
    )
    .await;
    assert_eq!((reply.status, reply.text()), (200, "alice".to_owned()));
}
