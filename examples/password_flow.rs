//! FastAPI's "OAuth2 with Password (and hashing), Bearer with JWT tokens"
//! tutorial, with its scopes chapter, in axum.
//!
//! ```text
//! cargo run --example password_flow
//! ```
//!
//! Environment:
//! - `JWT_ALG`: the signing algorithm: `HS256` (the default), or `RS256`,
//!   `ES256`, `EdDSA` (and the other RSA/EC ones jsonwebtoken names) with a
//!   key pair from PEM files.
//! - `JWT_SECRET`: the HS256 signing secret, at least 32 bytes (make one with
//!   `cargo run --example hash_password -- --secret`). Unset: a random one,
//!   so tokens die with the process.
//! - `JWT_PRIVATE_KEY`, `JWT_PUBLIC_KEY`: with an asymmetric `JWT_ALG`, the
//!   paths of the PEM files of the key pair, e.g.
//!   `JWT_ALG=ES256 JWT_PRIVATE_KEY=tests/keys/ec256_private.pem
//!   JWT_PUBLIC_KEY=tests/keys/ec256_public.pem` (test keys: never in
//!   production). A missing file, a key of the wrong kind or a mismatched
//!   pair stops the server at startup.
//! - `BIND_ADDR`: where to listen (default `127.0.0.1:3000`; port 0 picks a
//!   free port).
//! - `ALLOWED_ORIGIN`: the browser origin CORS lets in (default
//!   `http://localhost:5173`, a Vite dev server).
//! - `TOKEN_LIFETIME_SECS`: the access-token lifetime in seconds (default
//!   1800), from 2 to 28800 (the absolute lifetime); anything else stops the
//!   server at startup. Short lifetimes are for trying renewal out (the
//!   browser tests use a few seconds).
//! - `REFRESH_GRACE_SECS`: how long after a refresh token was spent the
//!   same token gets the same successor again (two tabs refreshing at once,
//!   a retried request) instead of ending the session as reuse (default 5,
//!   0 to 60).
//! - `HEADER_READ_TIMEOUT_SECS`: a client that has not sent a request's
//!   whole header within this time is disconnected (default 10).
//! - `MAX_CONNECTIONS`: open connections at most; more wait to be accepted
//!   (default 1024).
//! - `REDIS_URL`: run as one of several instances sharing state through
//!   the Redis at this URL (`redis://127.0.0.1:6379`): refresh-token
//!   families, revoked sessions and the login throttle live there, so a
//!   logout on one instance is refused on all and a guess on one counts on
//!   all (needs `--features redis`:
//!   `cargo run --features redis --example password_flow`). Unset: in this
//!   process's memory. Give every instance the same `JWT_SECRET`.
//! - `REDIS_PREFIX`: the key prefix on that Redis (default `tower-auth`).
//! - `RUST_LOG`: log filter (default `info`).
//!
//! It serves with hyper's connection builder (`examples/support/serve.rs`)
//! rather than `axum::serve`, which has no header read timeout; each request
//! still carries axum's `ConnectInfo<SocketAddr>`.
//!
//! Sliding expiry: access tokens live 30 minutes; a request in a token's
//! second half (its last 15 minutes) gets a renewed one in the
//! `x-refreshed-token` response header (exposed to page scripts through
//! CORS), for at most 8 hours after login.
//!
//! Sessions: a login also returns a `refresh_token`; `POST /token` with
//! `grant_type=refresh_token` spends it for a new access token and a new
//! refresh token (presenting a spent one again ends the session); `POST
//! /logout` with the bearer token revokes the session (204): its tokens are
//! refused from the next request on, the user's other sessions live on.
//!
//! Failed logins are throttled (the library's default): 5 per username and
//! client address, 20 per username, 100 per address, per 15 minutes; past
//! them `POST /token` answers 429 with `Retry-After`.
//!
//! Users: `johndoe` / `secret` (scopes `me items`) and `alice` / `secretalice`
//! (disabled: her logins are refused). johndoe's stored hash is the
//! tutorial's (argon2id `m=65536,t=3,p=4`); his first login rehashes it with
//! the current parameters (the log says `password rehashed`).
//!
//! As in the tutorial, a login is granted the scopes it asks for (those the
//! user holds) and none when it asks for none
//! (`DefaultScopes::None`): log in with `scope=me items` to read
//! `/users/me/items/`; a token without `me` gets 403 `insufficient_scope`
//! from `/users/me/`, and any token reads `/status/`. The tutorial's paths
//! end in a slash; each is also served without it (see [`app`]).
//! `tests/fastapi_tutorial.rs` runs FastAPI's own tests of the tutorial
//! against this program.

