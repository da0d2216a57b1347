//! Issue 17: a session's whole life over HTTP — refresh tokens with
//! rotation, reuse detection and a grace window, narrowing, and logout that
//! revokes one session and leaves the others.
#![cfg(feature = "axum")]

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::*;
use tower_auth::axum::{logout, session_login, token_endpoint};
use tower_auth::session::RefreshTokens;
use tower_auth::store::MemoryStore;
use tower_auth::{
    AuthLayer, Authenticated, Authenticator, Credentials, MemoryUserStore, PasswordHasher,
    SessionCookie, SimpleUser,
};

const PASSWORD: &str = "correct horse battery staple";

/// Cheap argon2 parameters: these tests are about sessions, not hashing.
fn hasher() -> PasswordHasher {
    PasswordHasher::builder().params(8, 1, 1).build().unwrap()
}

async fn me(auth: Authenticated<SimpleUser>) -> String {
    format!("{} [{}]", auth.user.username, auth.claims.scope)
}

struct Server {
    base: String,
    store: MemoryUserStore<SimpleUser>,
    sessions: MemoryStore,
}

async fn server_with(refresh: RefreshTokens, credentials: Credentials) -> Server {
    let passwords = hasher();
    let store = users(&passwords.hash(PASSWORD).await.unwrap());
    let sessions = MemoryStore::new().max_families_per_subject(3);
    let auth = Authenticator::builder(store.clone(), hs256_codec())
        .realm(REALM)
        .passwords(passwords)
        .credentials(credentials)
        .allowed_origins(["https://app.example"])
        .refresh_tokens(refresh)
        .shared_store(sessions.clone())
        .render_errors(reason_header)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/token", post(token_endpoint::<SimpleUser, ()>))
        .route("/login", post(session_login::<SimpleUser, ()>))
        .route("/logout", post(logout::<SimpleUser, ()>))
        .route("/me", get(me))
        .layer(AuthLayer::optional(auth.clone()))
        .with_state(auth);
    Server {
        base: serve(app).await,
        store,
        sessions,
    }
}

async fn server() -> Server {
    server_with(
        RefreshTokens::new().grace(Duration::from_secs(1)),
        Credentials::bearer(),
    )
    .await
}

impl Server {
    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        Reply::from(
            client()
                .post(format!("{}{path}", self.base))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn login(&self, user: &str) -> Tokens {
        let reply = self
            .post_form("/token", &[("username", user), ("password", PASSWORD)])
            .await;
        Tokens::of(&reply)
    }

    async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn logout(&self, access_token: &str) -> Reply {
        Reply::from(
            client()
                .post(format!("{}/logout", self.base))
                .bearer_auth(access_token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn me(&self, access_token: &str) -> Reply {
        get_bearer(&self.base, "/me", access_token).await
    }
}

/// A token response's two tokens.
#[derive(Debug, Clone)]
struct Tokens {
    access: String,
    refresh: String,
}

impl Tokens {
    fn of(reply: &Reply) -> Tokens {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.headers["cache-control"], "no-store");
        let field = |name: &str| {
            reply.json[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {}", reply.json))
                .to_owned()
        };
        Tokens {
            access: field("access_token"),
            refresh: field("refresh_token"),
        }
    }
}

/// 400 `invalid_grant`, the body every unusable refresh token gets.
fn assert_invalid_grant(reply: &Reply) {
    assert_eq!(reply.status, 400, "{reply:?}");
    reply.assert_error_body("invalid_grant");
}

#[tokio::test]
async fn a_login_returns_a_refresh_token_and_a_refresh_rotates_it() {
    let server = server().await;
    let first = server.login("johndoe").await;
    assert_eq!(first.refresh.len(), 43, "256 bits, base64url");
    assert_eq!(server.me(&first.access).await.status, 200);

    let reply = server.refresh(&first.refresh).await;
    let second = Tokens::of(&reply);
    assert_eq!(reply.json["token_type"], "Bearer");
    assert_eq!(reply.json["scope"], "items me");
    assert_ne!(second.refresh, first.refresh, "rotated");
    assert_ne!(second.access, first.access);
    assert_eq!(server.me(&second.access).await.text(), "johndoe [items me]");
    // The successor rotates in turn.
    let third = Tokens::of(&server.refresh(&second.refresh).await);
    assert_ne!(third.refresh, second.refresh);
    assert_eq!(server.me(&third.access).await.status, 200);
}

#[tokio::test]
async fn a_spent_token_reused_after_the_grace_window_revokes_the_whole_family() {
    let server = server().await;
    let login = server.login("johndoe").await;
    let next = Tokens::of(&server.refresh(&login.refresh).await);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The thief (or a replay) presents the spent token.
    assert_invalid_grant(&server.refresh(&login.refresh).await);
    // The family is gone: its current token too, and its access tokens.
    assert_invalid_grant(&server.refresh(&next.refresh).await);
    server
        .me(&next.access)
        .await
        .assert_invalid_token_because("session_revoked");
    server
        .me(&login.access)
        .await
        .assert_invalid_token_because("session_revoked");
    // The user's other sessions are untouched.
    let other = server.login("johndoe").await;
    assert_eq!(server.me(&other.access).await.status, 200);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_within_the_grace_window_get_the_same_successor() {
    let server = server().await;
    let login = server.login("johndoe").await;
    // Two tabs refreshing at once, then a retried request.
    let (a, b) = tokio::join!(
        server.refresh(&login.refresh),
        server.refresh(&login.refresh)
    );
    let (a, b) = (Tokens::of(&a), Tokens::of(&b));
    assert_eq!(a.refresh, b.refresh, "one successor");
    let retried = Tokens::of(&server.refresh(&login.refresh).await);
    assert_eq!(retried.refresh, a.refresh);
    // Every access token handed out works, and the session lives on.
    for tokens in [&a, &b, &retried] {
        assert_eq!(server.me(&tokens.access).await.status, 200);
    }
    let next = Tokens::of(&server.refresh(&a.refresh).await);
    assert_eq!(server.me(&next.access).await.status, 200);
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scopes_never_widen_them() {
    let server = server().await;
    let reply = server
        .post_form(
            "/token",
            &[
                ("username", "johndoe"),
                ("password", PASSWORD),
                ("scope", "me"),
            ],
        )
        .await;
    let login = Tokens::of(&reply);
    // Wider than the login's `me`: refused, and nothing is spent.
    let wider = server
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &login.refresh),
                ("scope", "me items"),
            ],
        )
        .await;
    assert_eq!(wider.status, 400, "{wider:?}");
    wider.assert_error_body("invalid_scope");
    let narrowed = server
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &login.refresh),
                ("scope", "me"),
            ],
        )
        .await;
    assert_eq!(narrowed.json["scope"], "me");
    let next = Tokens::of(&narrowed);
    assert_eq!(server.me(&next.access).await.text(), "johndoe [me]");

