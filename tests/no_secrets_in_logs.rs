//! Threat: tokens, passwords and secrets leaking into logs or `Debug`
//! output, and attacker text injected into log lines (jsonwebtoken's error
//! messages echo token content verbatim, newlines included).
//!
//! Every log line of this test binary, at TRACE level, is captured while a
//! server handles logins, good and bad tokens and malformed headers; none of
//! the secrets involved may appear, and no text a client chose (a token's
//! header, a subject) may start a log line of its own: subjects are logged
//! with `?` (escaped), errors that echo input are not logged at all.
#![cfg(feature = "axum")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tower_auth::axum::token_endpoint;
use tower_auth::session::RefreshTokens;
use tower_auth::{
    AuthLayer, Authenticator, Credentials, Key, PasswordHasher, SimpleUser, TokenCodec,
};

const PASSWORD: &str = "correct-horse-battery-staple";
const WRONG_PASSWORD: &str = "wrong-horse-battery-staple";
const HMAC_SECRET: &str = "an HMAC secret nobody may ever log, 32+ bytes";
const INJECTED: &str = "INJECTED-LOG-LINE";
/// A subject that, written raw, would start a forged log line.
const NEWLINE_SUBJECT: &str = "eve\nINJECTED-LOG-LINE";

/// Everything written to the log, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    captured
}

/// A token whose header is valid JSON holding an escaped newline and a fake
/// log line in `alg`: serde's error for it ("unknown variant `HS256` + a raw
/// newline + ...") echoes the value decoded, so a build that logged that
/// error with `%` would write the fake line.
fn injection_token() -> String {
    let header = serde_json::json!({ "alg": format!("HS256\n{INJECTED}"), "typ": "at+jwt" });
    let payload = serde_json::json!({ "sub": format!("x\n{INJECTED}"), "exp": 1 });
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

#[tokio::test]
async fn no_token_password_or_secret_reaches_a_log_line_or_debug_output() {
    let logs = capture_logs();

    let hash = PasswordHasher::new().hash(PASSWORD).await.unwrap();
    let users = common::users(&hash);
    users.insert(tower_auth::SimpleUser::new(NEWLINE_SUBJECT, hash.clone()));
    let codec: TokenCodec = common::codec_builder(Key::hs256(HMAC_SECRET.as_bytes()).unwrap())
        .build()
        .unwrap();
    let auth = Authenticator::builder(users, codec.clone())
        .credentials(Credentials::bearer().query("token").cookie("at"))
        // No grace: the second use of a refresh token is reuse at once.
        .refresh_tokens(RefreshTokens::new().grace(Duration::ZERO))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/token", post(token_endpoint::<SimpleUser, ()>))
        .route(
            "/me",
            get(common::whoami).layer(AuthLayer::required(auth.clone())),
        )
        .with_state(auth.clone());
    let base = common::serve(app).await;
    let client = common::client();

    let login = |password: &'static str| {
        client
            .post(format!("{base}/token"))
            .form(&[("username", "johndoe"), ("password", password)])
            .send()
    };
    let tokens: serde_json::Value = login(PASSWORD).await.unwrap().json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    // A second session: a refresh, then the spent refresh token again:
    // reuse, a security event that is logged, with no token in it.
    let session: serde_json::Value = login(PASSWORD).await.unwrap().json().await.unwrap();
    let first_refresh = session["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |refresh_token: String| {
        client
            .post(format!("{base}/token"))
            .form(&[
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh_token),
            ])
            .send()
    };
    let refreshed: serde_json::Value = refresh(first_refresh.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(first_refresh.clone()).await.unwrap().status(), 400);
    assert_eq!(login(WRONG_PASSWORD).await.unwrap().status(), 400);

    let me = format!("{base}/me");
    let ok = client.get(&me).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let upgrade = client
        .get(format!("{me}?token={token}"))
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 200);
    let ignored_query = client
        .get(format!("{me}?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ignored_query.status(), 401);
    let cookie = client
        .get(&me)
        .header("cookie", format!("at={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);
    let injected = client
        .get(&me)
        .bearer_auth(injection_token())
        .send()
        .await
        .unwrap();
    assert_eq!(injected.status(), 401);
    let tampered = client
        .get(&me)
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);
    let malformed = client
        .get(&me)
        .header("authorization", format!("Bearer\t{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    // Validly signed tokens whose subject holds a newline: a known user
    // (authenticated, its subject logged) and an unknown one (refused).
    for (sub, status) in [(NEWLINE_SUBJECT, 200), ("mallory\nINJECTED-LOG-LINE", 401)] {
        let token = common::token_for(&codec, sub, "");
        let reply = client.get(&me).bearer_auth(&token).send().await.unwrap();
        assert_eq!(reply.status(), status, "{sub:?}");
    }
    // ... and a login of that user, refused then accepted.
    for (password, status) in [(WRONG_PASSWORD, 400), (PASSWORD, 200)] {
        let reply = client
            .post(format!("{base}/token"))
            .form(&[("username", NEWLINE_SUBJECT), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), status);
    }

    let logged = logs.text();
    assert!(
        logged.contains("login succeeded"),
        "the capture works: {logged}"
    );
    assert!(
        logged.contains("refresh token reused: its session is revoked"),
        "reuse is logged as a security event: {logged}"
    );
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        token.as_str(),
        signature,
        first_refresh.as_str(),
        second_refresh.as_str(),
        PASSWORD,
        WRONG_PASSWORD,
        HMAC_SECRET,
    ] {
        assert!(
            !logged.contains(secret),
            "{secret:?} in the logs:\n{logged}"
        );
    }
    // Client text never starts a line: a raw newline before it would.
    let forged_line = format!("\n{INJECTED}");
    assert!(
        !logged.contains(&forged_line),
        "client text wrote its own log line:\n{logged}"
    );
    // The subject was logged, escaped (`?`): the capture saw it.
    let escaped = format!("{NEWLINE_SUBJECT:?}");
    assert!(
        logged.contains(escaped.trim_matches('"')),
        "{escaped} not in the logs:\n{logged}"
    );

    let debug = format!(
        "{auth:?} {:?} {:?}",
        auth.codec(),
        Key::hs256(HMAC_SECRET.as_bytes()).unwrap()
    );
    let bytes = format!("{:?}", &HMAC_SECRET.as_bytes()[..4]);
    for secret in [HMAC_SECRET, bytes.trim_end_matches(']')] {
        assert!(
            !debug.contains(secret),
            "{secret:?} in Debug output: {debug}"
        );
    }
}