use std::error::Error;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_auth::axum::{Scoped, logout, token_endpoint};
use tower_auth::scope::DefaultScopes;
use tower_auth::session::RefreshTokens;
use tower_auth::{
    Algorithm, AuthLayer, AuthUser, Authenticated, Authenticator, AuthenticatorBuilder, Key,
    MemoryUserStore, PasswordHasher, Scopes, SlidingExpiry, TokenCodec,
};
use tower_http::cors::CorsLayer;
use tracing_subscriber::EnvFilter;

#[path = "support/serve.rs"]
mod serve;

/// The app's own user: what `/users/me` shows, plus the stored hash and the
/// scopes login may grant, which it does not show (FastAPI's `UserInDB`).
#[derive(Clone, Serialize)]
struct User {
    username: String,
    email: String,
    full_name: String,
    disabled: bool,
    #[serde(skip)]
    hashed_password: String,
    #[serde(skip)]
    scopes: Scopes,
}

impl AuthUser for User {
    // The username is the token's `sub`. A real app would use a stable id,
    // so that renaming a user does not orphan their tokens.
    fn subject(&self) -> &str {
        &self.username
    }

    fn password_hash(&self) -> Option<&str> {
        Some(&self.hashed_password)
    }

    fn is_active(&self) -> bool {
        !self.disabled
    }

    fn allowed_scopes(&self) -> Scopes {
        self.scopes.clone()
    }

    // Lets `MemoryUserStore` keep the hash a login makes with the current
    // argon2 parameters: johndoe's tutorial hash is upgraded on his first
    // login (logged as `password rehashed`).
    fn with_password_hash(&self, phc: String) -> Option<Self> {
        Some(User {
            hashed_password: phc,
            ..self.clone()
        })
    }
}

tower_auth::scope_requirement! {
    /// FastAPI's `Security(get_current_active_user, scopes=["me"])`.
    ReadMe: "me";
    /// FastAPI's `Security(get_current_active_user, scopes=["me", "items"])`.
    ReadItems: "me", "items";
}

#[derive(Serialize)]
struct Item {
    item_id: &'static str,
    owner: String,
}

async fn read_users_me(me: Scoped<ReadMe, User>) -> Json<User> {
    Json(User::clone(&me.identity.user))
}

async fn read_own_items(me: Scoped<ReadItems, User>) -> Json<Vec<Item>> {
    Json(vec![Item {
        item_id: "Foo",
        owner: me.identity.user.username.clone(),
    }])
}

/// The body of `/status` and `/health`.
#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// Any valid token will do: no scope is required.
async fn read_system_status(_: Authenticated<User>) -> Json<Status> {
    Json(Status { status: "ok" })
}

