//! Issue 14: the request path fails closed. Guards mounted without the
//! layer they need, `OPTIONS` requests that are not CORS preflights, scopes
//! removed from a user after login, time claims from the future, a
//! neighbour cookie that hid the session cookie, tokens handed to page
//! scripts in a cookie session, and renewals on responses that revoke.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, get};
use common::*;
use reqwest::header::{COOKIE, SET_COOKIE};
use tower_auth::limit::RateLimit;
use tower_auth::{
    AuthLayer, Authenticator, Claims, Credentials, MemoryUserStore, Scopes, SimpleUser,
    SlidingExpiry,
};

const REFRESH_HEADER: &str = "x-refreshed-token";

#[cfg(feature = "axum")]
mod logs {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::util::SubscriberInitExt;

    /// Everything logged on this thread while the guard lives (the servers of
    /// these tests run on the test's current-thread runtime).
    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
            let captured = Captured::default();
            let writer = captured.clone();
            let guard = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .set_default();
            (captured, guard)
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }
}
#[cfg(feature = "axum")]
use logs::Captured;

/// johndoe (`me items`), alice (`me`), the disabled bob, and `root` with
/// `me admin`.
fn store() -> MemoryUserStore<SimpleUser> {
    let store = users("unused");
    store.insert(SimpleUser::new("root", "unused").with_scopes(Scopes::parse("me admin").unwrap()));
    store
}

/// A handler that counts its calls.
fn counter() -> (
    Arc<AtomicUsize>,
    impl Fn() -> std::future::Ready<&'static str> + Clone,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    (calls, move || {
        seen.fetch_add(1, Ordering::SeqCst);
        std::future::ready("ran")
    })
}

// ---------------------------------------------------------------------------
// 1. Guards without AuthLayer in front of them
// ---------------------------------------------------------------------------

