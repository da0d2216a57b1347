//! Chat rooms over authenticated WebSockets: cookie sessions for browsers,
//! tokens in the query string, the `Authorization` header or the
//! subprotocol for everything else; per-room read/write permissions, per-user
//! socket caps, message rates and byte budgets, and sockets closed when their
//! token expires or when they fall behind the room.
//!
//! ```text
//! cargo run --example websocket_rooms
//! ```
//!
//! then open the printed address in a browser, or use the printed `curl` and
//! `websocat` lines.
//!
//! Users (passwords hashed with argon2id at startup):
//!
//! | user | password | rooms |
//! | --- | --- | --- |
//! | `full` | `full-pass` | read and write in every room (scopes `rooms:read rooms:write`) |
//! | `reader` | `reader-pass` | read only (`rooms:read`): messages refused with an error frame |
//! | `outsider` | `outsider-pass` | none: `GET /ws/{room}` answers 403 before the upgrade |
//!
//! A scope `room:NAME:read` / `room:NAME:write` grants one room only.
//!
//! Routes:
//! - `GET /`: a page to try it in a browser (login, room, message box).
//! - `POST /login` (form `username`, `password`): the session cookie, for
//!   browsers; the JSON body says `token_type`, `expires_in` and `scope` but
//!   holds no token (the cookie is `HttpOnly`: page scripts never see it).
//! - `POST /token` (the same form): JSON with `access_token`, for tools and
//!   apps that send the token themselves (header, `?token=`, subprotocol).
//! - `POST /logout`: clears the cookie.
//! - `POST /logout-everywhere` (bearer header or cookie): raises the user's
//!   token version, so every token issued to them so far stops working and
//!   their open sockets close with 4001 `token revoked` at the next check
//!   (204, marked `Renewal::Skip`: a response that revokes renews nothing).
//! - `GET /me` (bearer header or cookie): the user.
//! - `GET /ws/{room}`: the room's socket. Authenticated by the session
//!   cookie (browsers; `Origin` must be allowed), `?token=`, the bearer
//!   header, or the subprotocol pair `access_token, TOKEN` (the server
//!   answers with `access_token`, never the token). Refused before the
//!   upgrade: 401 (no or bad token), 403 (no read permission, foreign
//!   origin), 429 (a 6th socket of the same user). In the socket: writers'
//!   text messages go to everyone in the room as
//!   `{"room", "from", "text"}`; a reader's get `{"error": "read_only", …}`
//!   back and go nowhere; the 11th message within a minute closes the socket
//!   with 1008; the token's expiry closes it with 4001, and so does a
//!   revocation, found by re-checking the user every `RECHECK_SECS`; the
//!   same check applies a scope taken from the user (writing stops, and
//!   losing the room's read permission closes the socket with 1008).
//!
//! What one user may cost the server (see `tower_auth::ws`, "Bounding what
//! a user's sockets cost"):
//! - a frame or message over 64 KiB closes the socket with 1009, from the
//!   frame's header (its payload is never read);
//! - every frame (text, binary, ping, pong) is charged to the user's byte
//!   budget, shared by their sockets: its size plus 1 KiB, and a text sent
//!   to the room its size as sent (JSON: a control character takes six
//!   bytes). Spent: the socket closes with 1008;
//! - a room keeps the last 16 messages for its slowest socket; a socket that
//!   falls further behind, or does not take a message within 10 s, is closed
//!   with 1013 (reconnect, and read faster);
//! - at most 5 sockets per user (429 before the upgrade).
//!
//! Environment:
//! - `BIND_ADDR`: where to listen (default `127.0.0.1:3000`; port 0 picks a
//!   free port).
//! - `JWT_SECRET`: the HS256 secret, at least 32 bytes. Unset: a random one
//!   (with a warning), so tokens die with the process.
//! - `ALLOWED_ORIGIN`: a browser origin allowed to use the session cookie
//!   (default `http://localhost:5173`, a Vite dev server); the server's own
//!   origin (and, on a loopback address, `http://localhost:PORT`) is always
//!   allowed.
//! - `TOKEN_LIFETIME_SECS`: access-token lifetime (default 1800).
//! - `RECHECK_SECS`: how often an open socket re-checks its user (active,
//!   token version) (default 30, 1 to 3600).
//! - `MESSAGES_PER_MINUTE`: text messages one user may send per minute, over
//!   all their sockets (default 10).
//! - `BYTES_PER_MINUTE`: the byte budget of one user per minute, over all
//!   their sockets, spendable at once (default 1048576, 1 MiB).
//! - `HEADER_READ_TIMEOUT_SECS`: a client that has not sent a request's
//!   whole header within this time is disconnected (default 10).
//! - `MAX_CONNECTIONS`: open HTTP connections at most; more wait to be
//!   accepted (default 1024). Upgraded sockets are counted per user instead.
//! - `INSECURE_DEV_COOKIE=1`: for plain-HTTP development only. The session
//!   cookie is then called `session` instead of `__Host-session` and is sent
//!   without `Secure`. Without it the cookie is `Secure`, which browsers
//!   accept over plain HTTP only from `localhost`; use it when the page is
//!   served from another host name over HTTP.
//! - `REDIS_URL` (needs `--features redis`): share the sessions (a logout
//!   on one instance closes the session's sockets on all), the socket cap,
//!   the message rate and the byte budget with every other instance of the
//!   app through this Redis (`redis://host:port/db`), for several instances
//!   behind a load balancer. Give them the same `JWT_SECRET`. Unset: they
//!   live in this process.
//! - `REDIS_PREFIX`: the key prefix on that Redis (default `tower-auth`).
//! - `SOCKET_LEASE_MS`: with `REDIS_URL`, how long a socket's slot outlives
//!   an instance that died without closing it (default 30000; the lease is
//!   renewed every third of it).
//! - `RUST_LOG`: log filter (default `info`), logs on stderr.