    // The scopes are checked against the user as they are now.
    server.store.update("johndoe", |user| {
        user.scopes = tower_auth::Scopes::none();
    });
    let reply = server.refresh(&next.refresh).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json.get("scope"), None, "{reply:?}");
}

#[tokio::test]
async fn logout_revokes_one_session_and_leaves_the_others() {
    let server = server().await;
    let phone = server.login("johndoe").await;
    let laptop = server.login("johndoe").await;
    let reply = server.logout(&phone.access).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(reply.headers["cache-control"], "no-store");

    server
        .me(&phone.access)
        .await
        .assert_invalid_token_because("session_revoked");
    assert_invalid_grant(&server.refresh(&phone.refresh).await);
    assert_eq!(server.me(&laptop.access).await.status, 200);
    assert_eq!(server.refresh(&laptop.refresh).await.status, 200);
    // Logging out again, or with a refused token, is still 204.
    assert_eq!(server.logout(&phone.access).await.status, 204);
    assert_eq!(server.logout("garbage").await.status, 204);
}

#[tokio::test]
async fn a_disabled_user_or_a_raised_token_version_ends_the_family() {
    let server = server().await;
    let johndoe = server.login("johndoe").await;
    let alice = server.login("alice").await;
    server.store.update("johndoe", |user| user.active = false);
    server.store.update("alice", |user| user.token_version += 1);
    assert_invalid_grant(&server.refresh(&johndoe.refresh).await);
    assert_invalid_grant(&server.refresh(&alice.refresh).await);
    // Ended for good: re-enabling the user does not bring the family back.
    server.store.update("johndoe", |user| user.active = true);
    assert_invalid_grant(&server.refresh(&johndoe.refresh).await);
}