/// `/status` without a token, for probes. The two answers are the same, so
/// that the HTTP load bench, which compares them, measures authentication
/// alone.
async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The routes. Each route decides for itself whether it needs a token, and
/// which scopes, through its extractors. The optional [`AuthLayer`] lets
/// anonymous requests through to them, refuses bad tokens, and renews aging
/// ones on the way out; CORS, outside it, answers browsers' preflights.
///
/// The tutorial's paths end in a slash (`/users/me/`); each is served under
/// both spellings. FastAPI answers the other spelling with a 307 redirect
/// instead, which curl does not follow without `-L`, costs a bearer client
/// a round trip, and makes some clients drop the `Authorization` header.
fn app(auth: Authenticator<User>, cors: CorsLayer) -> Router {
    Router::new()
        .route("/token", post(token_endpoint::<User, ()>))
        .route("/logout", post(logout::<User, ()>))
        .route("/users/me/", get(read_users_me))
        .route("/users/me", get(read_users_me))
        .route("/users/me/items/", get(read_own_items))
        .route("/users/me/items", get(read_own_items))
        .route("/status/", get(read_system_status))
        .route("/status", get(read_system_status))
        .route("/health", get(health))
        .layer(AuthLayer::optional(auth.clone()))
        .layer(cors)
        .with_state(auth)
}

/// Lets the page at `ALLOWED_ORIGIN` send bearer tokens and read renewed ones.
fn cors(auth: &Authenticator<User>) -> Result<CorsLayer, Box<dyn Error>> {
    let origin = std::env::var("ALLOWED_ORIGIN").unwrap_or_else(|_| "http://localhost:5173".into());
    let origin = HeaderValue::from_str(&origin)
        .map_err(|_| format!("ALLOWED_ORIGIN {origin:?} is not a header value"))?;
    let refreshed = auth
        .sliding_expiry_policy()
        .and_then(|policy| policy.header_name())
        .cloned();
    Ok(CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([AUTHORIZATION, CONTENT_TYPE])
        // Without this, the header shows in the network tab but a script's
        // `response.headers.get("x-refreshed-token")` is null.
        .expose_headers(refreshed.into_iter().collect::<Vec<_>>()))
}

/// The tutorial's fake database.
async fn users(passwords: &PasswordHasher) -> Result<MemoryUserStore<User>, Box<dyn Error>> {
    let users = MemoryUserStore::new();
    users.insert(User {
        username: "johndoe".into(),
        email: "johndoe@example.com".into(),
        full_name: "John Doe".into(),
        disabled: false,
        // The tutorial's hash of "secret", made by pwdlib with other argon2
        // parameters than ours: any valid argon2 PHC string verifies.
        hashed_password: "$argon2id$v=19$m=65536,t=3,p=4$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc".into(),
        scopes: Scopes::parse("me items")?,
    });
    users.insert(User {
        username: "alice".into(),
        email: "alice@example.com".into(),
        full_name: "Alice Wonderson".into(),
        disabled: true,
        // Hashing runs on a blocking thread, never on the async workers.
        hashed_password: passwords.hash("secretalice").await?,
        scopes: Scopes::parse("me items")?,
    });
    Ok(users)
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

/// The signing key `JWT_ALG` asks for: HS256 from `JWT_SECRET`, or a key
/// pair from the PEM files `JWT_PRIVATE_KEY` and `JWT_PUBLIC_KEY`.
fn signing_key() -> Result<Key, Box<dyn Error>> {
    let alg = match std::env::var("JWT_ALG") {
        Ok(alg) => alg,
        Err(std::env::VarError::NotPresent) => "HS256".to_owned(),
        Err(std::env::VarError::NotUnicode(_)) => return Err("JWT_ALG is not valid UTF-8".into()),
    };
    let algorithm: Algorithm = alg.parse().map_err(|_| {
        format!(
            "JWT_ALG={alg:?} is not an algorithm: use HS256 (the default), RS256, ES256 or EdDSA"
        )
    })?;
    if algorithm == Algorithm::HS256 {
        let secret = jwt_secret()?;
        // Too short a secret is refused here, at startup, never on a request.
        return Ok(Key::hs256(&secret).map_err(|err| {
            format!(
                "JWT_SECRET: {err} (it has {} bytes); make one with \
                 `cargo run --example hash_password -- --secret`",
                secret.len()
            )
        })?);
    }
    if matches!(algorithm, Algorithm::HS384 | Algorithm::HS512) {
        return Err(format!(
            "JWT_ALG={alg}: only HS256 signs with JWT_SECRET here; use HS256, RS256, ES256 or EdDSA"
        )
        .into());
    }
    if std::env::var_os("JWT_SECRET").is_some() {
        tracing::warn!("JWT_ALG={alg} signs with JWT_PRIVATE_KEY: JWT_SECRET is ignored");
    }
    let private = read_pem(&alg, "JWT_PRIVATE_KEY")?;
    let public = read_pem(&alg, "JWT_PUBLIC_KEY")?;
    Ok(Key::from_pem(algorithm, &private, &public)
        .map_err(|err| format!("JWT_PRIVATE_KEY / JWT_PUBLIC_KEY: {err}"))?)
}

/// The contents of the PEM file whose path is in the variable `var`.
fn read_pem(alg: &str, var: &str) -> Result<Vec<u8>, String> {
    let path = std::env::var_os(var)
        .ok_or_else(|| format!("JWT_ALG={alg} needs {var}: the path of a PEM file"))?;
    std::fs::read(&path).map_err(|err| format!("{var}={}: {err}", path.display()))
}

/// Nobody stays signed in longer than this after logging in.
const ABSOLUTE_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// `TOKEN_LIFETIME_SECS`: 2 seconds (a token with a second half to renew
/// in) up to [`ABSOLUTE_LIFETIME`]; 30 minutes when unset.
fn token_lifetime() -> Result<Duration, Box<dyn Error>> {
    let value = match std::env::var("TOKEN_LIFETIME_SECS") {
        Ok(value) => value,
        Err(std::env::VarError::NotPresent) => return Ok(Duration::from_secs(30 * 60)),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("TOKEN_LIFETIME_SECS is not valid UTF-8".into());
        }
    };
    match value.parse::<u64>() {
        Ok(secs) if (2..=ABSOLUTE_LIFETIME.as_secs()).contains(&secs) => {
            Ok(Duration::from_secs(secs))
        }
        _ => Err(format!(
            "TOKEN_LIFETIME_SECS must be a whole number of seconds from 2 to {} \
             (the absolute lifetime), not {value:?}",
            ABSOLUTE_LIFETIME.as_secs()
        )
        .into()),
    }
}