use std::collections::HashMap;
use std::error::Error;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRef, Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::broadcast;
use tower_auth::axum::{logout, session_login, token_endpoint};
use tower_auth::limit::{ConnectionLimit, ConnectionPermit, LimitExceeded, RateLimit};
use tower_auth::ws::{self, CloseReason};
use tower_auth::{
    AuthError, Authenticated, Authenticator, AuthenticatorBuilder, Credentials, Key,
    MemoryUserStore, PasswordHasher, Renewal, Scopes, SessionCookie, SimpleUser, TokenCodec,
};
use tracing_subscriber::EnvFilter;

#[path = "support/serve.rs"]
mod serve;

/// The subprotocol marker: a browser offers `[SUBPROTOCOL, token]` and gets
/// `SUBPROTOCOL` back.
const SUBPROTOCOL: &str = "access_token";
/// Sockets one user may have open at once.
const MAX_SOCKETS_PER_USER: usize = 5;
/// The largest frame and message a client may send.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// What a message costs the byte budget on top of its size: reading a
/// frame and answering it is work even when it is empty.
const MESSAGE_COST: usize = 1024;
/// Messages a room keeps for its slowest socket; one further behind is
/// closed. Small: the room holds them for as long as that socket lags.
const ROOM_BACKLOG: usize = 16;
/// How long a client may take to accept one message before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a socket the server closes waits for the client's Close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

type User = SimpleUser;

#[derive(Clone)]
struct AppState {
    auth: Authenticator<User>,
    users: MemoryUserStore<User>,
    /// How often an open socket re-checks its identity.
    recheck_every: Duration,
    rooms: Rooms,
    sockets: ConnectionLimit,
    messages: RateLimit,
    /// Bytes per user (keyed by `sub`, over all their sockets).
    bytes: RateLimit,
}

