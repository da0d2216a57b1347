//! A notes API whose users live in SQLite, through sqlx: the starting point
//! for a real app on a real database.
//!
//! ```text
//! cargo run --example sqlite_notes
//! ```
//!
//! The database is one file, created with its tables on first start (the
//! migrations are the SQL in [`MIGRATIONS`]; sqlx records those applied in
//! `_sqlx_migrations`). SQLite is compiled into the program: nothing to
//! install, no server to run.
//!
//! Routes:
//! - `POST /signup` (JSON `{"username", "password"}`): creates the user,
//!   with the scopes `notes:read notes:write`, and logs them in: 201 with
//!   the body a login gives (`access_token`, `token_type`, `expires_in`,
//!   `scope`). 409 when the name is taken, 400 for a name or password that
//!   does not fit (names: 1 to 64 of `a-z A-Z 0-9 . _ -`; passwords: 8
//!   characters or more).
//! - `POST /token` (form `username`, `password`, optional `scope`): the
//!   crate's OAuth2 password-grant endpoint.
//! - `GET /me`: the user (any valid token).
//! - `GET /notes` (scope `notes:read`): the user's notes.
//! - `POST /notes` (scope `notes:write`, JSON `{"body"}`): adds a note; 201.
//! - `POST /logout-everywhere`: raises the user's token version, so every
//!   token issued to them so far stops working (204).
//! - `POST /admin/users/{username}/disable` (scope `admin`): disables the
//!   user: their tokens get 401 and their logins are refused (204; 404 for
//!   an unknown name).
//! - `GET /health`: no token.
//!
//! A token whose user is gone, disabled or logged out everywhere is refused
//! on its next request: the user is read from the table on every request.
//! A login whose stored hash was made with other argon2 parameters (an
//! imported table, older settings) is answered at once, and the password is
//! then hashed again with the current ones and written back to the row
//! (`UserStore::update_password_hash`: only if the row still holds the hash
//! that was verified). When the database fails — locked for longer than
//! `DB_BUSY_TIMEOUT_MS`, say — requests are answered 503
//! `temporarily_unavailable` with `Retry-After`, never with its error text.
//!
//! Environment:
//! - `DATABASE_PATH`: the SQLite file (default `tower-auth-notes.sqlite3` in
//!   the system's temporary directory, so that trying the example leaves
//!   nothing in your working tree; point it elsewhere to keep the data).
//! - `DB_BUSY_TIMEOUT_MS`: how long a query waits for a lock another
//!   connection holds before it fails (default 5000, sqlx's own default).
//! - `ADMIN_PASSWORD`: when set, the user `admin` (scopes `admin
//!   notes:read notes:write`) is created with this password, unless a user
//!   of that name exists. Unset: no admin.
//! - `JWT_SECRET`: the HS256 secret, at least 32 bytes. Unset: a random one
//!   (with a warning), so tokens die with the process.
//! - `BIND_ADDR`: where to listen (default `127.0.0.1:3000`; port 0 picks a
//!   free port).
//! - `HEADER_READ_TIMEOUT_SECS`, `MAX_CONNECTIONS`: see
//!   `examples/support/serve.rs` (defaults 10 and 1024).
//! - `RUST_LOG`: log filter (default `info`).
//!
//! Putting it on your own tables: keep [`UserStore`]'s three queries
//! (by id, by name, compare-and-set of the hash) and [`AuthUser`]'s mapping
//! from a row; everything else is your app.

use std::error::Error;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, Path, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlSafeStr};
use tower_auth::axum::{Scoped, token_endpoint};
use tower_auth::error::USER_STORE_RETRY_AFTER;
use tower_auth::{
    AuthError, AuthUser, Authenticated, Authenticator, Key, PasswordError, PasswordUpdate, Renewal,
    Scopes, TokenCodec, UserStore,
};
use tracing_subscriber::EnvFilter;

#[path = "support/serve.rs"]
mod serve;