#[tokio::test]
async fn unknown_spent_expired_revoked_and_malformed_refresh_tokens_get_one_identical_answer() {
    let server = server_with(
        RefreshTokens::new()
            .grace(Duration::from_secs(1))
            .idle_timeout(Duration::from_secs(2)),
        Credentials::bearer(),
    )
    .await;
    let unknown = server
        .refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    let malformed = server.refresh("not a refresh token").await;
    let spent_login = server.login("johndoe").await;
    server.refresh(&spent_login.refresh).await;
    let revoked_login = server.login("johndoe").await;
    server.logout(&revoked_login.access).await;
    let revoked = server.refresh(&revoked_login.refresh).await;
    let expired_login = server.login("alice").await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let expired = server.refresh(&expired_login.refresh).await;
    let spent = server.refresh(&spent_login.refresh).await;

    for reply in [&unknown, &malformed, &spent, &expired, &revoked] {
        assert_invalid_grant(reply);
        assert_eq!(reply.bytes, unknown.bytes, "{reply:?}");
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn a_refresh_grant_without_refresh_tokens_on_is_unsupported() {
    let passwords = hasher();
    let store = users(&passwords.hash(PASSWORD).await.unwrap());
    let auth = Authenticator::builder(store, hs256_codec())
        .passwords(passwords)
        .build()
        .unwrap();
    let base = serve(
        Router::new()
            .route("/token", post(token_endpoint::<SimpleUser, ()>))
            .with_state(auth),
    )
    .await;
    let login = Reply::from(
        client()
            .post(format!("{base}/token"))
            .form(&[("username", "johndoe"), ("password", PASSWORD)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, 200);
    assert_eq!(login.json.get("refresh_token"), None, "off by default");
}

#[tokio::test]
async fn a_flood_of_logins_keeps_a_bounded_number_of_families_per_user() {
    let server = server().await;
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(server.login("johndoe").await);
    }
    let (revoked, families) = server.sessions.len();
    assert_eq!(families, 3, "the store's cap per subject");
    assert_eq!(revoked, 7);
    // The oldest sessions ended; the newest live.
    server
        .me(&sessions[0].access)
        .await
        .assert_invalid_token_because("session_revoked");
    assert_eq!(server.me(&sessions[9].access).await.status, 200);
    assert_invalid_grant(&server.refresh(&sessions[0].refresh).await);
}

/// Browsers: the refresh token in its own `HttpOnly` cookie, sent only to
/// the token endpoint, never in a body a script could read.
mod refresh_cookie {
    use super::*;

    const APP: &str = "https://app.example";

    async fn cookie_server() -> Server {
        server_with(
            RefreshTokens::new().cookie(
                SessionCookie::new("__Secure-refresh_token")
                    .path("/token")
                    .secure(true),
            ),
            Credentials::bearer().session_cookie(SessionCookie::new("__Host-session")),
        )
        .await
    }

    fn set_cookies(reply: &Reply) -> Vec<String> {
        reply
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    }

    fn refresh_cookie_of(reply: &Reply) -> String {
        let cookie = set_cookies(reply)
            .into_iter()
            .find(|cookie| cookie.starts_with("__Secure-refresh_token="))
            .unwrap_or_else(|| panic!("a refresh cookie in {reply:?}"));
        for attribute in ["HttpOnly", "Secure", "Path=/token"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        let value = cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("__Secure-refresh_token=");
        value.to_owned()
    }

    async fn refresh_by_cookie(server: &Server, token: &str, origin: &str) -> Reply {
        Reply::from(
            client()
                .post(format!("{}/token", server.base))
                .header("cookie", format!("__Secure-refresh_token={token}"))
                .header("origin", origin)
                .form(&[("grant_type", "refresh_token")])
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn the_refresh_token_travels_in_an_http_only_cookie_scoped_to_the_token_endpoint() {
        let server = cookie_server().await;
        let login = Reply::from(
            client()
                .post(format!("{}/login", server.base))
                .header("origin", APP)
                .form(&[("username", "johndoe"), ("password", PASSWORD)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(login.status, 200, "{login:?}");
        assert_eq!(login.json.get("refresh_token"), None, "{login:?}");
        assert_eq!(login.json.get("access_token"), None, "{login:?}");
        let first = refresh_cookie_of(&login);

        let refreshed = refresh_by_cookie(&server, &first, APP).await;
        assert_eq!(refreshed.status, 200, "{refreshed:?}");
        assert_eq!(refreshed.json.get("refresh_token"), None);
        let second = refresh_cookie_of(&refreshed);
        assert_ne!(second, first, "rotated");

        // A foreign page cannot spend the cookie.
        let foreign = refresh_by_cookie(&server, &second, "https://evil.example").await;
        foreign.assert_refused(403, "invalid_origin", "origin_not_allowed");
        // The cookie and the form at once: which one is meant?
        let both = Reply::from(
            client()
                .post(format!("{}/token", server.base))
                .header("cookie", format!("__Secure-refresh_token={second}"))
                .header("origin", APP)
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &second)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(both.status, 400, "{both:?}");
        both.assert_error_body("invalid_request");

        // Logout with the refresh cookie alone (the access token expired)
        // ends the session and deletes both cookies.
        let logout = Reply::from(
            client()
                .post(format!("{}/logout", server.base))
                .header("cookie", format!("__Secure-refresh_token={second}"))
                .header("origin", APP)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(logout.status, 204, "{logout:?}");
        let removals = set_cookies(&logout);
        assert_eq!(removals.len(), 2, "{removals:?}");
        assert!(removals.iter().all(|cookie| cookie.contains("Max-Age=0")));
        assert_invalid_grant(&refresh_by_cookie(&server, &second, APP).await);
    }
}