impl FromRef<AppState> for Authenticator<User> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// One broadcast channel per room, made when the first socket joins and
/// dropped when the last one leaves (room names come from clients: kept
/// forever, they would pile up). Joining and leaving both hold the lock, so
/// a room is never dropped between a join and its subscription. A message
/// is one shared buffer (`Utf8Bytes`), however many sockets hold it.
#[derive(Clone, Default)]
struct Rooms(Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>);

impl Rooms {
    /// The room's channel, and this socket's receiver on it.
    fn join(&self, room: &str) -> (broadcast::Sender<Utf8Bytes>, broadcast::Receiver<Utf8Bytes>) {
        let mut rooms = self.lock();
        let channel = rooms
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(ROOM_BACKLOG).0);
        (channel.clone(), channel.subscribe())
    }

    /// Drops this socket's receiver, and the room with it if it was the last.
    fn leave(&self, room: &str, inbox: broadcast::Receiver<Utf8Bytes>) {
        let mut rooms = self.lock();
        drop(inbox);
        if rooms
            .get(room)
            .is_some_and(|channel| channel.receiver_count() == 0)
        {
            rooms.remove(room);
            tracing::info!(room = ?room, "room closed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Utf8Bytes>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `rooms:ACTION` (every room) or `room:ROOM:ACTION` (this one).
fn may(scopes: &Scopes, room: &str, action: &str) -> bool {
    scopes.contains(&format!("rooms:{action}")) || scopes.contains(&format!("room:{room}:{action}"))
}

/// Room names: 1 to 64 letters, digits, `-` or `_`.
fn valid_room(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn me(me: Authenticated<User>) -> Json<serde_json::Value> {
    Json(json!({ "username": me.user.username, "scope": me.claims.scope }))
}

/// Revokes every token of the caller: the next token version. The
/// response revokes, so it must not carry a renewed token: `Renewal::Skip`.
async fn logout_everywhere(
    State(state): State<AppState>,
    me: Authenticated<User>,
) -> (Renewal, axum::http::StatusCode) {
    state
        .users
        .update(&me.claims.sub, |user| user.token_version += 1);
    tracing::info!(sub = ?me.claims.sub, "logged out everywhere");
    (Renewal::Skip, axum::http::StatusCode::NO_CONTENT)
}

/// Everything is decided before the upgrade: the extractor authenticates
/// (401/400/403 origin), then the room permission (403) and the socket cap
/// (429); only then does the 101 go out and the socket task start.
/// (`WebSocketUpgrade`'s `Debug` prints the offered subprotocols, which may
/// hold a token: it is never logged here.)
async fn join_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    me: Authenticated<User>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !valid_room(&room) {
        return (axum::http::StatusCode::NOT_FOUND, "no such room").into_response();
    }
    if !may(&me.claims.scope, &room, "read") {
        // The room name is checked above, so this is a valid scope token.
        let required = Scopes::parse(&format!("room:{room}:read")).unwrap_or_default();
        let err = AuthError::InsufficientScope {
            missing: required.clone(),
            required,
        };
        tracing::info!(sub = ?me.claims.sub, room = ?room, "room refused: no read permission");
        return state.auth.error_response(&err).into_response();
    }
    let permit = match state.sockets.try_acquire(&me.claims.sub).await {
        Ok(permit) => permit,
        Err(err) => return state.auth.error_response(&err.into()).into_response(),
    };
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run_socket(socket, state, room, me, permit))
}

async fn run_socket(
    mut socket: WebSocket,
    state: AppState,
    room: String,
    me: Authenticated<User>,
    permit: ConnectionPermit,
) {
    let (channel, mut inbox) = state.rooms.join(&room);
    let mut can_write = may(&me.claims.scope, &room, "write");
    let mut expiry = ws::expires(&me.claims);
    let mut recheck = tokio::time::interval_at(
        tokio::time::Instant::now() + state.recheck_every,
        state.recheck_every,
    );
    let sub = me.claims.sub.as_str();
    // Charges a message of `size` bytes to the user's byte budget.
    let pay = async |size: usize| {
        state
            .bytes
            .check_n(sub, MESSAGE_COST + size)
            .await
            .map_err(CloseReason::for_budget)
    };
    tracing::info!(sub = ?sub, room = ?room, can_write, credential = ?me.credential, "joined");

    let close = loop {
        // Biased: the room before the client, so that a socket forwards what
        // it owes before it reads (and broadcasts) more.
        tokio::select! {
            biased;
            () = &mut expiry => break Some(CloseReason::TokenExpired),
            _ = recheck.tick() => match state.auth.recheck(&me).await {
                // The scopes in effect now: a permission taken from the
                // user applies to the open socket too.
                Ok(now) => {
                    if !may(&now.claims.scope, &room, "read") {
                        break Some(CloseReason::Forbidden);
                    }
                    can_write = may(&now.claims.scope, &room, "write");
                }
                Err(err) => match CloseReason::for_rejection(&err) {
                    Some(reason) => break Some(reason),
                    // The store failed: keep the socket, check again later.
                    None => tracing::warn!(sub = ?sub, room = ?room, error = %err, "socket recheck failed"),
                },
            },
            broadcast = inbox.recv() => match broadcast {
                Ok(text) => {
                    if let Err(close) = send(&mut socket, Message::Text(text)).await {
                        break close;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(sub = ?sub, room = ?room, missed, "socket fell behind the room");
                    break Some(CloseReason::FellBehind);
                }
                Err(broadcast::error::RecvError::Closed) => break None,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(err)) => break over_the_cap(err).then_some(CloseReason::MessageTooBig),
                // Binary frames are ignored and pings answered by axum, but
                // every frame is paid for.
                Some(Ok(Message::Binary(data) | Message::Ping(data) | Message::Pong(data))) => {
                    if let Err(close) = pay(data.len()).await {
                        break Some(close);
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    match state.messages.check(sub).await {
                        Ok(()) => {}
                        // Shared limits whose store failed: fail closed.
                        Err(LimitExceeded::StoreUnavailable) => break Some(CloseReason::StoreUnavailable),
                        Err(_) => break Some(CloseReason::RateLimited),
                    }
                    if !can_write {
                        if let Err(close) = pay(text.len()).await {
                            break Some(close);
                        }
                        let refusal = json!({
                            "error": "read_only",
                            "error_description": "you may read this room but not write to it",
                        });
                        if let Err(close) = send(&mut socket, Message::Text(refusal.to_string().into())).await {
                            break close;
                        }
                        continue;
                    }
                    let message = json!({ "room": room, "from": me.user.username, "text": text.as_str() }).to_string();
                    // Paid at the size the room holds and sends, not the
                    // size received: JSON escapes a control character as 6 bytes.
                    if let Err(close) = pay(message.len()).await {
                        break Some(close);
                    }
                    // No receiver (cannot happen: we subscribed) is not an error.
                    let _ = channel.send(message.into());
                }
            },
        }
    };
    // The slot is free before the client can learn that the socket closed,
    // so it may reconnect at once.
    drop(permit);
    state.rooms.leave(&room, inbox);
    let frame = close.map(|reason| {
        tracing::info!(
            sub = ?sub,
            room = ?room,
            code = reason.code(),
            reason = reason.reason(),
            "closing socket"
        );
        CloseFrame {
            code: reason.code(),
            reason: reason.reason().into(),
        }
    });
    if frame.is_none() {
        tracing::info!(sub = ?sub, room = ?room, "left");
    }
    let server_closes = frame.is_some();
    // Our Close frame, or the reply to the client's; a client that reads
    // nothing does not keep the task.
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(frame))).await;
    if server_closes {
        // The closing handshake (RFC 6455 §7.1.1): wait a moment for the
        // client's Close, discarding what it still had in flight. Dropping
        // the connection with unread data makes the kernel reset it, and a
        // reset can destroy our Close frame before the client reads it.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(message)) = socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Sends `message`, or the reason to stop: `None` when the socket is gone,
/// [`CloseReason::FellBehind`] when the client has not taken it within
/// [`SEND_TIMEOUT`] (it stopped reading).
async fn send(socket: &mut WebSocket, message: Message) -> Result<(), Option<CloseReason>> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(CloseReason::FellBehind)),
    }
}

