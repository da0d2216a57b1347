//! Sections 6 and 7 of issue 2: the OAuth2 password grant through the ready
//! axum token endpoint, over real HTTP.
#![cfg(feature = "axum")]

mod common;

use axum::Router;
use axum::routing::{get, post};
use common::*;
use serde_json::Value;
use tokio::sync::OnceCell;
use tower_auth::axum::{ScopeRequirement, Scoped, token_endpoint};
use tower_auth::scope::DefaultScopes;
use tower_auth::{
    Authenticated, Authenticator, Credentials, MemoryUserStore, PasswordHasher, Scopes, SimpleUser,
    TokenCodec,
};

/// The password of every test user but `tutorial`.
const PASSWORD: &str = "correct horse battery staple";
/// The FastAPI tutorial's stored hash of `secret`.
const TUTORIAL_HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc";

/// [`PASSWORD`] hashed once per test binary with the default parameters.
async fn password_hash() -> &'static str {
    static HASH: OnceCell<String> = OnceCell::const_new();
    HASH.get_or_init(|| async { PasswordHasher::new().hash(PASSWORD).await.unwrap() })
        .await
}

struct NeedsItems;
impl ScopeRequirement for NeedsItems {
    const SCOPES: &'static [&'static str] = &["me", "items"];
}

struct NeedsMe;
impl ScopeRequirement for NeedsMe {
    const SCOPES: &'static [&'static str] = &["me"];
}

async fn me(auth: Authenticated<SimpleUser>) -> String {
    format!("{} [{}]", auth.user.username, auth.claims.scope)
}

async fn users_me(auth: Scoped<NeedsMe, SimpleUser>) -> String {
    auth.user.username.clone()
}

async fn items(auth: Scoped<NeedsItems, SimpleUser>) -> String {
    auth.user.username.clone()
}

struct Server {
    base: String,
    codec: TokenCodec,
    store: MemoryUserStore<SimpleUser>,
}

/// johndoe (`me items`), alice (`me`), disabled bob, all with [`PASSWORD`];
/// `tutorial` with the tutorial's hash of `secret`.
async fn server() -> Server {
    let codec = hs256_codec();
    let store = users(password_hash().await);
    store.insert(
        SimpleUser::new("tutorial", TUTORIAL_HASH)
            .with_scopes(tower_auth::Scopes::parse("me items").unwrap()),
    );
    let auth = authenticator(store.clone(), codec.clone(), Credentials::bearer());
    server_for(auth, codec, store).await
}

async fn server_for(
    auth: Authenticator<SimpleUser>,
    codec: TokenCodec,
    store: MemoryUserStore<SimpleUser>,
) -> Server {
    let app = Router::new()
        .route("/token", post(token_endpoint::<SimpleUser, ()>))
        .route("/me", get(me))
        .route("/users/me", get(users_me))
        .route("/users/me/items", get(items))
        .with_state(auth);
    Server {
        base: serve(app).await,
        codec,
        store,
    }
}

