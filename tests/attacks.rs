//! Attacks not already covered by the other suites (see SECURITY.md for
//! where the rest live), one module per threat, against a real server on
//! `127.0.0.1:0` (or the library API where no HTTP is involved). Runs in
//! both feature builds: nothing here needs the `axum` feature.

mod common;

use common::*;
use tower_auth::{AuthLayer, Credentials, PasswordHasher, Scopes, TokenCodec};

const APP: &str = "https://app.example.com";

/// `/me` (GET, POST) behind a required layer reading the bearer header, the
/// `at` cookie and the `token` query parameter (on upgrades), with [`APP`]
/// as the allowed origin.
async fn serve_all_sources(credentials: Credentials) -> (String, TokenCodec) {
    let codec = hs256_codec();
    let auth = tower_auth::Authenticator::builder(users("unused"), codec.clone())
        .realm(REALM)
        .credentials(credentials)
        .allowed_origins([APP])
        .render_errors(reason_header)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route("/me", axum::routing::get(whoami).post(whoami))
        .layer(AuthLayer::required(auth));
    (serve(app).await, codec)
}

fn all_sources() -> Credentials {
    Credentials::bearer().cookie("at").query("token")
}

fn websocket_get(url: String) -> reqwest::RequestBuilder {
    client()
        .get(url)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::from(request.send().await.unwrap()).await
}

/// The server answers a valid request after the attack: it lives.
async fn assert_alive(base: &str, codec: &TokenCodec) {
    let reply = get_bearer(base, "/me", &token_for(codec, "johndoe", "me")).await;
    assert_eq!((reply.status, reply.text()), (200, "johndoe".into()));
}

/// Login enumeration by timing: an unknown user must cost what a wrong
/// password costs (argon2 against a dummy hash with the current
/// parameters). A relative check within one run, never a duration.
mod login_timing {
    use std::time::{Duration, Instant};

    use super::*;
    use tower_auth::grant::PasswordGrant;

    fn grant(username: &str, password: &str) -> PasswordGrant {
        let form = format!("username={username}&password={password}");
        let ct = "application/x-www-form-urlencoded".parse().unwrap();
        PasswordGrant::from_form(Some(&ct), form.as_bytes()).unwrap()
    }

    fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort_unstable();
        samples[samples.len() / 2]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_user_wrong_password_and_disabled_user_cost_the_same() {
        // The default (OWASP) parameters: what an app really runs.
        let hasher = PasswordHasher::new();
        let hash = hasher.hash("correct horse").await.unwrap();
        // 32 failures per username: measured, not throttled.
        let auth = tower_auth::Authenticator::builder(users(&hash), hs256_codec())
            .passwords(hasher)
            .no_login_throttle()
            .build()
            .unwrap();
        let cases = [
            grant("nobody", "guess"),
            grant("johndoe", "guess"),
            grant("bob", "correct+horse"),
        ];
        // Warm up: the dummy hash is made on first use.
        for g in &cases {
            assert!(auth.login(g, None).await.is_err());
        }
        let mut samples = [Vec::new(), Vec::new(), Vec::new()];
        // Interleaved, so drift on a noisy machine hits every case alike.
        for _ in 0..31 {
            for (i, g) in cases.iter().enumerate() {
                let start = Instant::now();
                assert!(auth.login(g, None).await.is_err());
                samples[i].push(start.elapsed());
            }
        }
        let [unknown, wrong, disabled] = samples.map(median);
        for (name, other) in [("unknown user", unknown), ("disabled user", disabled)] {
            let ratio = other.as_secs_f64() / wrong.as_secs_f64();
            // Skipping argon2 would make this ~0.01; noise stays well inside.
            assert!(
                (0.5..2.0).contains(&ratio),
                "{name} median {other:?} vs wrong password {wrong:?} (ratio {ratio:.2})"
            );
        }
    }
}

/// Invalid percent-encoding: `%ZZ` stays literal, `%FF`/`%FE` decode to
/// U+FFFD (axum's `Query`/`Form` and `form_urlencoded` are lossy), so
/// different bytes collide. No such value may become a credential or a
/// login name.
mod percent_encoding {
    use super::*;
    use tower_auth::GrantError;
    use tower_auth::grant::PasswordGrant;