/// The schema, in order: (version, description, SQL). Append; never edit
/// one that has run (sqlx refuses a migration whose checksum changed).
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "users and notes",
    "CREATE TABLE users (
         id            INTEGER PRIMARY KEY,
         username      TEXT    NOT NULL UNIQUE,
         password_hash TEXT    NOT NULL,
         scopes        TEXT    NOT NULL,
         disabled      INTEGER NOT NULL DEFAULT 0,
         token_version INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE notes (
         id      INTEGER PRIMARY KEY,
         user_id INTEGER NOT NULL REFERENCES users (id),
         body    TEXT    NOT NULL
     );
     CREATE INDEX notes_by_user ON notes (user_id);",
)];

/// What a new user may be granted.
const USER_SCOPES: &str = "notes:read notes:write";
/// What the `ADMIN_PASSWORD` user may be granted.
const ADMIN_SCOPES: &str = "admin notes:read notes:write";
/// The longest note, in bytes.
const MAX_NOTE_LEN: usize = 10_000;

tower_auth::scope_requirement! {
    ReadNotes: "notes:read";
    WriteNotes: "notes:write";
    Admin: "admin";
}

/// A row of `users`; `/me` shows the fields that are not skipped. No
/// `Debug`: it holds the password hash.
#[derive(Clone, Serialize)]
struct User {
    id: i64,
    username: String,
    scopes: Scopes,
    /// `id` as text: the token's `sub`. A stable id, not the name.
    #[serde(skip)]
    subject: String,
    #[serde(skip)]
    password_hash: String,
    #[serde(skip)]
    disabled: bool,
    #[serde(skip)]
    token_version: u64,
}

impl AuthUser for User {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn username(&self) -> &str {
        &self.username
    }

    fn password_hash(&self) -> Option<&str> {
        Some(&self.password_hash)
    }

    fn is_active(&self) -> bool {
        !self.disabled
    }

    fn allowed_scopes(&self) -> Scopes {
        self.scopes.clone()
    }

    fn token_version(&self) -> u64 {
        self.token_version
    }
}

// Every query of a user selects the columns `user_from_row` reads.
const USER_BY_ID: &str = "SELECT id, username, password_hash, scopes, disabled, token_version \
     FROM users WHERE id = ?";
const USER_BY_NAME: &str = "SELECT id, username, password_hash, scopes, disabled, token_version \
     FROM users WHERE username = ?";
const INSERT_USER: &str = "INSERT INTO users (username, password_hash, scopes) VALUES (?, ?, ?) \
     RETURNING id, username, password_hash, scopes, disabled, token_version";

fn user_from_row(row: &SqliteRow) -> Result<User, sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    let scopes: String = row.try_get("scopes")?;
    let token_version: i64 = row.try_get("token_version")?;
    Ok(User {
        id,
        subject: id.to_string(),
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        scopes: Scopes::parse(&scopes).map_err(|err| sqlx::Error::Decode(err.into()))?,
        disabled: row.try_get("disabled")?,
        token_version: u64::try_from(token_version)
            .map_err(|err| sqlx::Error::Decode(err.into()))?,
    })
}

fn shared_user(row: Option<SqliteRow>) -> Result<Option<Arc<User>>, sqlx::Error> {
    row.as_ref()
        .map(user_from_row)
        .transpose()
        .map(|user| user.map(Arc::new))
}

/// The users table, as the crate's [`UserStore`]. Its errors are
/// `sqlx::Error`s: the crate logs them and answers 503.
#[derive(Clone)]
struct Users {
    pool: SqlitePool,
}

impl UserStore for Users {
    type User = User;
    type Error = sqlx::Error;