/// `REFRESH_GRACE_SECS`: 0 to 60 seconds; 5 when unset.
fn refresh_grace() -> Result<Duration, Box<dyn Error>> {
    match std::env::var("REFRESH_GRACE_SECS") {
        Err(std::env::VarError::NotPresent) => Ok(Duration::from_secs(5)),
        Ok(value) => match value.parse::<u64>() {
            Ok(secs) if secs <= 60 => Ok(Duration::from_secs(secs)),
            _ => Err(format!(
                "REFRESH_GRACE_SECS must be a whole number of seconds from 0 to 60, not {value:?}"
            )
            .into()),
        },
        Err(std::env::VarError::NotUnicode(_)) => {
            Err("REFRESH_GRACE_SECS is not valid UTF-8".into())
        }
    }
}

/// `REDIS_URL` set: the builder with one `RedisStore` as its shared store
/// and behind its login throttle; unset: as it is (in memory). The URL may
/// hold a password: never logged.
#[cfg(feature = "redis")]
async fn shared_state(
    auth: AuthenticatorBuilder<User>,
) -> Result<AuthenticatorBuilder<User>, Box<dyn Error>> {
    let Some(url) = redis_url()? else {
        tracing::info!(store = %"memory", "sessions and login throttle kept in this process (set REDIS_URL to share them)");
        return Ok(auth);
    };
    let prefix = std::env::var("REDIS_PREFIX").unwrap_or_else(|_| "tower-auth".to_owned());
    let store = tower_auth::redis::RedisStore::builder(url)
        .prefix(prefix)
        .connect()
        .await
        .map_err(|err| format!("cannot connect to REDIS_URL: {err}"))?;
    tracing::info!(store = %"redis", "sessions and login throttle shared through Redis (REDIS_URL)");
    let throttle = tower_auth::LoginThrottle::builder()
        .shared(store.clone())
        .build()?;
    Ok(auth.shared_store(store).login_throttle(throttle))
}