/// Whether a read failed because a frame or message was over
/// `max_frame_size` / `max_message_size` (tungstenite's capacity error).
fn over_the_cap(err: axum::Error) -> bool {
    matches!(
        err.into_inner().downcast_ref(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

async fn index() -> Html<&'static str> {
    Html(PAGE)
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", post(session_login::<User, ()>))
        .route("/token", post(token_endpoint::<User, ()>))
        .route("/logout", post(logout::<User, ()>))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/me", get(me))
        .route("/ws/{room}", get(join_room))
        .with_state(state)
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

fn env_or(name: &str, default: &str) -> Result<String, Box<dyn Error>> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8").into()),
    }
}

async fn users(passwords: &PasswordHasher) -> Result<MemoryUserStore<User>, Box<dyn Error>> {
    let store = MemoryUserStore::new();
    for (name, password, scopes) in [
        ("full", "full-pass", "rooms:read rooms:write"),
        ("reader", "reader-pass", "rooms:read"),
        ("outsider", "outsider-pass", ""),
    ] {
        let hash = passwords.hash(password).await?;
        store.insert(SimpleUser::new(name, hash).with_scopes(Scopes::parse(scopes)?));
    }
    Ok(store)
}

/// The session cookie: `__Host-session`, `Secure`, unless
/// `INSECURE_DEV_COOKIE=1` asks for plain-HTTP development mode.
fn session_cookie() -> Result<SessionCookie, Box<dyn Error>> {
    match env_or("INSECURE_DEV_COOKIE", "")?.as_str() {
        "" | "0" => Ok(SessionCookie::new("__Host-session")),
        "1" => {
            tracing::warn!(
                "INSECURE_DEV_COOKIE=1: the session cookie `session` is sent without Secure \
                 (plain-HTTP development only)"
            );
            Ok(SessionCookie::new("session").secure(false))
        }
        other => Err(format!("INSECURE_DEV_COOKIE must be 1 or unset, not {other:?}").into()),
    }
}

/// `ALLOWED_ORIGIN`, the server's own origin, and `http://localhost:PORT`
/// when listening on a loopback address.
fn allowed_origins(addr: SocketAddr) -> Result<Vec<String>, Box<dyn Error>> {
    let mut origins = vec![
        env_or("ALLOWED_ORIGIN", "http://localhost:5173")?,
        format!("http://{addr}"),
    ];
    if addr.ip().is_loopback() {
        origins.push(format!("http://localhost:{}", addr.port()));
    }
    Ok(origins)
}

/// A user's socket cap, message rate and byte budget.
struct UserLimits {
    sockets: ConnectionLimit,
    messages: RateLimit,
    bytes: RateLimit,
}

/// With `REDIS_URL` set, one `RedisStore` shared by every instance of the
/// app holds the sessions (a logout on one instance closes the session's
/// sockets on all) and the per-user limits (a user's 6th socket is refused
/// whichever instance it reaches); unset, both live in this process.
#[cfg(feature = "redis")]
async fn shared_state(
    auth: AuthenticatorBuilder<User>,
    limits: UserLimits,
) -> Result<(AuthenticatorBuilder<User>, UserLimits), Box<dyn Error>> {
    use tower_auth::redis::RedisStore;
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok((auth, limits));
    };
    let lease_ms: u64 = env_or("SOCKET_LEASE_MS", "30000")?
        .parse()
        .map_err(|_| "SOCKET_LEASE_MS must be a number of milliseconds")?;
    // The URL may hold a password: it is never printed.
    let store = RedisStore::builder(url)
        .prefix(env_or("REDIS_PREFIX", "tower-auth")?)
        .connect()
        .await
        .map_err(|err| format!("cannot connect to the Redis at REDIS_URL: {err}"))?;
    tracing::info!("sessions and per-user limits shared through Redis");
    let limits = UserLimits {
        sockets: limits
            .sockets
            .shared(store.clone(), "sockets")?
            .lease(Duration::from_millis(lease_ms))?,
        messages: limits.messages.shared(store.clone(), "messages")?,
        bytes: limits.bytes.shared(store.clone(), "bytes")?,
    };
    Ok((auth.shared_store(store), limits))
}