    #[tokio::test]
    async fn invalid_percent_encoding_in_query_tokens_is_refused() {
        let (base, codec) = serve_all_sources(all_sources()).await;
        let token = token_for(&codec, "johndoe", "me");
        for query in [
            "token=%ZZ".to_owned(),
            "token=%FF".to_owned(),
            "token=%FE%FF".to_owned(),
            format!("token={token}%FF"),
            format!("token={token}&token=%FF"),
            format!("token=%ZZ&token={token}"),
            // A percent-encoded name is still the same parameter.
            format!("tok%65n={token}&token={token}"),
        ] {
            let reply = send(websocket_get(format!("{base}/me?{query}"))).await;
            reply.assert_invalid_request();
            assert!(!reply.text().contains(&token));
        }
        // A name that decodes to `token` + U+FFFD is another parameter.
        get_anonymous(&base, "/me?token%FF=x")
            .await
            .assert_no_credentials();
        assert_alive(&base, &codec).await;
    }

    #[tokio::test]
    async fn percent_encoded_cookies_are_not_decoded_into_tokens() {
        let (base, codec) = serve_all_sources(all_sources()).await;
        let token = token_for(&codec, "johndoe", "me");
        // A cookie value is taken raw: `%2E` is not `.`, `%FF` not U+FFFD.
        for value in [token.replace('.', "%2E"), "%FF".into(), "%ZZ".into()] {
            send(
                client()
                    .get(format!("{base}/me"))
                    .header("cookie", format!("at={value}")),
            )
            .await
            .assert_invalid_request();
        }
    }

    #[test]
    fn login_forms_that_decode_to_invalid_utf8_are_refused_not_collided() {
        let ct = "application/x-www-form-urlencoded".parse().unwrap();
        for body in [
            "username=%FF&password=x",
            "username=x&password=%FE",
            "username=x&password=%C3",
            "username=x&password=ok%FF",
            "username=x&pass%FFword=x",
        ] {
            assert_eq!(
                PasswordGrant::from_form(Some(&ct), body.as_bytes()).unwrap_err(),
                GrantError::InvalidRequest("the form is not UTF-8 once percent-decoded"),
                "{body}"
            );
        }
        // `%ZZ` is no escape: it stays literal text, as RFC 3986 readers do.
        let grant = PasswordGrant::from_form(Some(&ct), b"username=a%ZZ&password=%C3%A9").unwrap();
        assert_eq!(
            (grant.username.as_str(), grant.password.as_str()),
            ("a%ZZ", "é")
        );
    }
}

/// Bytes 0x80-0xFF pass `http`'s header parsing but fail `to_str()`: every
/// header the crate reads must answer them with a 4xx, never 500 or a
/// success — except in a cookie that is not ours, which is ignored.
mod non_ascii_headers {
    use super::*;
    use reqwest::header::HeaderValue;

    fn bytes(prefix: &str, suffix: &[u8]) -> HeaderValue {
        let mut value = prefix.as_bytes().to_vec();
        value.extend_from_slice(suffix);
        HeaderValue::from_bytes(&value).unwrap()
    }

