//! Drives the real `password_flow` and `hash_password` example binaries:
//! the FastAPI password + JWT + scopes tutorial, over HTTP.
#![cfg(feature = "axum")]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use serde_json::{Value, json};

const SECRET: &str = "a test secret that is longer than thirty-two bytes";

/// The built example `name`, next to this test binary:
/// `target/debug/deps/password_flow-HASH` -> `target/debug/examples/name`.
fn example_binary(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop();
    path.pop();
    path.push("examples");
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let rebuild = format!("run `cargo build --example {name}` (`cargo test` builds it)");
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", path.display()));
    // `cargo test --test password_flow` builds no examples: refuse to test a
    // binary older than its source.
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    if let Ok(edited) = std::fs::metadata(&source).and_then(|m| m.modified()) {
        assert!(
            edited <= built,
            "{} is older than {}: {rebuild}",
            path.display(),
            source.display()
        );
    }
    path
}

/// A running `password_flow`; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the example with `JWT_SECRET` set to `secret` (unset for
    /// `None`), stderr piped, and waits for its first stdout line.
    fn start(secret: Option<&str>) -> Server {
        let mut command = Command::new(example_binary("password_flow"));
        command
            .env("BIND_ADDR", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match secret {
            Some(secret) => command.env("JWT_SECRET", secret),
            None => command.env_remove("JWT_SECRET"),
        };
        let mut child = command.spawn().expect("the example starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut first = String::new();
            let _ = stdout.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining, so the example never writes into a closed pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        // Own the child before anything can panic, so it is always killed.
        let mut server = Server {
            child,
            base: String::new(),
        };
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the example prints its address within 60 s");
        server.base = first
            .strip_suffix('\n')
            .and_then(|line| line.strip_prefix("listening on "))
            .unwrap_or_else(|| panic!("unexpected first stdout line {first:?}"))
            .to_owned();
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and returns everything it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("stderr is UTF-8");
        }
        stderr
    }
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
    let server = Server::start(Some(SECRET));
    let response = get(&server, "/health", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn johndoe_logs_in_and_reads_every_route() {
    let server = Server::start(Some(SECRET));
    let response = login(&server, "username=johndoe&password=secret").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1800);
    // Every scope johndoe holds, in the crate's (alphabetical) order.
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
    let server = Server::start(Some(SECRET));
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
    let server = Server::start(Some(SECRET));
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
    let server = Server::start(Some(SECRET));
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
    let server = Server::start(None);
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
