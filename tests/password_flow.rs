//! Drives the real `password_flow` and `hash_password` example binaries:
//! the FastAPI password + JWT + scopes tutorial, over HTTP.
#![cfg(feature = "axum")]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::example::{ExampleServer as Server, example_binary};

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use serde_json::{Value, json};

const SECRET: &str = "a test secret that is longer than thirty-two bytes";

fn start(secret: Option<&str>) -> Server {
    Server::start("password_flow", secret, &[])
}

fn client() -> reqwest::Client {
    // No proxy from the environment between the test and 127.0.0.1.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn login(server: &Server, form: &str) -> reqwest::Response {
    client()
        .post(server.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap()
}

async fn token(server: &Server, form: &str) -> String {
    let response = login(server, form).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn get_json(server: &Server, path: &str, token: &str) -> Value {
    let response = get(server, path, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn health_needs_no_token() {
    let server = start(Some(SECRET));
    let response = get(&server, "/health", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
}

#[tokio::test]
async fn johndoe_logs_in_and_reads_every_route() {
    let server = start(Some(SECRET));
    let response = login(&server, "username=johndoe&password=secret&scope=me+items").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1800);
    // The scopes asked for, in the crate's (alphabetical) order.
    assert_eq!(body["scope"], "items me");
    let token = body["access_token"].as_str().expect("an access token");

    assert_eq!(
        get_json(&server, "/users/me", token).await,
        json!({
            "username": "johndoe",
            "email": "johndoe@example.com",
            "full_name": "John Doe",
            "disabled": false,
        })
    );
    assert_eq!(
        get_json(&server, "/users/me/items", token).await,
        json!([{ "item_id": "Foo", "owner": "johndoe" }])
    );
    assert_eq!(
        get_json(&server, "/status", token).await,
        json!({ "status": "ok" })
    );
}

#[tokio::test]
async fn a_me_only_token_cannot_read_items() {
    let server = start(Some(SECRET));
    let token = token(&server, "username=johndoe&password=secret&scope=me").await;
    assert_eq!(
        get_json(&server, "/users/me", &token).await["username"],
        "johndoe"
    );
    assert_eq!(get_json(&server, "/status", &token).await["status"], "ok");

    let response = get(&server, "/users/me/items", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
}

#[tokio::test]
async fn no_token_is_a_bare_challenge() {
    let server = start(Some(SECRET));
    for path in ["/users/me", "/users/me/items", "/status"] {
        let response = get(&server, path, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "GET {path}");
        let challenge = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with(r#"Bearer realm=""#), "{challenge}");
        assert!(!challenge.contains("error="), "{challenge}");
    }
}

#[tokio::test]
async fn bad_logins_get_one_identical_invalid_grant() {
    let server = start(Some(SECRET));
    let mut bodies = Vec::new();
    // Disabled user with the right password, wrong password, unknown user.
    for form in [
        "username=alice&password=secretalice",
        "username=johndoe&password=wrong",
        "username=nobody&password=x",
    ] {
        let response = login(&server, form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form}");
        bodies.push(response.text().await.unwrap());
    }
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0], bodies[2]);
}

#[test]
fn a_short_jwt_secret_is_refused_at_startup() {
    let output = Command::new(example_binary("password_flow"))
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("JWT_SECRET", "ten bytes!")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("32 bytes"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it must not serve"
    );
}

#[tokio::test]
async fn without_jwt_secret_it_warns_and_serves() {
    let server = start(None);
    let token = token(&server, "username=johndoe&password=secret").await;
    assert_eq!(get_json(&server, "/status", &token).await["status"], "ok");
    let stderr = server.stop();
    assert!(
        stderr.contains("WARN") && stderr.contains("JWT_SECRET is not set"),
        "{stderr}"
    );
}

#[tokio::test]
async fn hash_password_hashes_a_piped_password() {
    let mut child = Command::new(example_binary("hash_password"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let phc = String::from_utf8(output.stdout).unwrap();
    let phc = phc.trim_end();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let hasher = tower_auth::PasswordHasher::new();
    assert!(hasher.verify("secret", phc).await.unwrap());
    assert!(!hasher.verify("secret\n", phc).await.unwrap());
}

#[test]
fn hash_password_makes_a_jwt_secret() {
    let output = Command::new(example_binary("hash_password"))
        .arg("--secret")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success());
    let secret = String::from_utf8(output.stdout).unwrap();
    let secret = secret.trim_end();
    assert!(secret.len() >= 43, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not base64url without padding: {secret}"
    );
    // Long enough for the example servers.
    assert!(tower_auth::Key::hs256(secret.as_bytes()).is_ok());
}

/// A token for johndoe signed with the example's secret, issued `age`
/// seconds ago with the example's 30-minute window.
fn aged_token(age: u64) -> String {
    let codec = common::codec_builder(tower_auth::Key::hs256(SECRET.as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut claims = codec.new_claims(
        "johndoe",
        tower_auth::Scopes::parse("me items").unwrap(),
        0,
        (),
    );
    let issued = common::now() - age;
    claims.iat = Some(issued);
    claims.auth_time = Some(issued);
    claims.exp = issued + 30 * 60;
    codec.issue(&claims).unwrap()
}

#[tokio::test]
async fn an_active_user_gets_a_renewed_token_in_the_last_15_minutes() {
    let server = start(Some(SECRET));
    let fresh = get(&server, "/status", Some(&aged_token(10 * 60))).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    assert!(
        fresh.headers().get("x-refreshed-token").is_none(),
        "20 minutes left: no renewal"
    );

    let due = get(&server, "/status", Some(&aged_token(20 * 60))).await;
    assert_eq!(due.status(), StatusCode::OK);
    assert_eq!(due.headers()[CACHE_CONTROL], "no-store");
    let renewed = due.headers()["x-refreshed-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let codec = common::codec_builder(tower_auth::Key::hs256(SECRET.as_bytes()).unwrap())
        .build()
        .unwrap();
    let claims = codec.verify::<()>(&renewed).unwrap();
    assert_eq!(claims.exp, claims.iat.unwrap() + 30 * 60);
    assert_eq!(claims.scope.to_string(), "items me");
    assert_eq!(
        get_json(&server, "/users/me/items", &renewed).await,
        json!([{ "item_id": "Foo", "owner": "johndoe" }])
    );
}

#[tokio::test]
async fn cors_lets_the_allowed_origin_read_the_renewed_token() {
    let origin = "http://app.localhost:5173";
    let server = Server::start("password_flow", Some(SECRET), &[("ALLOWED_ORIGIN", origin)]);
    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url("/status"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin);
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");

    let response = client()
        .get(server.url("/status"))
        .header("origin", origin)
        .bearer_auth(aged_token(20 * 60))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], origin);
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "x-refreshed-token"
    );
    assert!(response.headers().get("x-refreshed-token").is_some());

    let foreign = client()
        .get(server.url("/status"))
        .header("origin", "http://evil.localhost")
        .bearer_auth(aged_token(0))
        .send()
        .await
        .unwrap();
    // tower-http names the one allowed origin whatever the request says; the
    // browser then withholds the response from the foreign page.
    let allowed = foreign.headers().get("access-control-allow-origin");
    assert!(allowed.is_none_or(|o| o == origin), "{allowed:?}");
}

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The `alg` in a token's header, read as any client could.
fn header_alg(token: &str) -> String {
    let header = jsonwebtoken::decode_header(token).unwrap();
    format!("{:?}", header.alg)
}

#[tokio::test]
async fn it_signs_with_es256_from_pem_files() {
    let (private, public) = (key_path("ec256_private.pem"), key_path("ec256_public.pem"));
    let server = Server::start(
        "password_flow",
        None,
        &[
            ("JWT_ALG", "ES256"),
            ("JWT_PRIVATE_KEY", &private),
            ("JWT_PUBLIC_KEY", &public),
        ],
    );
    let token = token(&server, "username=johndoe&password=secret").await;
    assert_eq!(header_alg(&token), "ES256");
    // Twice: the second answer comes from the verified-token cache.
    for _ in 0..2 {
        assert_eq!(
            get_json(&server, "/status", &token).await,
            json!({ "status": "ok" })
        );
    }
    // No HS256 secret was needed, so no warning about a random one.
    let stderr = server.stop();
    assert!(!stderr.contains("JWT_SECRET is not set"), "{stderr}");
}

#[tokio::test]
async fn it_signs_with_rs256_and_eddsa_too() {
    for (alg, stem) in [("RS256", "rsa"), ("EdDSA", "ed25519")] {
        let private = key_path(&format!("{stem}_private.pem"));
        let public = key_path(&format!("{stem}_public.pem"));
        let server = Server::start(
            "password_flow",
            None,
            &[
                ("JWT_ALG", alg),
                ("JWT_PRIVATE_KEY", &private),
                ("JWT_PUBLIC_KEY", &public),
            ],
        );
        let token = token(&server, "username=johndoe&password=secret").await;
        assert_eq!(header_alg(&token), alg);
        assert_eq!(
            get_json(&server, "/status", &token).await,
            json!({ "status": "ok" })
        );
    }
}

/// Runs `password_flow` with `env`, expecting it to refuse to start; returns
/// its stderr.
fn refused_at_startup(env: &[(&str, &str)]) -> String {
    let output = Command::new(example_binary("password_flow"))
        .env("BIND_ADDR", "127.0.0.1:0")
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PRIVATE_KEY")
        .env_remove("JWT_PUBLIC_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "it must fail: {env:?}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it must not serve"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_missing_or_bad_key_is_refused_at_startup() {
    let public = key_path("ec256_public.pem");

    let stderr = refused_at_startup(&[("JWT_ALG", "ES256"), ("JWT_PUBLIC_KEY", &public)]);
    assert!(stderr.contains("JWT_PRIVATE_KEY"), "{stderr}");

    let stderr = refused_at_startup(&[
        ("JWT_ALG", "ES256"),
        ("JWT_PRIVATE_KEY", "/nonexistent/key.pem"),
        ("JWT_PUBLIC_KEY", &public),
    ]);
    assert!(stderr.contains("/nonexistent/key.pem"), "{stderr}");

    // An RSA key for ES256.
    let rsa = key_path("rsa_private.pem");
    let stderr = refused_at_startup(&[
        ("JWT_ALG", "ES256"),
        ("JWT_PRIVATE_KEY", &rsa),
        ("JWT_PUBLIC_KEY", &public),
    ]);
    assert!(stderr.contains("not a valid ES256 key"), "{stderr}");

    // Two halves of different pairs.
    let other = key_path("rsa2_public.pem");
    let stderr = refused_at_startup(&[
        ("JWT_ALG", "RS256"),
        ("JWT_PRIVATE_KEY", &key_path("rsa_private.pem")),
        ("JWT_PUBLIC_KEY", &other),
    ]);
    assert!(stderr.contains("do not match"), "{stderr}");

    let stderr = refused_at_startup(&[("JWT_ALG", "none")]);
    assert!(stderr.contains("JWT_ALG"), "{stderr}");
}

#[test]
fn a_bad_token_lifetime_is_refused_at_startup() {
    for lifetime in ["", "0", "1", "-5", "1.5", "30m", "28801"] {
        let stderr =
            refused_at_startup(&[("JWT_SECRET", SECRET), ("TOKEN_LIFETIME_SECS", lifetime)]);
        assert!(
            stderr.contains("TOKEN_LIFETIME_SECS"),
            "{lifetime:?}: {stderr}"
        );
        assert!(stderr.contains("from 2 to 28800"), "{lifetime:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_short_token_lifetime_renews_past_half_life() {
    let server = Server::start(
        "password_flow",
        Some(SECRET),
        &[("TOKEN_LIFETIME_SECS", "8")],
    );
    let response = login(&server, "username=johndoe&password=secret").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 8);
    let token = body["access_token"].as_str().unwrap();
    let codec = common::codec_builder(tower_auth::Key::hs256(SECRET.as_bytes()).unwrap())
        .build()
        .unwrap();
    let claims = codec.verify::<()>(token).unwrap();
    assert_eq!(claims.exp, claims.iat.unwrap() + 8);

    // A token issued 5 of its 8 seconds ago (3 left) is past half-life.
    let mut aged = claims.clone();
    aged.iat = Some(common::now() - 5);
    aged.auth_time = aged.iat;
    aged.exp = aged.iat.unwrap() + 8;
    let response = get(&server, "/status", Some(&codec.issue(&aged).unwrap())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed = response.headers()["x-refreshed-token"].to_str().unwrap();
    let renewed = codec.verify::<()>(renewed).unwrap();
    assert_eq!(renewed.exp, renewed.iat.unwrap() + 8);

    // One issued 2 seconds ago (6 left) is not.
    aged.iat = Some(common::now() - 2);
    aged.exp = aged.iat.unwrap() + 8;
    let response = get(&server, "/status", Some(&codec.issue(&aged).unwrap())).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("x-refreshed-token").is_none());
}

/// A token for johndoe signed with the example's secret that expired a
/// minute ago.
fn expired_token() -> String {
    let codec = common::codec_builder(tower_auth::Key::hs256(SECRET.as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut claims = codec.new_claims(
        "johndoe",
        tower_auth::Scopes::parse("me items").unwrap(),
        0,
        (),
    );
    let issued = common::now() - 31 * 60;
    claims.iat = Some(issued);
    claims.auth_time = Some(issued);
    claims.exp = issued + 30 * 60;
    codec.issue(&claims).unwrap()
}

#[tokio::test]
async fn a_client_that_always_sends_its_expired_token_can_log_in_again() {
    let server = start(Some(SECRET));
    let stale = expired_token();
    let response = client()
        .post(server.url("/token"))
        .bearer_auth(&stale)
        .form(&[
            ("username", "johndoe"),
            ("password", "secret"),
            ("scope", "me"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "POST /token");
    let body: Value = response.json().await.unwrap();
    let fresh = body["access_token"].as_str().unwrap();

    assert_eq!(
        get(&server, "/health", Some(&stale)).await.status(),
        StatusCode::OK
    );
    let unknown = get(&server, "/no-such-page", Some(&stale)).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.headers().get(WWW_AUTHENTICATE).is_none());

    let refused = get(&server, "/users/me", Some(&stale)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers()[WWW_AUTHENTICATE],
        r#"Bearer realm="password_flow", error="invalid_token", error_description="the access token expired", scope="me""#
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["error_description"], "the access token expired");
    assert_eq!(
        get_json(&server, "/users/me", fresh).await["username"],
        "johndoe"
    );
}

#[tokio::test]
async fn a_challenge_names_the_scopes_of_the_route_as_fastapi_does() {
    let server = start(Some(SECRET));
    for (path, scope) in [("/users/me", "me"), ("/users/me/items", "items me")] {
        let response = get(&server, path, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "GET {path}");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            format!(r#"Bearer realm="password_flow", scope="{scope}""#).as_str(),
            "GET {path}"
        );
    }
    // `/status` needs a token but no scope: the bare challenge.
    let response = get(&server, "/status", None).await;
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        r#"Bearer realm="password_flow""#
    );
}

/// Issue 17 on the tutorial server: refresh tokens rotate, a reused one
/// ends the session, and `POST /logout` revokes one session only.
#[tokio::test]
async fn refresh_tokens_rotate_and_logout_revokes_the_session() {
    // No grace: presenting a spent refresh token again is reuse at once.
    let server = Server::start(
        "password_flow",
        Some(SECRET),
        &[("REFRESH_GRACE_SECS", "0")],
    );
    let form = "username=johndoe&password=secret&scope=me";
    let first: Value = login(&server, form).await.json().await.unwrap();
    let refresh = |token: String| {
        client()
            .post(server.url("/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
            .send()
    };
    let refresh_token = |body: &Value| body["refresh_token"].as_str().unwrap().to_owned();
    let access_token = |body: &Value| body["access_token"].as_str().unwrap().to_owned();

    let response = refresh(refresh_token(&first)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let second: Value = response.json().await.unwrap();
    assert_ne!(refresh_token(&second), refresh_token(&first));
    assert_eq!(second["scope"], "me");
    get_json(&server, "/users/me", &access_token(&second)).await;

    // The spent token again: the family and its session end.
    let reused = refresh(refresh_token(&first)).await.unwrap();
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    for token in [access_token(&first), access_token(&second)] {
        let me = get(&server, "/users/me", Some(&token)).await;
        assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    }

    // Logout revokes one session; another login's lives on.
    let phone = token(&server, form).await;
    let laptop = token(&server, form).await;
    let out = client()
        .post(server.url("/logout"))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&server, "/users/me", Some(&phone)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    get_json(&server, "/users/me", &laptop).await;

    let stderr = server.stop();
    assert!(stderr.contains("refresh token reused"), "{stderr}");
    assert!(!stderr.contains(&refresh_token(&first)), "{stderr}");
}