    #[tokio::test]
    async fn every_header_we_read_refuses_non_ascii_bytes() {
        let (base, codec) = serve_all_sources(all_sources().subprotocol("access_token")).await;
        let token = token_for(&codec, "johndoe", "me");
        let high: &[u8] = b"\xff\x80\xc3\xa9";
        let url = format!("{base}/me");
        // Name, request, status, reason: a 401 must be "no credentials",
        // never a garbled token that was decoded.
        let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
            (
                "Authorization",
                client()
                    .get(&url)
                    .header("authorization", bytes("Bearer ", high)),
                400,
                "invalid_request",
            ),
            (
                "Authorization after a token",
                client()
                    .get(&url)
                    .header("authorization", bytes(&format!("Bearer {token}"), high)),
                400,
                "invalid_request",
            ),
            (
                "Authorization scheme",
                client()
                    .get(&url)
                    .header("authorization", bytes("Bear\u{e9}r ", token.as_bytes())),
                401,
                "missing_credentials",
            ),
            // Our cookie's own value must be a token68, whatever the line.
            (
                "Cookie",
                client().get(&url).header("cookie", bytes("at=", high)),
                400,
                "invalid_request",
            ),
            // Another cookie's bytes are none of our business: ignored
            // (issue 14), so a neighbour never hides the session cookie.
            (
                "Cookie line with a non-ASCII neighbour",
                client()
                    .get(&url)
                    .header("cookie", bytes(&format!("at={token}; x="), high)),
                200,
                "",
            ),
            (
                "Upgrade",
                client()
                    .get(format!("{url}?token={token}"))
                    .header("upgrade", bytes("websocket", high)),
                401,
                "missing_credentials",
            ),
            (
                "Sec-WebSocket-Protocol",
                websocket_get(url.clone())
                    .header("sec-websocket-protocol", bytes("access_token, ", high)),
                401,
                "missing_credentials",
            ),
            (
                "Origin on a cookie POST",
                client()
                    .post(&url)
                    .header("cookie", format!("at={token}"))
                    .header("origin", bytes(APP, high)),
                403,
                "origin_not_allowed",
            ),
            (
                "Sec-Fetch-Site on a cookie POST",
                client()
                    .post(&url)
                    .header("cookie", format!("at={token}"))
                    .header("sec-fetch-site", bytes("same-origin", high)),
                403,
                "origin_not_allowed",
            ),
        ];
        for (name, request, status, reason) in cases {
            let reply = send(request).await;
            assert_eq!(reply.status, status, "{name}: {reply:?}");
            assert_eq!(reply.reason(), reason, "{name}: {reply:?}");
            assert!(!reply.text().contains(&token), "{name}");
        }
        assert_alive(&base, &codec).await;
    }
}

/// `Origin: null` (sandboxed iframes, `file:`, cross-origin redirects) is
/// never an allowed origin. A bare `null` on cookie POSTs and upgrades is in
/// `origin_and_limits_http` and `websocket_rooms`; here: `null` next to
/// `Sec-Fetch-Site`, next to a second Origin, and on bearer requests (not
/// ambient, so never checked).
mod origin_null {
    use super::*;

