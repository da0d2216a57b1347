//! Drives the real `sqlite_notes` example binary over HTTP, each test on a
//! fresh SQLite file, which the tests open too (with sqlx) to see and
//! change what the server keeps.
#![cfg(feature = "axum")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::example::ExampleServer;

use reqwest::StatusCode;
use reqwest::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use tower_auth::PasswordHasher;

const SECRET: &str = "a test secret that is longer than thirty-two bytes";
const ADMIN_PASSWORD: &str = "admin password";

/// FastAPI's tutorial hash of "secret": argon2id with m=65536, t=3, p=4,
/// other parameters than the crate's.
const OLD_HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc";

/// The example on a database file of its own, removed with it.
struct Notes {
    server: ExampleServer,
    database: PathBuf,
    _dir: tempfile::TempDir,
}

fn start() -> Notes {
    // A locked database fails fast (the lock test holds one).
    start_with_busy_timeout("100")
}

fn start_with_busy_timeout(milliseconds: &str) -> Notes {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("notes.sqlite3");
    let server = ExampleServer::start(
        "sqlite_notes",
        Some(SECRET),
        &[
            ("DATABASE_PATH", database.to_str().unwrap()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("DB_BUSY_TIMEOUT_MS", milliseconds),
        ],
    );
    Notes {
        server,
        database,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    // No proxy from the environment between the test and 127.0.0.1.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

impl Notes {
    async fn signup(&self, username: &str, password: &str) -> reqwest::Response {
        client()
            .post(self.server.url("/signup"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Signs `username` up and returns the token the signup answered with.
    async fn signed_up(&self, username: &str) -> String {
        let response = self.signup(username, "correct horse").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn login(&self, form: &[(&str, &str)]) -> reqwest::Response {
        client()
            .post(self.server.url("/token"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, form: &[(&str, &str)]) -> String {
        let response = self.login(form).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        client()
            .get(self.server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = client().post(self.server.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }
}

/// The test's own connection to the server's database file.
async fn open(database: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(database)
        .busy_timeout(Duration::from_secs(10));
    SqliteConnection::connect_with(&options).await.unwrap()
}

async fn password_hash(database: &Path, username: &str) -> String {
    let mut db = open(database).await;
    sqlx::query("SELECT password_hash FROM users WHERE username = ?")
        .bind(username)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get("password_hash")
}

fn assert_invalid_token(response: &reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
}

#[tokio::test]
async fn signup_logs_in_and_the_token_reads_me() {
    let notes = start();
    let response = notes.signup("ada", "correct horse").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "notes:read notes:write");
    let token = body["access_token"].as_str().unwrap();

    let me = notes.get("/me", token).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["username"], "ada");
    assert_eq!(me["scopes"], "notes:read notes:write");
    assert_eq!(me.get("password_hash"), None, "{me}");

    // The table holds an argon2id hash of the password, never the password.
    let stored = password_hash(&notes.database, "ada").await;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(
        PasswordHasher::new()
            .verify("correct horse", &stored)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn signup_refuses_a_taken_name_and_a_short_password() {
    let notes = start();
    notes.signed_up("ada").await;
    let taken = notes.signup("ada", "another password").await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    assert_eq!(taken.json::<Value>().await.unwrap()["error"], "conflict");
    let short = notes.signup("bob", "short").await;
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    let bad_name = notes.signup("bob smith", "long enough").await;
    assert_eq!(bad_name.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_signed_up_user_logs_in_through_the_token_endpoint() {
    let notes = start();
    notes.signed_up("ada").await;
    let token = notes
        .token(&[("username", "ada"), ("password", "correct horse")])
        .await;
    assert_eq!(notes.get("/me", &token).await.status(), StatusCode::OK);

    let wrong = notes
        .login(&[("username", "ada"), ("password", "wrong horse")])
        .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn writing_a_note_needs_notes_write() {
    let notes = start();
    let full = notes.signed_up("ada").await;
    let read_only = notes
        .token(&[
            ("username", "ada"),
            ("password", "correct horse"),
            ("scope", "notes:read"),
        ])
        .await;

    let refused = notes
        .post("/notes", &read_only, Some(json!({ "body": "hello" })))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let challenge = refused.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.ends_with(r#"scope="notes:write""#),
        "{challenge}"
    );

    let written = notes
        .post("/notes", &full, Some(json!({ "body": "hello" })))
        .await;
    assert_eq!(written.status(), StatusCode::CREATED);
    // The read-only token reads it; another user does not see it.
    let listed = notes.get("/notes", &read_only).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed[0]["body"], "hello");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let other = notes.signed_up("bob").await;
    let theirs: Value = notes.get("/notes", &other).await.json().await.unwrap();
    assert_eq!(theirs, json!([]));
}

#[tokio::test]
async fn an_admin_disables_a_user_whose_token_and_login_then_fail() {
    let notes = start();
    let bob = notes.signed_up("bob").await;
    let ada = notes.signed_up("ada").await;
    let admin = notes
        .token(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .await;

    // Only the admin scope may.
    let refused = notes.post("/admin/users/bob/disable", &ada, None).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(notes.get("/me", &bob).await.status(), StatusCode::OK);

    let disabled = notes.post("/admin/users/bob/disable", &admin, None).await;
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(&notes.get("/me", &bob).await);
    let login = notes
        .login(&[("username", "bob"), ("password", "correct horse")])
        .await;
    assert_eq!(login.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        login.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // Nobody else is touched.
    assert_eq!(notes.get("/me", &ada).await.status(), StatusCode::OK);

    let unknown = notes
        .post("/admin/users/nobody/disable", &admin, None)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn log_out_everywhere_revokes_every_older_token() {
    let notes = start();
    let first = notes.signed_up("ada").await;
    let second = notes
        .token(&[("username", "ada"), ("password", "correct horse")])
        .await;

    let response = notes.post("/logout-everywhere", &first, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("x-refreshed-token").is_none());
    assert_invalid_token(&notes.get("/me", &first).await);
    assert_invalid_token(&notes.get("/me", &second).await);

    let fresh = notes
        .token(&[("username", "ada"), ("password", "correct horse")])
        .await;
    assert_eq!(notes.get("/me", &fresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_old_hash_is_rehashed_in_the_table_after_a_login() {
    let notes = start();
    let mut db = open(&notes.database).await;
    sqlx::query(
        "INSERT INTO users (username, password_hash, scopes) VALUES ('johndoe', ?, 'notes:read')",
    )
    .bind(OLD_HASH)
    .execute(&mut db)
    .await
    .unwrap();
    drop(db);

    let token = notes
        .token(&[("username", "johndoe"), ("password", "secret")])
        .await;
    // The rehash runs after the login is answered: wait for the row.
    let mut stored = OLD_HASH.to_owned();
    for _ in 0..200 {
        stored = password_hash(&notes.database, "johndoe").await;
        if stored != OLD_HASH {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(stored, OLD_HASH, "the stored hash was never replaced");
    let hasher = PasswordHasher::new();
    assert!(!hasher.needs_rehash(&stored), "{stored}");
    assert!(hasher.verify("secret", &stored).await.unwrap());
    // The user stays logged in, and logs in with the new hash.
    assert_eq!(notes.get("/me", &token).await.status(), StatusCode::OK);
    notes
        .token(&[("username", "johndoe"), ("password", "secret")])
        .await;
}

/// The password changes between the login that verified the old hash and
/// the rehash's write: the write must not revert it (compare-and-set).
/// The test holds the write lock with the change made but not committed
/// while the login reads the old hash; the rehash's `UPDATE` can only run
/// after the commit, and finds another hash than the one it verified.
#[tokio::test]
async fn a_password_changed_during_a_rehash_is_not_reverted() {
    // The rehash waits for the test's lock instead of failing.
    let notes = start_with_busy_timeout("30000");
    let mut db = open(&notes.database).await;
    sqlx::query(
        "INSERT INTO users (username, password_hash, scopes) VALUES ('johndoe', ?, 'notes:read')",
    )
    .bind(OLD_HASH)
    .execute(&mut db)
    .await
    .unwrap();
    let changed = PasswordHasher::new().hash("changed").await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET password_hash = ? WHERE username = 'johndoe'")
        .bind(&changed)
        .execute(&mut db)
        .await
        .unwrap();
    notes
        .token(&[("username", "johndoe"), ("password", "secret")])
        .await;
    sqlx::query("COMMIT").execute(&mut db).await.unwrap();

    let mut stderr = String::new();
    for _ in 0..600 {
        stderr = notes.server.stderr_so_far();
        if stderr.contains("password rehash") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stderr.contains("password rehash dropped: the stored hash changed"),
        "{stderr}"
    );
    assert_eq!(password_hash(&notes.database, "johndoe").await, changed);
    let refused = notes
        .login(&[("username", "johndoe"), ("password", "secret")])
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    notes
        .token(&[("username", "johndoe"), ("password", "changed")])
        .await;
}

/// The server's database locked by another connection for longer than its
/// busy timeout: the user store fails, and the crate answers.
#[tokio::test]
async fn a_locked_database_is_503_temporarily_unavailable_with_retry_after() {
    let notes = start();
    let token = notes.signed_up("ada").await;

    let mut db = open(&notes.database).await;
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut db)
        .await
        .unwrap();
    let login = notes
        .login(&[("username", "ada"), ("password", "correct horse")])
        .await;
    let me = notes.get("/me", &token).await;
    let write = notes
        .post("/notes", &token, Some(json!({ "body": "hello" })))
        .await;
    sqlx::query("ROLLBACK").execute(&mut db).await.unwrap();

    for (what, response) in [("login", login), ("GET /me", me), ("POST /notes", write)] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert_eq!(response.headers()[RETRY_AFTER], "5", "{what}");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none(), "{what}");
        let body = response.text().await.unwrap();
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "temporarily_unavailable", "{what}");
        assert!(
            !body.contains("locked"),
            "{what}: the database's error text: {body}"
        );
    }
    // The lock is gone: so is the error.
    assert_eq!(notes.get("/me", &token).await.status(), StatusCode::OK);

    // A write lock only (readers go on): the app's own write fails, after
    // the crate authenticated the request, and the app answers alike.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut db)
        .await
        .unwrap();
    let me = notes.get("/me", &token).await;
    let write = notes
        .post("/notes", &token, Some(json!({ "body": "hello" })))
        .await;
    sqlx::query("ROLLBACK").execute(&mut db).await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(write.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(write.headers()[RETRY_AFTER], "5");
    assert_eq!(
        write.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );

    let stderr = notes.server.stop();
    assert!(stderr.contains("database is locked"), "{stderr}");
}