/// Without the `redis` feature, `REDIS_URL` cannot be honoured: say how to
/// get it rather than run as a lone instance by surprise.
#[cfg(not(feature = "redis"))]
async fn shared_state(
    auth: AuthenticatorBuilder<User>,
) -> Result<AuthenticatorBuilder<User>, Box<dyn Error>> {
    if redis_url()?.is_some() {
        return Err("REDIS_URL is set, but this build has no Redis support: \
                    run `cargo run --features redis --example password_flow`"
            .into());
    }
    tracing::info!(store = %"memory", "sessions and login throttle kept in this process");
    Ok(auth)
}

/// `REDIS_URL`, if set (and not empty).
fn redis_url() -> Result<Option<String>, Box<dyn Error>> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Ok(Some(url)),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err("REDIS_URL is not valid UTF-8".into()),
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let lifetime = token_lifetime()?;
    let key = signing_key()?;
    // A private key that does not match its public key is refused here.
    let codec = TokenCodec::builder(key)
        .access_lifetime(lifetime)
        .build()
        .map_err(|err| format!("the JWT signing key: {err}"))?;
    let passwords = PasswordHasher::new();
    let builder = Authenticator::builder(users(&passwords).await?, codec)
        .passwords(passwords)
        .realm("password_flow")
        // As in the tutorial, a login grants exactly the scopes it asks for
        // (of those the user holds): none when it asks for none.
        .default_scopes(DefaultScopes::None)
        // Renewal past half-life, the default: for 30-minute tokens, in
        // their last 15 minutes.
        .sliding_expiry(SlidingExpiry::new(ABSOLUTE_LIFETIME))
        // A login also returns a refresh token.
        .refresh_tokens(RefreshTokens::new().grace(refresh_grace()?));
    // Families, revoked sessions and the login throttle: on Redis with
    // REDIS_URL (several instances), in memory without (one instance).
    let auth = shared_state(builder).await?.build()?;
    let cors = cors(&auth)?;
    let limits = serve::ServerLimits::from_env()?;

    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    print_usage(&base)?;

    // Ctrl-C stops accepting and lets requests in flight finish.
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // Each request carries `ConnectInfo(peer)`, as under `axum::serve` with
    // `into_make_service_with_connect_info::<SocketAddr>()`: the token
    // endpoint throttles failed logins by the client's address.
    serve::serve(listener, limits, app(auth, cors), ConnectInfo, shutdown).await;
    Ok(())
}

/// The first line is what scripts and tests wait for; the rest is for people.
fn print_usage(base: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {base}")?;
    writeln!(out, "try:")?;
    writeln!(
        out,
        r#"  TOKEN=$(curl -s -d 'username=johndoe&password=secret&scope=me+items' {base}/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')"#
    )?;
    for path in ["/users/me/", "/users/me/items/", "/status/"] {
        writeln!(
            out,
            r#"  curl -H "Authorization: Bearer $TOKEN" {base}{path}"#
        )?;
    }
    writeln!(
        out,
        "  # log in with scope=me and /users/me/items/ answers 403 insufficient_scope;"
    )?;
    writeln!(out, "  # with no scope at all, only /status/ answers 200")?;
    writeln!(
        out,
        r#"  REFRESH=$(curl -s -d 'username=johndoe&password=secret&scope=me+items' {base}/token | sed -E 's/.*"refresh_token":"([^"]+)".*/\1/')"#
    )?;
    writeln!(
        out,
        r#"  curl -d "grant_type=refresh_token&refresh_token=$REFRESH" {base}/token   # new tokens; $REFRESH is spent"#
    )?;
    writeln!(
        out,
        r#"  curl -X POST -H "Authorization: Bearer $TOKEN" {base}/logout   # 204: this session's tokens stop working"#
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
            eprintln!("password_flow: {err}");
            ExitCode::FAILURE
        }
    }
}