/// The README quick start's setup (the Authenticator as router state, no
/// AuthLayer) plus a scope guard and a rate guard as route layers.
#[cfg(feature = "axum")]
#[tokio::test]
async fn guards_without_auth_layer_fail_closed_with_a_500_naming_the_fix() {
    let (logs, _guard) = Captured::start();
    let codec = hs256_codec();
    let auth = authenticator(store(), codec.clone(), Credentials::bearer());
    let (calls, handler) = counter();
    let app = Router::new()
        .route(
            "/admin",
            get(handler.clone()).route_layer(auth.require_scopes(["admin"]).unwrap()),
        )
        .route(
            "/limited",
            get(handler).route_layer(auth.limit_rate(RateLimit::per_minute(600).unwrap())),
        )
        .with_state(auth);
    let base = serve(app).await;
    let admin = token_for(&codec, "root", "me admin");
    for path in ["/admin", "/limited"] {
        for reply in [
            get_bearer(&base, path, &admin).await,
            get_anonymous(&base, path).await,
        ] {
            assert_eq!(reply.status, 500, "{path}: {reply:?}");
            reply.assert_error_body("server_error");
            assert!(reply.challenge.is_none(), "{path}: no misleading challenge");
            assert!(
                reply
                    .description()
                    .contains("needs AuthLayer in front of it"),
                "{path}: {reply:?}"
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a guard passed a request");
    let logs = logs.text();
    for guard in ["RequireScopes", "RateLimitLayer"] {
        assert!(
            logs.lines().any(|line| line.contains("ERROR")
                && line.contains(guard)
                && line.contains("add .layer(AuthLayer::optional(auth))")),
            "an error line naming the fix for {guard}: {logs}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. OPTIONS is authenticated unless it is a CORS preflight
// ---------------------------------------------------------------------------

async fn options(base: &str, path: &str, headers: &[(&str, &str)], token: Option<&str>) -> Reply {
    let mut request = client().request(reqwest::Method::OPTIONS, format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn options_that_is_not_a_cors_preflight_is_authenticated() {
    let codec = hs256_codec();
    let auth = authenticator(store(), codec.clone(), Credentials::bearer());
    let (calls, handler) = counter();
    let purge = axum::routing::options(handler.clone())
        .delete(handler)
        .route_layer(auth.require_scopes(["admin"]).unwrap());
    let required = Router::new()
        .route("/admin/purge", purge.clone())
        .layer(AuthLayer::required(auth.clone()));
    let optional = Router::new()
        .route("/admin/purge", purge)
        .layer(AuthLayer::optional(auth));
    let not_preflights: [&[(&str, &str)]; 3] = [
        &[],
        &[("origin", "https://app.example")],
        &[("access-control-request-method", "DELETE")],
    ];
    for base in [serve(required).await, serve(optional).await] {
        for headers in not_preflights {
            let reply = options(&base, "/admin/purge", headers, None).await;
            assert_eq!(reply.status, 401, "{headers:?}: {reply:?}");
            let reply = options(&base, "/admin/purge", headers, Some("garbage")).await;
            assert_eq!(reply.status, 401, "{headers:?}: {reply:?}");
            reply.assert_error_body("invalid_token");
            let me_only = token_for(&codec, "johndoe", "me");
            let reply = options(&base, "/admin/purge", headers, Some(&me_only)).await;
            assert_eq!(reply.status, 403, "{headers:?}: {reply:?}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler ran");
        let admin = token_for(&codec, "root", "me admin");
        let reply = options(&base, "/admin/purge", &[], Some(&admin)).await;
        assert_eq!((reply.status, reply.text()), (200, "ran".into()));
        // A real preflight still passes, unauthenticated.
        let preflight = [
            ("origin", "https://app.example"),
            ("access-control-request-method", "DELETE"),
        ];
        let reply = options(&base, "/admin/purge", &preflight, None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        calls.store(0, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn options_counts_against_the_rate_limit() {
    let codec = hs256_codec();
    let auth = authenticator(store(), codec.clone(), Credentials::bearer());
    let limit = RateLimit::new(1, Duration::from_secs(3600)).unwrap();
    let app = Router::new()
        .route("/things", any(|| async { "ok" }))
        .layer(auth.limit_rate(limit))
        .layer(AuthLayer::required(auth));
    let base = serve(app).await;
    let token = token_for(&codec, "johndoe", "me");
    assert_eq!(get_bearer(&base, "/things", &token).await.status, 200);
    let reply = options(&base, "/things", &[], Some(&token)).await;
    assert_eq!(reply.status, 429, "{reply:?}");
}

// ---------------------------------------------------------------------------
// 3. A scope removed from the user stops working on the next request
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_removed_scope_stops_working_on_the_next_request_and_is_not_renewed() {
    let codec = hs256_codec();
    let users = store();
    let auth = Authenticator::builder(users.clone(), codec.clone())
        .realm(REALM)
        .sliding_expiry(SlidingExpiry::new(Duration::from_secs(8 * 3600)))
        .build()
        .unwrap();
    let app =
        Router::new()
            .route(
                "/admin",
                get(whoami).route_layer(auth.require_scopes(["admin"]).unwrap()),
            )
            .route(
                "/scopes",
                get(
                    |axum::Extension(me): axum::Extension<
                        tower_auth::Authenticated<SimpleUser>,
                    >| async move { me.claims.scope.to_string() },
                ),
            )
            .layer(AuthLayer::optional(auth));
    let base = serve(app).await;
    // Issued 20 minutes into a 30-minute life: past half-life.
    let mut claims = codec.new_claims("root", Scopes::parse("me admin").unwrap(), 0, ());
    claims.iat = Some(now() - 20 * 60);
    claims.auth_time = claims.iat;
    claims.exp = now() + 10 * 60;
    let token = codec.issue(&claims).unwrap();
    assert_eq!(get_bearer(&base, "/admin", &token).await.status, 200);

    users.update("root", |root| root.scopes = Scopes::parse("me").unwrap());
    let reply = get_bearer(&base, "/admin", &token).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    reply.assert_error_body("insufficient_scope");
    let reply = get_bearer(&base, "/scopes", &token).await;
    assert_eq!(reply.text(), "me", "the scopes in effect");
    let renewed = reply.headers[REFRESH_HEADER].to_str().unwrap();
    let renewed = codec.verify::<()>(renewed).unwrap();
    assert_eq!(renewed.scope.to_string(), "me", "the renewal drops admin");
}

// ---------------------------------------------------------------------------
// 4. Time claims from the future
// ---------------------------------------------------------------------------

#[tokio::test]
async fn iat_or_auth_time_in_the_future_or_auth_time_after_iat_is_invalid_token() {
    let auth = Authenticator::builder(store(), hs256_codec())
        .realm(REALM)
        .sliding_expiry(SlidingExpiry::new(Duration::from_secs(8 * 3600)))
        .build()
        .unwrap();
    let base = serve(protected_app(auth)).await;
    let now = now();
    let ten_years = 10 * 365 * 24 * 3600;
    let signed = |iat: u64, auth_time: u64| {
        sign_hs256(
            &at_header(tower_auth::Algorithm::HS256),
            &serde_json::json!({
                "sub": "johndoe", "iat": iat, "auth_time": auth_time,
                "exp": now + 60, "token_version": 0,
            }),
        )
    };
    // The control: a token as the codec issues it, aged past half-life.
    let fine = get_bearer(&base, "/me", &signed(now - 600, now - 600)).await;
    assert_eq!(fine.status, 200, "{fine:?}");
    for (what, token) in [
        ("auth_time in 10 years", signed(now - 600, now + ten_years)),
        ("iat in an hour", signed(now + 3600, now - 600)),
        ("auth_time after iat", signed(now - 600, now - 300)),
    ] {
        let reply = get_bearer(&base, "/me", &token).await;
        assert_eq!(reply.status, 401, "{what}: {reply:?}");
        reply.assert_invalid_token();
        assert!(reply.headers.get(REFRESH_HEADER).is_none(), "{what}");
    }
}

// ---------------------------------------------------------------------------
// 5. A neighbour cookie does not hide the session cookie
// ---------------------------------------------------------------------------

async fn with_cookie_lines(base: &str, lines: &[&[u8]]) -> Reply {
    let mut request = client().get(format!("{base}/me"));
    for line in lines {
        request = request.header(
            COOKIE,
            reqwest::header::HeaderValue::from_bytes(line).unwrap(),
        );
    }
    Reply::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_non_ascii_neighbour_cookie_does_not_hide_the_session_cookie() {
    let codec = hs256_codec();
    let auth = authenticator(store(), codec.clone(), Credentials::bearer().cookie("at"));
    let base = serve(protected_app(auth)).await;
    let token = token_for(&codec, "johndoe", "me");
    let same_line = format!("lang=fran\u{e7}ais; at={token}; theme=\u{1F319}").into_bytes();
    let latin1 = [b"x=caf\xe9; at=".as_slice(), token.as_bytes()].concat();
    let own_line = format!("at={token}").into_bytes();
    for lines in [
        vec![same_line.as_slice()],
        vec![latin1.as_slice()],
        vec![own_line.as_slice(), b"sibling=\xff\xfe".as_slice()],
    ] {
        let reply = with_cookie_lines(&base, &lines).await;
        assert_eq!(
            (reply.status, reply.text()),
            (200, "johndoe".to_owned()),
            "{lines:?}"
        );
    }
    // The session cookie's own value must still be a token68...
    with_cookie_lines(&base, &[b"lang=fran\xc3\xa7ais; at=t\xc3\xa9st"])
        .await
        .assert_invalid_request();
    // ...and two session cookies stay 400, whatever surrounds them.
    let twice = format!("lang=fran\u{e7}ais; at={token}; at={token}");
    with_cookie_lines(&base, &[twice.as_bytes()])
        .await
        .assert_invalid_request();
}

// ---------------------------------------------------------------------------
// 6. A cookie session's tokens stay out of page scripts' reach
// ---------------------------------------------------------------------------

fn aged_claims(codec: &tower_auth::TokenCodec, sub: &str, scope: &str) -> Claims {
    let mut claims = codec.new_claims(sub, Scopes::parse(scope).unwrap(), 0, ());
    claims.iat = Some(now() - 20 * 60);
    claims.auth_time = claims.iat;
    claims.exp = now() + 10 * 60;
    claims
}

#[tokio::test]
async fn a_cookie_session_is_renewed_by_set_cookie_only() {
    let codec = hs256_codec();
    let auth = Authenticator::builder(store(), codec.clone())
        .realm(REALM)
        .credentials(Credentials::bearer().cookie("at"))
        .sliding_expiry(SlidingExpiry::new(Duration::from_secs(8 * 3600)))
        .build()
        .unwrap();
    let base = serve(protected_app(auth)).await;
    let aged = codec.issue(&aged_claims(&codec, "johndoe", "me")).unwrap();
    let response = client()
        .get(format!("{base}/me"))
        .header(COOKIE, format!("at={aged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.starts_with("at=ey"), "{set_cookie}");
    assert!(
        response.headers().get(REFRESH_HEADER).is_none(),
        "a script-readable copy of the cookie's token"
    );
}

/// `POST /login` (session login) over johndoe / `secret`; the JSON body.
#[cfg(feature = "axum")]
async fn session_login_body(auth: Authenticator<SimpleUser>) -> serde_json::Value {
    let base = serve(
        Router::new()
            .route(
                "/login",
                axum::routing::post(tower_auth::axum::session_login::<SimpleUser, ()>),
            )
            .with_state(auth),
    )
    .await;
    let response = client()
        .post(format!("{base}/login"))
        .form(&[("username", "johndoe"), ("password", "secret")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("at=ey")
    );
    response.json().await.unwrap()
}

/// A store with johndoe / `secret`, hashed with cheap parameters (this is
/// about the response, not the hashing).
#[cfg(feature = "axum")]
async fn cheap_login_auth(cookie: tower_auth::SessionCookie) -> Authenticator<SimpleUser> {
    let hasher = tower_auth::PasswordHasher::builder()
        .params(64, 1, 1)
        .build()
        .unwrap();
    let hash = hasher.hash("secret").await.unwrap();
    Authenticator::builder(users(&hash), hs256_codec())
        .passwords(hasher)
        .credentials(Credentials::bearer().session_cookie(cookie))
        .build()
        .unwrap()
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_session_login_body_carries_no_token() {
    let body =
        session_login_body(cheap_login_auth(tower_auth::SessionCookie::new("at")).await).await;
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 1800, "{body}");
    assert_eq!(body["scope"], "items me", "{body}");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn a_session_login_that_opted_in_returns_the_token_too() {
    let cookie = tower_auth::SessionCookie::new("at").token_in_login_body(true);
    let body = session_login_body(cheap_login_auth(cookie).await).await;
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|token| !token.is_empty()),
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// 7. A response that revokes carries no renewal
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_response_that_revokes_the_token_carries_no_renewal() {
    let codec = hs256_codec();
    let users = store();
    let auth = Authenticator::builder(users.clone(), codec.clone())
        .realm(REALM)
        .sliding_expiry(SlidingExpiry::new(Duration::from_secs(8 * 3600)))
        .build()
        .unwrap();
    let everywhere = users.clone();
    let disable = users.clone();
    let app = Router::new()
        .route(
            "/logout-everywhere",
            axum::routing::post(move || {
                everywhere.update("johndoe", |u| u.token_version += 1);
                std::future::ready(StatusCode::NO_CONTENT)
            }),
        )
        .route(
            "/disable",
            axum::routing::post(move || {
                disable.update("alice", |u| u.active = false);
                std::future::ready(StatusCode::NO_CONTENT)
            }),
        )
        .layer(AuthLayer::required(auth));
    let base = serve(app).await;
    for (path, sub) in [("/logout-everywhere", "johndoe"), ("/disable", "alice")] {
        let aged = codec.issue(&aged_claims(&codec, sub, "me")).unwrap();
        let response = client()
            .post(format!("{base}{path}"))
            .bearer_auth(&aged)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
        assert!(
            response.headers().get(REFRESH_HEADER).is_none(),
            "{path} handed out a token it had just revoked"
        );
    }
}