#[cfg(not(feature = "redis"))]
async fn shared_state(
    auth: AuthenticatorBuilder<User>,
    limits: UserLimits,
) -> Result<(AuthenticatorBuilder<User>, UserLimits), Box<dyn Error>> {
    if std::env::var_os("REDIS_URL").is_some() {
        return Err("REDIS_URL is set, but this build has no Redis support: \
                    run it with `cargo run --example websocket_rooms --features redis`"
            .into());
    }
    Ok((auth, limits))
}

async fn run() -> Result<(), Box<dyn Error>> {
    let secret = jwt_secret()?;
    let key = Key::hs256(&secret)
        .map_err(|err| format!("JWT_SECRET: {err} (it has {} bytes)", secret.len()))?;
    let lifetime: u64 = env_or("TOKEN_LIFETIME_SECS", "1800")?
        .parse()
        .map_err(|_| "TOKEN_LIFETIME_SECS must be a number of seconds")?;
    let codec = TokenCodec::builder(key)
        .access_lifetime(Duration::from_secs(lifetime))
        .build()?;
    let credentials = Credentials::bearer()
        .session_cookie(session_cookie()?)
        .query("token")
        .subprotocol(SUBPROTOCOL);

    let bind = env_or("BIND_ADDR", "127.0.0.1:3000")?;
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
    let addr = listener.local_addr()?;

    let recheck_secs: u64 = env_or("RECHECK_SECS", "30")?
        .parse()
        .ok()
        .filter(|secs| (1..=3600).contains(secs))
        .ok_or("RECHECK_SECS must be a number of seconds from 1 to 3600")?;

    let messages_per_minute: u32 = env_or("MESSAGES_PER_MINUTE", "10")?
        .parse()
        .ok()
        .filter(|count| *count > 0)
        .ok_or("MESSAGES_PER_MINUTE must be a whole number above 0")?;
    let bytes_per_minute: u32 = env_or("BYTES_PER_MINUTE", "1048576")?
        .parse()
        .ok()
        .filter(|bytes| *bytes > 0)
        .ok_or("BYTES_PER_MINUTE must be a whole number from 1 to 4294967295")?;
    let server_limits = serve::ServerLimits::from_env()?;

    let limits = UserLimits {
        sockets: ConnectionLimit::new(MAX_SOCKETS_PER_USER)?,
        messages: RateLimit::per_minute(messages_per_minute)?,
        bytes: RateLimit::per_minute(bytes_per_minute)?,
    };

    let passwords = PasswordHasher::new();
    let users = users(&passwords).await?;
    let auth = Authenticator::builder(users.clone(), codec)
        .passwords(passwords)
        .realm("websocket_rooms")
        .credentials(credentials)
        .allowed_origins(allowed_origins(addr)?);
    let (auth, limits) = shared_state(auth, limits).await?;
    let auth = auth.build()?;
    let state = AppState {
        auth,
        users,
        recheck_every: Duration::from_secs(recheck_secs),
        rooms: Rooms::default(),
        sockets: limits.sockets,
        messages: limits.messages,
        bytes: limits.bytes,
    };
    let (messages, bytes) = (state.messages.clone(), state.bytes.clone());
    tokio::spawn(async move {
        // Forget users whose allowances are full again.
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            messages.retain_recent();
            bytes.retain_recent();
        }
    });

    print_usage(addr)?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // `ConnectInfo(peer)` on each request: the session login throttles
    // failed logins by the client's address.
    serve::serve(
        listener,
        server_limits,
        app(state),
        axum::extract::ConnectInfo,
        shutdown,
    )
    .await;
    Ok(())
}

