//! Drives the real `hyper_service` example binary over HTTP, and proves the
//! hyper user's build has no axum in its dependency tree.

mod common;

use std::process::Command;

use common::example::ExampleServer;

use serde_json::Value;

const SECRET: &str = "an example secret of more than thirty-two bytes";

fn start() -> ExampleServer {
    ExampleServer::start("hyper_service", Some(SECRET), &[])
}

async fn login(client: &reqwest::Client, base: &str, password: &str) -> reqwest::Response {
    client
        .post(format!("{base}/token"))
        .form(&[("username", "johndoe"), ("password", password)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn login_then_whoami_and_health() {
    let example = start();
    let client = reqwest::Client::new();

    let health = client
        .get(format!("{}/health", example.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let token = login(&client, &example.base, "secret").await;
    assert_eq!(token.status(), 200);
    assert_eq!(token.headers()["cache-control"], "no-store");
    let token: Value = token.json().await.unwrap();
    assert_eq!(token["token_type"], "Bearer");
    let access_token = token["access_token"].as_str().unwrap();

    let whoami = client
        .get(format!("{}/whoami", example.base))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
    let whoami: Value = whoami.json().await.unwrap();
    assert_eq!(
        whoami,
        serde_json::json!({"sub": "johndoe", "scope": "items me"})
    );
}

#[tokio::test]
async fn whoami_answers_rfc_6750_errors() {
    let example = start();
    let client = reqwest::Client::new();
    let url = format!("{}/whoami", example.base);

    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"tower-auth\""
    );

    // A well-formed access token for johndoe, signed with another key; the
    // same claims signed with the server's secret pass, so only the
    // signature is wrong.
    let claims = common::payload("johndoe");
    let header = common::at_header(tower_auth::Algorithm::HS256);
    let sign = |secret: &[u8]| {
        common::sign_raw(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
    };
    let genuine = client
        .get(&url)
        .bearer_auth(sign(SECRET.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), 200);
    let forged = client
        .get(&url)
        .bearer_auth(sign(b"another secret, also of more than 32 bytes"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let challenge = forged.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let forged: Value = forged.json().await.unwrap();
    assert_eq!(
        forged,
        serde_json::json!({
            "error": "invalid_token",
            "error_description": "the access token is invalid",
        })
    );

    let wrong = login(&client, &example.base, "wrong").await;
    assert_eq!(wrong.status(), 400);
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(wrong["error"], "invalid_grant");
}

/// The library built as a hyper user builds it (no default features, one
/// crypto backend) pulls in no axum.
#[test]
fn the_hyper_users_build_has_no_axum() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--no-default-features",
            "--features",
            "aws_lc_rs",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    assert!(tree.contains("jsonwebtoken"), "unexpected tree:\n{tree}");
    assert!(
        !tree.contains("axum"),
        "axum in the hyper user's tree:\n{tree}"
    );

    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hyper_service.rs"
    ))
    .unwrap();
    assert!(
        !example.contains("axum::"),
        "the hyper example must not use axum"
    );
}