    #[tokio::test]
    async fn null_origin_never_passes_for_cookies_and_never_matters_for_headers() {
        let (base, codec) = serve_all_sources(all_sources()).await;
        let token = token_for(&codec, "johndoe", "me");
        let url = format!("{base}/me");
        let reply = send(
            websocket_get(url.clone())
                .header("cookie", format!("at={token}"))
                .header("origin", "null")
                .header("sec-fetch-site", "same-origin"),
        )
        .await;
        reply.assert_refused(403, "invalid_origin", "origin_null");
        for fetch_site in ["cross-site", "same-site", "none"] {
            let reply = send(
                client()
                    .post(&url)
                    .header("cookie", format!("at={token}"))
                    .header("origin", "null")
                    .header("sec-fetch-site", fetch_site),
            )
            .await;
            assert_eq!(reply.status, 403, "{fetch_site}: {reply:?}");
            reply.assert_refused(403, "invalid_origin", "origin_null");
        }
        // On plain HTTP, `Sec-Fetch-Site: same-origin` (set by the browser,
        // never by a page, and only when every redirect hop was
        // same-origin) wins over `Origin: null`, as the design says.
        let reply = send(
            client()
                .post(&url)
                .header("cookie", format!("at={token}"))
                .header("origin", "null")
                .header("sec-fetch-site", "same-origin"),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        // Two Origin headers, one allowed: ambiguous, refused.
        let reply = send(
            client()
                .post(&url)
                .header("cookie", format!("at={token}"))
                .header("origin", APP)
                .header("origin", "null"),
        )
        .await;
        reply.assert_refused(403, "invalid_origin", "origin_not_allowed");
        let reply = send(
            client()
                .post(&url)
                .bearer_auth(&token)
                .header("origin", "null"),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

/// Oversized tokens and headers: refused by the crate's cap (401) or by
/// hyper's header limit (431 / connection closed), never decoded, never a
/// crash, and the server keeps serving.
mod oversized {
    use super::*;

    #[tokio::test]
    async fn huge_tokens_in_every_transport_are_refused_and_the_server_lives() {
        let (base, codec) = serve_all_sources(all_sources().allow_query_everywhere()).await;
        // 32 KiB: under hyper's header limit and `http`'s URI limit.
        let big = "a".repeat(32 * 1024);
        let url = format!("{base}/me");
        for (name, request) in [
            ("bearer", client().get(&url).bearer_auth(&big)),
            (
                "cookie",
                client().get(&url).header("cookie", format!("at={big}")),
            ),
            ("query", client().get(format!("{url}?token={big}"))),
        ] {
            let reply = send(request).await;
            reply.assert_invalid_token_because("too_long");
            assert!(!reply.text().contains(&big[..100]), "{name}");
        }
        // A validly signed token over the cap, for a known, active user:
        // only the cap refuses it, before decoding.
        let signed = |jti_len: usize| {
            let mut claims = codec.new_claims("johndoe", Scopes::parse("me").unwrap(), 0, ());
            claims.jti = Some("x".repeat(jti_len));
            codec.issue(&claims).unwrap()
        };
        let (under, over) = (signed(4 * 1024), signed(9 * 1024));
        assert!(under.len() < 8 * 1024 && over.len() > 8 * 1024);
        let reply = get_bearer(&base, "/me", &under).await;
        assert_eq!((reply.status, reply.text()), (200, "johndoe".into()));
        get_bearer(&base, "/me", &over)
            .await
            .assert_invalid_token_because("too_long");
        assert_alive(&base, &codec).await;
    }

    #[tokio::test]
    async fn headers_beyond_hypers_limit_never_reach_the_crate() {
        let (base, codec) = serve_all_sources(all_sources()).await;
        // The server must answer or close, never leave the client hanging:
        // a generous timeout turns a hang into a failure below (it is no
        // measure of speed).
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap();
        let huge = "a".repeat(1024 * 1024);
        let result = client
            .get(format!("{base}/me"))
            .header("cookie", format!("at={huge}"))
            .send()
            .await;
        match result {
            Ok(response) => assert_eq!(response.status().as_u16(), 431),
            // hyper may close the connection while the client still writes.
            Err(err) => assert!(!err.is_timeout(), "{err}"),
        }
        let mut request = client.get(format!("{base}/me"));
        for i in 0..200 {
            request = request.header(format!("x-filler-{i}"), "y".repeat(4000));
        }
        match request.send().await {
            Ok(response) => assert!(response.status().is_client_error()),
            Err(err) => assert!(!err.is_timeout(), "{err}"),
        }
        assert_alive(&base, &codec).await;
    }
}

/// argon2 aborts the process (uncatchable) on absurd stored parameters.
/// `m=4294967295` through login is in `login_http`; here every parameter at
/// its extreme, straight through `PasswordHasher::verify`, and the process
/// still hashes afterwards.
mod argon2_ceiling {
    use super::*;
    use tower_auth::PasswordError;

    const TAIL: &str = "$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc";

    #[tokio::test]
    async fn extreme_stored_parameters_are_refused_and_the_process_lives() {
        let hasher = PasswordHasher::new();
        for params in [
            "m=4294967295,t=3,p=4",
            "m=19456,t=4294967295,p=1",
            "m=19456,t=2,p=16777215",
            "m=4294967295,t=4294967295,p=16777215",
        ] {
            for alg in ["argon2id", "argon2i", "argon2d"] {
                let stored = format!("${alg}$v=19${params}{TAIL}");
                // Above the ceiling, or beyond argon2's own range
                // (p < 2^24): refused either way, before argon2 runs.
                let result = hasher.verify("secret", &stored).await;
                assert!(
                    matches!(
                        result,
                        Err(PasswordError::AboveCeiling | PasswordError::MalformedHash)
                    ),
                    "{stored}: {result:?}"
                );
                assert!(hasher.needs_rehash(&stored));
            }
        }
        // Out of argon2's own range: malformed, not a crash either.
        for stored in [
            format!("$argon2id$v=19$m=99999999999,t=1,p=1{TAIL}"),
            format!("$argon2id$v=19$m=1,t=1,p=1{TAIL}"),
            format!("$argon2id$v=19$m=19456,t=0,p=1{TAIL}"),
        ] {
            assert!(hasher.verify("secret", &stored).await.is_err(), "{stored}");
        }
        let fresh = hasher.hash("secret").await.unwrap();
        assert_eq!(hasher.verify("secret", &fresh).await, Ok(true));
    }
}