/// The first line is what scripts and tests wait for; the rest is for people.
fn print_usage(addr: SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}")?;
    writeln!(out, "open http://{addr}/ in a browser, or try:")?;
    writeln!(
        out,
        r#"  TOKEN=$(curl -s -d 'username=full&password=full-pass' http://{addr}/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')"#
    )?;
    writeln!(
        out,
        r#"  curl -H "Authorization: Bearer $TOKEN" http://{addr}/me"#
    )?;
    writeln!(out, r#"  websocat "ws://{addr}/ws/lobby?token=$TOKEN""#)?;
    writeln!(
        out,
        r#"  websocat -H "Authorization: Bearer $TOKEN" ws://{addr}/ws/lobby"#
    )?;
    writeln!(
        out,
        r#"  websocat --protocol "{SUBPROTOCOL}, $TOKEN" ws://{addr}/ws/lobby"#
    )?;
    writeln!(
        out,
        "  # reader / reader-pass may only read; outsider / outsider-pass gets 403"
    )?;
    out.flush()
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("websocket_rooms: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The browser page: logs in with the form (the session cookie is set by
/// the response), then connects to a room with that cookie.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>websocket_rooms</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  fieldset { margin-bottom: 1rem; }
  #log { list-style: none; padding: 0; border: 1px solid #ccc; min-height: 10rem; }
  #log li { padding: .2rem .5rem; border-bottom: 1px solid #eee; }
  .system { color: #777; font-style: italic; }
</style>
</head>
<body>
<h1>websocket_rooms</h1>
<form id="login">
  <fieldset>
    <legend>Log in (full / full-pass, reader / reader-pass, outsider / outsider-pass)</legend>
    <input name="username" placeholder="username" value="full" required>
    <input name="password" type="password" placeholder="password" value="full-pass" required>
    <button>Log in</button>
    <button type="button" id="logout">Log out</button>
    <span id="who"></span>
  </fieldset>
</form>
<form id="join">
  <fieldset>
    <legend>Room</legend>
    <input id="room" value="lobby" pattern="[A-Za-z0-9_-]{1,64}" required>
    <button>Join</button>
  </fieldset>
</form>
<form id="send">
  <fieldset>
    <legend>Message</legend>
    <input id="text" size="40" autocomplete="off" required>
    <button>Send</button>
  </fieldset>
</form>
<ul id="log"></ul>
<script>
const log = (text, system) => {
  const li = document.createElement("li");
  li.textContent = text;
  if (system) li.className = "system";
  document.getElementById("log").prepend(li);
};
let socket = null;
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/login", { method: "POST", body: new URLSearchParams(new FormData(event.target)) });
  const body = await response.json();
  document.getElementById("who").textContent = response.ok ? "logged in" : body.error_description;
});
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/logout", { method: "POST" });
  document.getElementById("who").textContent = "logged out";
  if (socket) socket.close();
});
document.getElementById("join").addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket) socket.close();
  const room = document.getElementById("room").value;
  // The session cookie authenticates the upgrade; the server checks Origin.
  socket = new WebSocket(`${location.origin.replace(/^http/, "ws")}/ws/${encodeURIComponent(room)}`);
  socket.onopen = () => log(`joined ${room}`, true);
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    log(message.error ? `refused: ${message.error_description}` : `${message.from}: ${message.text}`, !!message.error);
  };
  socket.onclose = (event) => {
    const why = {
      4001: "token expired: log in again and rejoin",
      1008: "policy violation (message rate, byte budget or permission)",
      1009: "message too big (64 KiB at most)",
      1013: "fell behind the room: rejoin",
    }[event.code];
    log(`closed ${event.code}${why ? ": " + why : ""} (a refused join shows 1006: not logged in, no permission, or too many sockets)`, true);
  };
});
document.getElementById("send").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(text.value);
  text.value = "";
});
</script>
</body>
</html>
"#;