    async fn find_by_subject(&self, sub: &str) -> Result<Option<Arc<User>>, sqlx::Error> {
        // Only `sub`s this app wrote name a row: the id in its canonical
        // spelling ("7", never "07" or "+7", which SQLite would take as 7).
        let id = match sub.parse::<i64>() {
            Ok(id) if id.to_string() == sub => id,
            _ => return Ok(None),
        };
        let row = sqlx::query(USER_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        shared_user(row)
    }

    async fn find_by_username(&self, username: &str) -> Result<Option<Arc<User>>, sqlx::Error> {
        let row = sqlx::query(USER_BY_NAME)
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        shared_user(row)
    }

    /// Compare-and-set: the new hash replaces the one that was verified, or
    /// nothing (a password changed since is never reverted).
    async fn update_password_hash(
        &self,
        user: &User,
        new_hash: String,
    ) -> Result<PasswordUpdate, sqlx::Error> {
        let updated =
            sqlx::query("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?")
                .bind(new_hash)
                .bind(user.id)
                .bind(&user.password_hash)
                .execute(&self.pool)
                .await?;
        Ok(match updated.rows_affected() {
            1 => PasswordUpdate::Updated,
            _ => PasswordUpdate::Stale,
        })
    }
}

/// The app's state: the database and the authenticator.
#[derive(Clone)]
struct App {
    auth: Authenticator<User>,
    users: Users,
}

// The extractors (`Authenticated`, `Scoped`) and `token_endpoint` take the
// authenticator from the router's state; this says where it is in `App`.
impl FromRef<App> for Authenticator<User> {
    fn from_ref(app: &App) -> Self {
        app.auth.clone()
    }
}

/// A handler's refusal.
enum AppError {
    /// The database failed: logged, answered like the crate answers a
    /// failing user store (503 `temporarily_unavailable`, `Retry-After`).
    Database(sqlx::Error),
    /// A response the crate made (a refused login, a busy hasher).
    Auth(Response),
    BadRequest(&'static str),
    Conflict(&'static str),
    NotFound,
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        AppError::Database(err)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            AppError::Database(err) => {
                tracing::error!(error = %err, "database failed");
                let body = json!({
                    "error": "temporarily_unavailable",
                    "error_description": "the database is unavailable; try again shortly",
                });
                let retry_after = USER_STORE_RETRY_AFTER.as_secs().to_string();
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(RETRY_AFTER, retry_after)],
                    Json(body),
                )
                    .into_response();
            }
            AppError::Auth(response) => return response,
            AppError::BadRequest(what) => (StatusCode::BAD_REQUEST, "invalid_request", what),
            AppError::Conflict(what) => (StatusCode::CONFLICT, "conflict", what),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such user"),
        };
        let body = json!({ "error": error, "error_description": description });
        (status, Json(body)).into_response()
    }
}

#[derive(Deserialize)]
struct Signup {
    username: String,
    password: String,
}

fn is_valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Hashes `password` off the async workers, as the crate's hasher always
/// does (and refuses more at once than it can take: 503).
async fn hash_password(auth: &Authenticator<User>, password: &str) -> Result<String, AppError> {
    match auth.passwords().hash(password).await {
        Ok(hash) => Ok(hash),
        Err(PasswordError::TooLong) => Err(AppError::BadRequest("the password is too long")),
        Err(err) => Err(AppError::Auth(
            auth.error_response(&AuthError::from(err)).into_response(),
        )),
    }
}