impl Server {
    async fn login(&self, form: &[(&str, &str)]) -> Reply {
        Reply::from(
            client()
                .post(format!("{}/token", self.base))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn login_raw(&self, content_type: &str, body: impl Into<reqwest::Body>) -> Reply {
        Reply::from(
            client()
                .post(format!("{}/token", self.base))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

/// Asserts a successful token response and returns its JSON.
fn assert_token_response(reply: &Reply) -> &Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body = &reply.json;
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().is_some(), "{body}");
    body
}

fn token_of(reply: &Reply) -> String {
    reply.json["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn login_returns_the_token_response_with_no_store() {
    let server = server().await;
    let reply = server
        .login(&[
            ("grant_type", "password"),
            ("username", "johndoe"),
            ("password", PASSWORD),
        ])
        .await;
    let body = assert_token_response(&reply);
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "scope", "token_type"],
        "{body}"
    );
    assert_eq!(body["expires_in"], 30 * 60);
    assert_eq!(body["scope"], "items me");
    // The token is an access token this server's codec accepts.
    let claims = server.codec.verify::<()>(&token_of(&reply)).unwrap();
    assert_eq!(claims.sub, "johndoe");
    assert_eq!(claims.scope.to_string(), "items me");
}

#[tokio::test]
async fn issued_token_works_on_protected_routes() {
    let server = server().await;
    let reply = server
        .login(&[("username", "johndoe"), ("password", PASSWORD)])
        .await;
    let token = token_of(&reply);
    let me = get_bearer(&server.base, "/me", &token).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.text(), "johndoe [items me]");
    assert_eq!(
        get_bearer(&server.base, "/users/me/items", &token)
            .await
            .text(),
        "johndoe"
    );
    // And stops working when the user's token version moves on.
    server.store.update("johndoe", |u| u.token_version += 1);
    get_bearer(&server.base, "/me", &token)
        .await
        .assert_invalid_token_because("revoked");
    let again = server
        .login(&[("username", "johndoe"), ("password", PASSWORD)])
        .await;
    assert_eq!(
        get_bearer(&server.base, "/me", &token_of(&again))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn granted_scopes_are_the_requested_ones_the_user_holds() {
    let server = server().await;
    // Requested ∩ allowed.
    let reply = server
        .login(&[
            ("username", "johndoe"),
            ("password", PASSWORD),
            ("scope", "me admin"),
        ])
        .await;
    assert_eq!(assert_token_response(&reply)["scope"], "me");
    let token = token_of(&reply);
    assert_eq!(
        server.codec.verify::<()>(&token).unwrap().scope.to_string(),
        "me"
    );
    assert_eq!(
        get_bearer(&server.base, "/users/me", &token).await.status,
        200
    );
    let reply = get_bearer(&server.base, "/users/me/items", &token).await;
    reply.assert_refused(403, "insufficient_scope", "insufficient_scope");

    // A user who lacks a scope never gets it, even when asking for it.
    let reply = server
        .login(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("scope", "me items admin"),
        ])
        .await;
    assert_eq!(assert_token_response(&reply)["scope"], "me");
    let claims = server.codec.verify::<()>(&token_of(&reply)).unwrap();
    assert!(!claims.scope.contains("items") && !claims.scope.contains("admin"));

    // Nothing requested: everything allowed.
    let reply = server
        .login(&[("username", "johndoe"), ("password", PASSWORD)])
        .await;
    assert_eq!(assert_token_response(&reply)["scope"], "items me");

    // Only scopes the user lacks: no token, `invalid_scope` (RFC 6749 §5.2).
    let reply = server
        .login(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("scope", "admin"),
        ])
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    reply.assert_error_body("invalid_scope");
    assert!(!reply.text().contains("access_token"), "{reply:?}");
}

#[tokio::test]
async fn another_grant_type_is_unsupported_grant_type() {
    let server = server().await;
    for grant_type in [
        "client_credentials",
        "authorization_code",
        "refresh_token",
        "",
    ] {
        let reply = server
            .login(&[
                ("grant_type", grant_type),
                ("username", "johndoe"),
                ("password", PASSWORD),
            ])
            .await;
        assert_eq!(reply.status, 400, "{grant_type}: {reply:?}");
        reply.assert_error_body("unsupported_grant_type");
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn missing_username_or_password_is_invalid_request() {
    let server = server().await;
    for form in [
        &[("password", PASSWORD)][..],
        &[("username", "johndoe")][..],
        &[("grant_type", "password")][..],
        &[][..],
    ] {
        let reply = server.login(form).await;
        assert_eq!(reply.status, 400, "{form:?}: {reply:?}");
        reply.assert_error_body("invalid_request");
    }
    // A repeated parameter too (RFC 6749 §3.1).
    let reply = server
        .login_raw(
            "application/x-www-form-urlencoded",
            format!("username=johndoe&username=alice&password={PASSWORD}"),
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    reply.assert_error_body("invalid_request");
}

#[tokio::test]
async fn wrong_password_unknown_user_and_disabled_user_get_one_identical_answer() {
    let server = server().await;
    let wrong_password = server
        .login(&[("username", "johndoe"), ("password", "not the password")])
        .await;
    let unknown_user = server
        .login(&[("username", "nobody"), ("password", PASSWORD)])
        .await;
    // bob is disabled, and this is his right password.
    let disabled_user = server
        .login(&[("username", "bob"), ("password", PASSWORD)])
        .await;
    for reply in [&wrong_password, &unknown_user, &disabled_user] {
        assert_eq!(reply.status, 400, "{reply:?}");
        reply.assert_error_body("invalid_grant");
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    assert_eq!(wrong_password.bytes, unknown_user.bytes);
    assert_eq!(wrong_password.bytes, disabled_user.bytes);
    let visible = |r: &Reply| {
        r.headers
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(visible(&wrong_password), visible(&unknown_user));
    assert_eq!(visible(&wrong_password), visible(&disabled_user));
}

#[tokio::test]
async fn a_json_body_is_415() {
    let server = server().await;
    let reply = server
        .login_raw(
            "application/json",
            format!(r#"{{"username":"johndoe","password":"{PASSWORD}"}}"#),
        )
        .await;
    assert_eq!(reply.status, 415, "{reply:?}");
    reply.assert_error_body("invalid_request");
    // No content type at all.
    let reply = Reply::from(
        client()
            .post(format!("{}/token", server.base))
            .body(format!("username=johndoe&password={PASSWORD}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 415, "{reply:?}");
}

#[tokio::test]
async fn a_body_over_16_kib_is_413_and_one_at_16_kib_is_read() {
    let server = server().await;
    let form = format!("username=johndoe&password={PASSWORD}&padding=");
    let limit = 16 * 1024;
    let at_limit = format!("{form}{}", "x".repeat(limit - form.len()));
    assert_eq!(at_limit.len(), limit);
    let reply = server
        .login_raw("application/x-www-form-urlencoded", at_limit)
        .await;
    assert_token_response(&reply);

    let over = format!("{form}{}", "x".repeat(limit + 1 - form.len()));
    let reply = server
        .login_raw("application/x-www-form-urlencoded", over)
        .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    reply.assert_error_body("invalid_request");

    // Sent chunked, without a Content-Length, the cap holds too (reqwest
    // always sends a length for these bodies: speak HTTP/1.1 by hand).
    let mut chunked = String::new();
    for chunk in std::iter::once(form.clone()).chain((0..20).map(|_| "x".repeat(1024))) {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let head = raw_post(&server.base, "/token", &chunked).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

/// POSTs a chunked form by hand and returns the response head.
async fn raw_post(base: &str, path: &str, chunked_body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked_body}"
    );
    // The server may answer before reading everything; a write error after
    // that is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    text.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn the_fastapi_tutorial_hash_logs_in_with_secret() {
    let server = server().await;
    let reply = server
        .login(&[("username", "tutorial"), ("password", "secret")])
        .await;
    let token = token_of(&reply);
    assert_eq!(assert_token_response(&reply)["scope"], "items me");
    assert_eq!(
        get_bearer(&server.base, "/users/me", &token).await.text(),
        "tutorial"
    );
    let reply = server
        .login(&[("username", "tutorial"), ("password", "Secret")])
        .await;
    assert_eq!(reply.status, 400);
    reply.assert_error_body("invalid_grant");
}

#[tokio::test]
async fn a_failing_store_at_login_is_503_with_nothing_internal() {
    let codec = hs256_codec();
    let auth = Authenticator::builder(FailingStore, codec.clone())
        .realm(REALM)
        .build()
        .unwrap();
    let server = server_for(auth, codec, MemoryUserStore::new()).await;
    let reply = server
        .login(&[("username", "johndoe"), ("password", PASSWORD)])
        .await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.headers["retry-after"], "5", "{reply:?}");
    reply.assert_error_body("temporarily_unavailable");
    assert!(!reply.text().contains("hunter2"), "{reply:?}");
}

#[tokio::test]
async fn stored_hashes_over_the_parameter_ceiling_are_refused_without_running_argon2() {
    let server = server().await;
    // argon2 would abort the whole process on this memory cost.
    server.store.insert(SimpleUser::new(
        "huge",
        "$argon2id$v=19$m=4294967295,t=3,p=4$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc",
    ));
    server
        .store
        .insert(SimpleUser::new("garbled", "not a PHC string"));
    let unknown = server
        .login(&[("username", "nobody"), ("password", "secret")])
        .await;
    for username in ["huge", "garbled"] {
        let reply = server
            .login(&[("username", username), ("password", "secret")])
            .await;
        assert_eq!(reply.status, 400, "{username}: {reply:?}");
        reply.assert_error_body("invalid_grant");
        assert_eq!(reply.bytes, unknown.bytes);
    }
    // The server is still alive and well.
    let reply = server
        .login(&[("username", "johndoe"), ("password", PASSWORD)])
        .await;
    assert_token_response(&reply);
}

#[tokio::test]
async fn a_password_over_the_length_cap_is_refused() {
    // `longpass`'s real password is one byte over the default cap, hashed by
    // a hasher whose cap is larger: only the cap can refuse it.
    let long = "x".repeat(tower_auth::password::DEFAULT_MAX_PASSWORD_LEN + 1);
    let roomy = PasswordHasher::builder()
        .max_password_len(2 * long.len())
        .build()
        .unwrap();
    let hash = roomy.hash(&long).await.unwrap();
    let store = users(password_hash().await);
    store.insert(SimpleUser::new("longpass", hash));
    let form = [("username", "longpass"), ("password", long.as_str())];

    // The control: with the larger cap, the same login succeeds.
    let codec = hs256_codec();
    let auth = Authenticator::builder(store.clone(), codec.clone())
        .passwords(roomy)
        .build()
        .unwrap();
    let roomy_server = server_for(auth, codec.clone(), store.clone()).await;
    assert_token_response(&roomy_server.login(&form).await);

    // The default cap refuses the correct password, as a bad login.
    let auth = authenticator(store.clone(), codec.clone(), Credentials::bearer());
    let server = server_for(auth, codec, store).await;
    let reply = server.login(&form).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    reply.assert_error_body("invalid_grant");
    assert!(PasswordHasher::new().hash(&long).await.is_err());
}

#[tokio::test]
async fn new_hashes_use_owasp_argon2id_parameters_and_old_ones_need_rehash() {
    let hasher = PasswordHasher::new();
    let fresh = password_hash().await;
    assert!(
        fresh.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{fresh}"
    );
    assert!(hasher.verify(PASSWORD, fresh).await.unwrap());
    assert!(!hasher.verify("wrong", fresh).await.unwrap());
    assert!(!hasher.needs_rehash(fresh));
    assert!(hasher.verify("secret", TUTORIAL_HASH).await.unwrap());
    assert!(hasher.needs_rehash(TUTORIAL_HASH));
    assert!(hasher.needs_rehash("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"));
}

/// What a login that asks for no scope is granted is the app's choice
/// (RFC 6749 §3.3): every scope the user holds (the default), none (as
/// FastAPI's tutorial does), or a fixed set of those the user holds.
#[tokio::test]
async fn the_scopes_a_login_gets_when_it_asks_for_none_are_a_policy() {
    async fn granted(policy: Option<DefaultScopes>) -> Reply {
        let codec = hs256_codec();
        let store = users(password_hash().await);
        let mut builder = Authenticator::builder(store.clone(), codec.clone()).realm(REALM);
        if let Some(policy) = policy {
            builder = builder.default_scopes(policy);
        }
        let server = server_for(builder.build().unwrap(), codec, store).await;
        server
            .login(&[("username", "johndoe"), ("password", PASSWORD)])
            .await
    }
    let all = granted(None).await;
    assert_eq!(assert_token_response(&all)["scope"], "items me");
    let none = granted(Some(DefaultScopes::None)).await;
    assert_eq!(assert_token_response(&none).get("scope"), None, "{none:?}");
    let fixed = granted(Some(DefaultScopes::Fixed(
        Scopes::parse("me admin").unwrap(),
    )))
    .await;
    assert_eq!(assert_token_response(&fixed)["scope"], "me");
}

/// `Authenticator::issue_tokens`: the token response a login gives, for a
/// user the app holds (signup, tests) — the app's claims included.
#[tokio::test]
async fn issue_tokens_gives_a_user_you_hold_what_a_login_gives() {
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Tenant {
        tenant: String,
    }
    async fn tenant(claims: tower_auth::Claims<Tenant>) -> String {
        claims.extra.tenant
    }
    let codec = hs256_codec();
    let store = users(password_hash().await);
    let auth = Authenticator::builder(store.clone(), codec.clone())
        .realm(REALM)
        .extra_claims(|user: &SimpleUser| Tenant {
            tenant: format!("t-{}", user.username),
        })
        .build()
        .unwrap();
    let johndoe = store.get("johndoe").unwrap();
    let response = auth.issue_tokens(&johndoe, None).await.unwrap();
    assert_eq!(response.token_type, "Bearer");
    assert_eq!(response.scope.to_string(), "items me");
    let narrowed = auth
        .issue_tokens(&johndoe, Some(&Scopes::parse("me admin").unwrap()))
        .await
        .unwrap();
    assert_eq!(narrowed.scope.to_string(), "me");

    let app = Router::new()
        .route("/tenant", get(tenant))
        .layer(tower_auth::AuthLayer::required(auth.clone()));
    let base = serve(app).await;
    let reply = get_bearer(&base, "/tenant", &response.access_token).await;
    assert_eq!((reply.status, reply.text()), (200, "t-johndoe".to_owned()));
    // A disabled user gets nothing.
    let bob = store.get("bob").unwrap();
    assert!(auth.issue_tokens(&bob, None).await.is_err());
}