/// Creates the user and answers with the token a login would give.
async fn signup(State(app): State<App>, Json(form): Json<Signup>) -> Result<Response, AppError> {
    if !is_valid_username(&form.username) {
        return Err(AppError::BadRequest(
            "the username must be 1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    if form.password.chars().count() < 8 {
        return Err(AppError::BadRequest(
            "the password must be at least 8 characters",
        ));
    }
    let hash = hash_password(&app.auth, &form.password).await?;
    let inserted = sqlx::query(INSERT_USER)
        .bind(&form.username)
        .bind(&hash)
        .bind(USER_SCOPES)
        .fetch_one(&app.users.pool)
        .await;
    let row = match inserted {
        Ok(row) => row,
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
            return Err(AppError::Conflict("this username is taken"));
        }
        Err(err) => return Err(err.into()),
    };
    let user = user_from_row(&row)?;
    tracing::info!(sub = ?user.subject, "signed up");
    // Logged in at once, with the scopes a login asking for none gets.
    let tokens = app
        .auth
        .issue_tokens(&user, None)
        .await
        .map_err(|err| AppError::Auth(app.auth.error_response(&err).into_response()))?;
    let mut response = tokens.into_response().into_response();
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

async fn me(me: Authenticated<User>) -> Json<User> {
    Json(User::clone(&me.user))
}

#[derive(Serialize)]
struct Note {
    id: i64,
    body: String,
}

async fn read_notes(
    State(app): State<App>,
    me: Scoped<ReadNotes, User>,
) -> Result<Json<Vec<Note>>, AppError> {
    let rows = sqlx::query("SELECT id, body FROM notes WHERE user_id = ? ORDER BY id")
        .bind(me.user.id)
        .fetch_all(&app.users.pool)
        .await?;
    let notes = rows
        .iter()
        .map(|row| {
            Ok(Note {
                id: row.try_get("id")?,
                body: row.try_get("body")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(notes))
}

#[derive(Deserialize)]
struct NewNote {
    body: String,
}

async fn write_note(
    State(app): State<App>,
    me: Scoped<WriteNotes, User>,
    Json(note): Json<NewNote>,
) -> Result<(StatusCode, Json<Note>), AppError> {
    if note.body.len() > MAX_NOTE_LEN {
        return Err(AppError::BadRequest("a note holds at most 10000 bytes"));
    }
    let id: i64 = sqlx::query("INSERT INTO notes (user_id, body) VALUES (?, ?) RETURNING id")
        .bind(me.user.id)
        .bind(&note.body)
        .fetch_one(&app.users.pool)
        .await?
        .try_get("id")?;
    Ok((
        StatusCode::CREATED,
        Json(Note {
            id,
            body: note.body,
        }),
    ))
}

/// Every token issued to the caller so far stops working. `Renewal::Skip`:
/// a response that revokes renews nothing.
async fn logout_everywhere(
    State(app): State<App>,
    me: Authenticated<User>,
) -> Result<(Renewal, StatusCode), AppError> {
    sqlx::query("UPDATE users SET token_version = token_version + 1 WHERE id = ?")
        .bind(me.user.id)
        .execute(&app.users.pool)
        .await?;
    tracing::info!(sub = ?me.user.subject, "logged out everywhere");
    Ok((Renewal::Skip, StatusCode::NO_CONTENT))
}

/// Disables a user. Their token version is raised too, so that enabling
/// them again (by hand, in the table) does not bring old tokens back.
async fn disable_user(
    State(app): State<App>,
    admin: Scoped<Admin, User>,
    Path(username): Path<String>,
) -> Result<StatusCode, AppError> {
    let updated = sqlx::query(
        "UPDATE users SET disabled = 1, token_version = token_version + 1 WHERE username = ?",
    )
    .bind(&username)
    .execute(&app.users.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    tracing::info!(admin = ?admin.user.subject, "user disabled");
    Ok(StatusCode::NO_CONTENT)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

fn app(state: App) -> Router {
    Router::new()
        .route("/signup", post(signup))
        .route("/token", post(token_endpoint::<User, ()>))
        .route("/me", get(me))
        .route("/notes", get(read_notes).post(write_note))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/admin/users/{username}/disable", post(disable_user))
        .route("/health", get(health))
        .with_state(state)
}

/// Opens (creating it if needed) the database at `path` and applies the
/// migrations it has not run yet.
async fn open_database(
    path: &std::path::Path,
    busy_timeout: Duration,
) -> Result<SqlitePool, Box<dyn Error>> {
    // SQLite's own journal mode (a rollback journal): a write locks readers
    // out for the length of its transaction, and a query waits up to
    // `busy_timeout` for a lock. With many writers, WAL
    // (`.journal_mode(SqliteJournalMode::Wal)`) lets reads go on during a
    // write.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(busy_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|err| format!("cannot open the database {}: {err}", path.display()))?;
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                description.into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
        .run(&pool)
        .await
        .map_err(|err| format!("migrating {}: {err}", path.display()))?;
    Ok(pool)
}

/// Creates the `admin` user from `ADMIN_PASSWORD`, unless one exists.
async fn create_admin(auth: &Authenticator<User>, pool: &SqlitePool) -> Result<(), Box<dyn Error>> {
    let Ok(password) = std::env::var("ADMIN_PASSWORD") else {
        return Ok(());
    };
    let hash = auth.passwords().hash(&password).await?;
    let created = sqlx::query(
        "INSERT INTO users (username, password_hash, scopes) VALUES ('admin', ?, ?)
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(hash)
    .bind(ADMIN_SCOPES)
    .execute(pool)
    .await?;
    if created.rows_affected() == 0 {
        tracing::info!("a user named admin exists: ADMIN_PASSWORD is not applied");
    }
    Ok(())
}

/// `DATABASE_PATH`, or `tower-auth-notes.sqlite3` in the temporary
/// directory.
fn database_path() -> PathBuf {
    std::env::var_os("DATABASE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tower-auth-notes.sqlite3"))
}

/// `DB_BUSY_TIMEOUT_MS`: 0 to 600000, default 5000.
fn busy_timeout() -> Result<Duration, String> {
    let Ok(value) = std::env::var("DB_BUSY_TIMEOUT_MS") else {
        return Ok(Duration::from_secs(5));
    };
    match value.parse::<u64>() {
        Ok(ms) if ms <= 600_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "DB_BUSY_TIMEOUT_MS must be a whole number of milliseconds from 0 to 600000, not {value:?}"
        )),
    }
}

/// `JWT_SECRET`, or a random secret (with a warning) when it is unset.
fn jwt_secret() -> Result<Vec<u8>, Box<dyn Error>> {
    match std::env::var("JWT_SECRET") {
        Ok(secret) => Ok(secret.into_bytes()),
        Err(std::env::VarError::NotPresent) => {
            tracing::warn!(
                "JWT_SECRET is not set: using a random secret, so tokens stop working \
                 when this process exits (make one with \
                 `cargo run --example hash_password -- --secret`)"
            );
            let mut secret = vec![0; 32];
            getrandom::fill(&mut secret)
                .map_err(|err| format!("no randomness for a JWT secret: {err}"))?;
            Ok(secret)
        }
        Err(std::env::VarError::NotUnicode(_)) => Err("JWT_SECRET is not valid UTF-8".into()),
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let secret = jwt_secret()?;
    let key = Key::hs256(&secret).map_err(|err| format!("JWT_SECRET: {err}"))?;
    let codec = TokenCodec::builder(key).build()?;
    let path = database_path();
    let pool = open_database(&path, busy_timeout()?).await?;
    tracing::info!(path = %path.display(), "database ready");
    let users = Users { pool };
    let auth = Authenticator::builder(users.clone(), codec)
        .realm("sqlite_notes")
        .build()?;
    create_admin(&auth, &users.pool).await?;
    let limits = serve::ServerLimits::from_env()?;

    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    print_usage(&base)?;

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // `ConnectInfo(peer)` on every request: the token endpoint throttles
    // failed logins by the client's address.
    serve::serve(
        listener,
        limits,
        app(App { auth, users }),
        ConnectInfo,
        shutdown,
    )
    .await;
    Ok(())
}

/// The first line is what scripts and tests wait for; the rest is for people.
fn print_usage(base: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {base}")?;
    writeln!(out, "try:")?;
    writeln!(
        out,
        r#"  TOKEN=$(curl -s -H 'content-type: application/json' -d '{{"username":"ada","password":"correct horse"}}' {base}/signup | sed -E 's/.*"access_token":"([^"]+)".*/\1/')"#
    )?;
    writeln!(
        out,
        r#"  curl -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{{"body":"first note"}}' {base}/notes"#
    )?;
    writeln!(
        out,
        r#"  curl -H "Authorization: Bearer $TOKEN" {base}/notes"#
    )?;
    writeln!(out, r#"  curl -H "Authorization: Bearer $TOKEN" {base}/me"#)?;
    writeln!(
        out,
        "  curl -d 'username=ada&password=correct+horse&scope=notes:read' {base}/token   # a read-only token"
    )?;
    writeln!(
        out,
        r#"  curl -X POST -H "Authorization: Bearer $TOKEN" {base}/logout-everywhere"#
    )?;
    out.flush()
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr: stdout belongs to the lines above.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sqlite_notes: {err}");
            ExitCode::FAILURE
        }
    }
}
