//! Drives the real `websocket_rooms` example binary with reqwest and
//! tokio-tungstenite: cookie sessions, every token transport, the Origin
//! guard, room permissions, per-user limits and expiry close codes.
#![cfg(feature = "axum")]

mod common;

use std::time::Duration;

use common::example::ExampleServer as Server;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &str = "a test secret that is longer than thirty-two bytes";
const FRONTEND: &str = "http://localhost:5173";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn start(env: &[(&str, &str)]) -> Server {
    Server::start("websocket_rooms", Some(SECRET), env)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn ws_url(server: &Server, path: &str) -> String {
    format!("ws://{}{path}", server.base.trim_start_matches("http://"))
}

/// `POST /login`; the response.
async fn login_response(server: &Server, user: &str, origin: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(server.url("/login"))
        .form(&[("username", user), ("password", &format!("{user}-pass"))]);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

/// Logs `user` in: (the access token the session cookie holds, the
/// `Set-Cookie` value). The body holds no token: page scripts never see it.
async fn login(server: &Server, user: &str) -> (String, String) {
    let response = login_response(server, user, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    let token = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, value)| value.to_owned())
        .expect("the session cookie");
    assert!(token.starts_with("ey"), "{cookie}");
    (token, cookie)
}

/// Opens `path` with extra handshake headers: the socket and the 101's
/// headers, or the refusal's status code.
async fn open(
    server: &Server,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<
    (
        Socket,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    u16,
> {
    open_answer(server, path, headers)
        .await
        .map_err(|(status, _)| status)
}

/// Opens `path` expecting a refusal: its status and the body's `error`.
async fn refusal(server: &Server, path: &str, headers: &[(&'static str, String)]) -> (u16, String) {
    match open_answer(server, path, headers).await {
        Ok(_) => panic!("upgrade of {path} with {headers:?} accepted"),
        Err(refused) => refused,
    }
}

/// The handshake: the socket and the 101's headers, or the refusal's
/// status and body `error`.
async fn open_answer(
    server: &Server,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<
    (
        Socket,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    (u16, String),
> {
    let mut request = ws_url(server, path).into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => Ok(ok),
        Err(WsError::Http(response)) => {
            let body: Value = response
                .body()
                .as_deref()
                .and_then(|bytes| serde_json::from_slice(bytes).ok())
                .unwrap_or(Value::Null);
            let error = body["error"].as_str().unwrap_or_default().to_owned();
            Err((response.status().as_u16(), error))
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

async fn opened(server: &Server, path: &str, headers: &[(&'static str, String)]) -> Socket {
    match open(server, path, headers).await {
        Ok((socket, _)) => socket,
        Err(status) => panic!("upgrade of {path} refused with {status}"),
    }
}

/// Extra handshake headers.
type Headers = Vec<(&'static str, String)>;

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn cookie(token: &str) -> (&'static str, String) {
    ("cookie", format!("__Host-session={token}"))
}

fn origin(value: &str) -> (&'static str, String) {
    ("origin", value.to_owned())
}

/// The next text frame as JSON; panics on close or end.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// How long to wait for a Close frame the server owes: a guard against a
/// test that hangs, not a measure of speed.
const CLOSE_PATIENCE: Duration = Duration::from_secs(60);

/// Reads until the server's Close frame; its code. Fails if none comes
/// within [`CLOSE_PATIENCE`].
async fn close_code(socket: &mut Socket) -> u16 {
    let wait = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => panic!("close without a code"),
                Some(Ok(_)) => continue,
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(CLOSE_PATIENCE, wait)
        .await
        .expect("the server sends a Close frame")
}

/// The `exp` claim of `token` (read, not verified).
fn exp_of(token: &str) -> u64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&json).expect("JSON claims");
    claims["exp"].as_u64().expect("exp")
}

/// Sends `text` and waits for its broadcast to come back.
async fn say(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.unwrap();
    let echo = next_json(socket).await;
    assert_eq!(echo["text"], text, "{echo}");
}

#[tokio::test]
async fn cookie_login_sets_the_session_cookie_and_logout_clears_it() {
    let server = start(&[]);
    let (token, set_cookie) = login(&server, "full").await;
    assert!(
        set_cookie.starts_with(&format!("__Host-session={token};")),
        "{set_cookie}"
    );
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=1800",
    ] {
        assert!(
            set_cookie.split("; ").any(|a| a == attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");

    for header in [bearer(&token), cookie(&token)] {
        let me: Value = client()
            .get(server.url("/me"))
            .header(header.0, header.1)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["username"], "full");
    }

    // Logout from the allowed page, with the (possibly expired) cookie.
    let response = client()
        .post(server.url("/logout"))
        .header("origin", FRONTEND)
        .header(cookie(&token).0, cookie(&token).1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let removal = response.headers()["set-cookie"].to_str().unwrap();
    assert!(removal.starts_with("__Host-session=;"), "{removal}");
    assert!(removal.contains("Max-Age=0"), "{removal}");

    // A foreign page can neither log a browser in nor out.
    let response = login_response(&server, "full", Some("https://evil.example")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("set-cookie").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_origin");
    let response = client()
        .post(server.url("/logout"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_origin");
}

#[tokio::test]
async fn tools_get_a_token_from_the_token_endpoint_and_logout_everywhere_renews_nothing() {
    let server = start(&[]);
    let response = client()
        .post(server.url("/token"))
        .form(&[("username", "full"), ("password", "full-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("set-cookie").is_none());
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().expect("a token").to_owned();
    let mut socket = opened(&server, &format!("/ws/lobby?token={token}"), &[]).await;
    say(&mut socket, "hello from a tool").await;
    let response = client()
        .post(server.url("/logout-everywhere"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("x-refreshed-token").is_none());
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn insecure_dev_cookie_is_explicit_and_renamed() {
    let server = start(&[("INSECURE_DEV_COOKIE", "1")]);
    let (token, set_cookie) = login(&server, "full").await;
    assert!(
        set_cookie.starts_with(&format!("session={token};")),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let stderr = server.stop();
    assert!(stderr.contains("INSECURE_DEV_COOKIE=1"), "{stderr}");
    assert!(!stderr.contains(&token));
}

#[tokio::test]
async fn every_token_transport_opens_a_socket() {
    let server = start(&[]);
    let (token, _) = login(&server, "full").await;

    let mut by_cookie = opened(&server, "/ws/lobby", &[cookie(&token), origin(FRONTEND)]).await;
    say(&mut by_cookie, "cookie").await;
    let mut by_query = opened(&server, &format!("/ws/lobby?token={token}"), &[]).await;
    say(&mut by_query, "query").await;
    let mut by_header = opened(&server, "/ws/lobby", &[bearer(&token)]).await;
    say(&mut by_header, "header").await;

    let offered = ("sec-websocket-protocol", format!("access_token, {token}"));
    let (mut by_protocol, response) = open(&server, "/ws/lobby", &[offered]).await.unwrap();
    let chosen = response.headers()["sec-websocket-protocol"]
        .to_str()
        .unwrap();
    assert_eq!(chosen, "access_token");
    assert!(!format!("{:?}", response.headers()).contains(&token));
    say(&mut by_protocol, "subprotocol").await;

    // Everyone in the room got the last message.
    for socket in [&mut by_cookie, &mut by_query, &mut by_header] {
        loop {
            if next_json(socket).await["text"] == "subprotocol" {
                break;
            }
        }
    }

    // Two transports at once are ambiguous: 400.
    let both = [
        bearer(&token),
        ("sec-websocket-protocol", format!("access_token, {token}")),
    ];
    assert_eq!(open(&server, "/ws/lobby", &both).await.err(), Some(400));
}

#[tokio::test]
async fn refused_upgrades_get_their_status_before_the_101() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let (outsider, _) = login(&server, "outsider").await;

    // Headers, status, body `error`: the two 403s differ in why.
    let refusals: Vec<(Headers, u16, &str)> = vec![
        (vec![], 401, "unauthorized"),
        (vec![bearer("not.a.token")], 401, "invalid_token"),
        (
            vec![origin(FRONTEND), cookie("garbage")],
            401,
            "invalid_token",
        ),
        (vec![bearer(&outsider)], 403, "insufficient_scope"),
        // The Origin guard: cookie-authenticated upgrades only.
        (vec![cookie(&full)], 403, "invalid_origin"),
        (vec![cookie(&full), origin("null")], 403, "invalid_origin"),
        (
            vec![cookie(&full), origin("https://evil.example")],
            403,
            "invalid_origin",
        ),
        (
            vec![cookie(&full), origin("http://localhost:5174")],
            403,
            "invalid_origin",
        ),
    ];
    for (headers, status, error) in &refusals {
        assert_eq!(
            refusal(&server, "/ws/lobby", headers).await,
            (*status, (*error).to_owned()),
            "{headers:?}"
        );
    }
    let own_origin = server.base.clone();
    let accepted: Vec<Headers> = vec![
        vec![cookie(&full), origin(FRONTEND)],
        vec![cookie(&full), origin(&own_origin)],
        vec![
            cookie(&full),
            origin("https://proxy.example"),
            ("sec-fetch-site", "same-origin".into()),
        ],
        // Not ambient credentials: no Origin needed, a foreign one is fine.
        vec![bearer(&full)],
        vec![bearer(&full), origin("https://evil.example")],
    ];
    let query = format!("/ws/lobby?token={full}");
    let paths = accepted
        .iter()
        .map(|headers| ("/ws/lobby", headers.clone()));
    for (path, headers) in paths.chain([(query.as_str(), vec![origin("null")])]) {
        let mut socket = opened(&server, path, &headers).await;
        // The server answers the close after its handler logged "joined"
        // and freed the socket's slot (the cap is 5).
        socket.close(None).await.unwrap();
        while socket.next().await.is_some() {}
    }

    // The handler ran once per accepted upgrade, never for a refused one.
    let stderr = server.stop();
    assert_eq!(
        stderr.matches(" joined").count(),
        accepted.len() + 1,
        "{stderr}"
    );
    assert!(!stderr.contains(&full), "a token reached the log");
}

#[tokio::test]
async fn readers_read_writers_write() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let (reader, _) = login(&server, "reader").await;
    let mut writer = opened(&server, "/ws/room-1", &[bearer(&full)]).await;
    let mut listener = opened(&server, "/ws/room-1", &[bearer(&reader)]).await;

    listener.send(Message::text("let me in")).await.unwrap();
    let refusal = next_json(&mut listener).await;
    assert_eq!(refusal["error"], "read_only", "{refusal}");

    say(&mut writer, "hello").await;
    let heard = next_json(&mut listener).await;
    assert_eq!(
        (heard["from"].clone(), heard["text"].clone()),
        ("full".into(), "hello".into())
    );
    assert_eq!(heard["room"], "room-1");

    // Another room hears nothing of room-1.
    let mut elsewhere = opened(&server, "/ws/room-2", &[bearer(&full)]).await;
    say(&mut elsewhere, "only here").await;
}

#[tokio::test]
async fn a_room_is_dropped_when_its_last_socket_leaves() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let leave = |mut socket: Socket| async move {
        // The server replies to the close after the socket has left.
        socket.close(None).await.unwrap();
        while socket.next().await.is_some() {}
    };
    let first = opened(&server, "/ws/lobby", &[bearer(&full)]).await;
    let mut second = opened(&server, "/ws/lobby", &[bearer(&full)]).await;
    // The 101 can arrive before the server's socket task has joined the
    // room: its own message coming back proves the second one is in.
    say(&mut second, "in").await;
    leave(first).await;
    // The room outlives the first socket: one who joins now is heard by
    // the second.
    let mut third = opened(&server, "/ws/lobby", &[bearer(&full)]).await;
    say(&mut third, "still here?").await;
    let heard = tokio::time::timeout(Duration::from_secs(5), next_json(&mut second))
        .await
        .expect("the second socket hears the third");
    assert_eq!(heard["text"], "still here?");
    leave(second).await;
    leave(third).await;

    let stderr = server.stop();
    assert_eq!(stderr.matches(" joined").count(), 3, "{stderr}");
    assert_eq!(
        stderr.matches("room closed").count(),
        1,
        "dropped once, when the last socket left: {stderr}"
    );
}

#[tokio::test]
async fn the_eleventh_message_in_a_minute_closes_with_1008() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let mut socket = opened(&server, "/ws/busy", &[bearer(&full)]).await;
    for i in 0..10 {
        say(&mut socket, &format!("message {i}")).await;
    }
    socket.send(Message::text("one too many")).await.unwrap();
    assert_eq!(close_code(&mut socket).await, 1008);
}

#[tokio::test]
async fn the_sixth_socket_gets_429_until_one_closes() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let (reader, _) = login(&server, "reader").await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(opened(&server, "/ws/lobby", &[bearer(&full)]).await);
    }
    assert_eq!(
        open(&server, "/ws/lobby", &[bearer(&full)]).await.err(),
        Some(429)
    );
    // Per user: someone else still gets in.
    opened(&server, "/ws/lobby", &[bearer(&reader)]).await;

    let mut first = sockets.remove(0);
    first.close(None).await.unwrap();
    // The server frees the slot before it answers the close.
    while first.next().await.is_some() {}
    opened(&server, "/ws/lobby", &[bearer(&full)]).await;
}

#[tokio::test]
async fn an_expired_token_closes_the_socket_with_4001() {
    // Short-lived tokens, so the socket outlives its token. On a slow
    // machine a token may expire between login and upgrade: that refusal
    // (401 at or after `exp`) is no failure, a fresh login tries again; a
    // refusal before `exp` is.
    let server = start(&[("TOKEN_LIFETIME_SECS", "3")]);
    let mut attempts = 0;
    let (full, mut socket) = loop {
        attempts += 1;
        let (full, _) = login(&server, "full").await;
        match open(&server, "/ws/lobby", &[bearer(&full)]).await {
            Ok((socket, _)) => break (full, socket),
            Err(401) if common::now() >= exp_of(&full) && attempts < 5 => continue,
            Err(status) => panic!(
                "upgrade refused with {status} (attempt {attempts}, exp {}, now {})",
                exp_of(&full),
                common::now()
            ),
        }
    };
    assert_eq!(close_code(&mut socket).await, 4001);
    assert_eq!(tower_auth::ws::TOKEN_EXPIRED, 4001);
    // Reconnecting with the expired token is refused before the upgrade.
    assert_eq!(
        open(&server, "/ws/lobby", &[bearer(&full)]).await.err(),
        Some(401)
    );
}

#[tokio::test]
async fn logging_out_everywhere_closes_open_sockets_with_4001() {
    let server = start(&[("RECHECK_SECS", "1")]);
    let (full, _) = login(&server, "full").await;
    let (reader, _) = login(&server, "reader").await;
    let mut mine = opened(&server, "/ws/lobby", &[bearer(&full)]).await;
    let mut theirs = opened(&server, "/ws/lobby", &[bearer(&reader)]).await;
    // The reader is in the room once its (refused) message is answered.
    theirs.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_json(&mut theirs).await["error"], "read_only");

    let response = client()
        .post(server.url("/logout-everywhere"))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Closed at the next check, long before the token's `exp` (30 min).
    let closed = tokio::time::timeout(Duration::from_secs(5), close_code(&mut mine))
        .await
        .expect("the socket closes within a few checks");
    assert_eq!(closed, 4001);
    // The token is refused everywhere; a new login works.
    let me = client()
        .get(server.url("/me"))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let (fresh, _) = login(&server, "full").await;
    let mut again = opened(&server, "/ws/lobby", &[bearer(&fresh)]).await;
    // Another user's socket was untouched: it hears the new one.
    say(&mut again, "back").await;
    let heard = tokio::time::timeout(Duration::from_secs(5), next_json(&mut theirs))
        .await
        .expect("the reader hears the new socket");
    assert_eq!(heard["text"], "back");

    let stderr = server.stop();
    assert_eq!(stderr.matches("token revoked").count(), 1, "{stderr}");
}

/// Issue 17: `/logout` revokes the session, not just the cookie — its
/// token is refused from the next request on and its open socket closes
/// with 4001 at the next re-check; the user's other session lives on.
#[tokio::test]
async fn logging_out_revokes_the_session_and_closes_its_socket_with_4001() {
    let server = start(&[("RECHECK_SECS", "1")]);
    let (browser, _) = login(&server, "full").await;
    let (other, _) = login(&server, "full").await;
    let mut logged_out = opened(&server, "/ws/lobby", &[cookie(&browser), origin(FRONTEND)]).await;
    let mut kept = opened(&server, "/ws/lobby", &[bearer(&other)]).await;
    say(&mut kept, "joined").await;

    let response = client()
        .post(server.url("/logout"))
        .header("origin", FRONTEND)
        .header(cookie(&browser).0, cookie(&browser).1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let closed = tokio::time::timeout(Duration::from_secs(5), close_code(&mut logged_out))
        .await
        .expect("the socket closes within a few checks");
    assert_eq!(closed, 4001);
    for token in [&browser, &other] {
        let me = client()
            .get(server.url("/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let expected = if token == &browser {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        assert_eq!(me.status(), expected);
    }
    say(&mut kept, "still here").await;
}

#[tokio::test]
async fn the_page_is_served() {
    let server = start(&[]);
    let page = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for needle in [
        "<form id=\"login\"",
        "id=\"room\"",
        "id=\"text\"",
        "id=\"log\"",
        "new WebSocket",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
}

// Bounded resources per user (issue 15): message and frame caps, a byte
// budget that counts every frame, and readers that fall behind dropped.

/// The example's frame and message cap.
const MAX_MESSAGE: usize = 64 * 1024;

/// Opens `path` over a TCP connection with a small receive buffer, so that
/// a client that does not read stalls the server's sends soon.
async fn opened_with_small_window(server: &Server, path: &str, token: &str) -> Socket {
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let mut request = ws_url(server, path).into_client_request().unwrap();
    let (name, value) = bearer(token);
    request
        .headers_mut()
        .insert(name, HeaderValue::from_str(&value).unwrap());
    let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    socket
}

/// Sends `messages` one by one from a task while reading: the server's
/// close code, `None` if the stream ended without one or no close came
/// within 10 s after the last send. Messages are taken from the queue as
/// they are sent, so what is left can go to the next socket.
async fn flood(
    socket: Socket,
    messages: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Message>>>,
) -> Option<u16> {
    let (mut sink, mut stream) = socket.split();
    let (sent_all, mut all_sent) = tokio::sync::oneshot::channel();
    let sender = tokio::spawn(async move {
        loop {
            let next = messages.lock().unwrap().pop_front();
            let Some(message) = next else { break };
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sent_all.send(());
        // Keep the sink (and so the connection) open for the reader.
        std::future::pending::<()>().await;
    });
    let mut deadline = None;
    let code = loop {
        let next = match deadline {
            None => tokio::select! {
                next = stream.next() => next,
                _ = &mut all_sent => {
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                    continue;
                }
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => next,
                Err(_) => break None,
            },
        };
        match next {
            Some(Ok(Message::Close(frame))) => break frame.map(|frame| u16::from(frame.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    sender.abort();
    code
}

fn queue(
    messages: impl IntoIterator<Item = Message>,
) -> std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Message>>> {
    std::sync::Arc::new(std::sync::Mutex::new(messages.into_iter().collect()))
}

#[tokio::test]
async fn a_message_over_the_cap_is_closed_with_1009() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let mut socket = opened(&server, "/ws/big", &[bearer(&full)]).await;
    // At the cap: through.
    say(&mut socket, &"a".repeat(MAX_MESSAGE)).await;
    // One byte over: 1009.
    let over = Message::text("a".repeat(MAX_MESSAGE + 1));
    assert_eq!(flood(socket, queue([over])).await, Some(1009));
    // The 4 MiB message, text or binary: 1009, from the frame's
    // header (the server never reads the payload).
    for huge in [
        Message::text("\u{1}".repeat(4 << 20)),
        Message::binary(vec![0; 4 << 20]),
    ] {
        let socket = opened(&server, "/ws/big", &[bearer(&full)]).await;
        assert_eq!(flood(socket, queue([huge])).await, Some(1009));
    }
}

#[tokio::test]
async fn a_binary_flood_spends_the_users_byte_budget_and_closes_with_1008() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let mut other = opened(&server, "/ws/flood", &[bearer(&full)]).await;
    let socket = opened(&server, "/ws/flood", &[bearer(&full)]).await;
    let binary = (0..2000).map(|_| Message::binary(vec![0; MAX_MESSAGE]));
    assert_eq!(flood(socket, queue(binary)).await, Some(1008));
    // The budget is the user's, shared by their sockets: the other one is
    // closed at its next frame.
    other
        .send(Message::binary(vec![0; MAX_MESSAGE]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut other).await, 1008);
}

#[tokio::test]
async fn a_ping_flood_spends_the_byte_budget_and_closes_with_1008() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    let socket = opened(&server, "/ws/flood", &[bearer(&full)]).await;
    // Empty pings: each still costs the server a frame to read and a pong.
    let pings = (0..2000).map(|_| Message::Ping(Vec::new().into()));
    assert_eq!(flood(socket, queue(pings)).await, Some(1008));
}

#[tokio::test]
async fn a_reader_that_falls_behind_the_room_is_dropped_with_1013() {
    // Enough allowance for the writer to outrun a reader that stopped.
    let server = start(&[
        ("MESSAGES_PER_MINUTE", "100000"),
        ("BYTES_PER_MINUTE", "2000000000"),
    ]);
    let (full, _) = login(&server, "full").await;
    let (reader, _) = login(&server, "reader").await;
    let mut stalled = opened_with_small_window(&server, "/ws/slow", &reader).await;
    // The reader is in the room once its (refused) message is answered;
    // from now on it reads nothing.
    stalled.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_json(&mut stalled).await["error"], "read_only");
    let writer = opened(&server, "/ws/slow", &[bearer(&full)]).await;
    let before = server.memory();
    server.reset_peak_memory();

    // 300 messages of 60 KiB (18 MB): far more than the stalled
    // connection's buffers and the room's backlog hold.
    const SENT: usize = 300;
    let (mut sink, mut echoes) = writer.split();
    let writing = tokio::spawn(async move {
        for i in 0..SENT {
            let text = format!("{i:05}{}", "x".repeat(60 * 1024));
            sink.send(Message::text(text)).await.unwrap();
        }
        sink
    });
    // The writer keeps up with the room and hears all of it.
    for _ in 0..SENT {
        match echoes.next().await {
            Some(Ok(Message::Text(_))) => {}
            other => panic!("the writer's socket broke: {other:?}"),
        }
    }
    let _sink = writing.await.unwrap();
    let during = server.memory();

    // The stalled reader reads now: some messages, then 1013.
    let mut heard = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => heard += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("after {heard} messages, no Close frame but {other:?}"),
            Err(_) => panic!("after {heard} messages, still open: a stalled reader is kept"),
        }
    };
    assert_eq!(code, Some(1013), "after {heard} messages");
    assert!(heard < SENT, "{heard}");
    let grown_kib = during.peak_rss_kib.saturating_sub(before.rss_kib);
    println!("a stalled reader: heard {heard} of {SENT}, peak RSS growth {grown_kib} KiB");
    let grown_mib = grown_kib / 1024;
    assert!(
        grown_mib <= 8,
        "the server's RSS grew by {grown_mib} MiB while one reader stalled ({before:?} -> {during:?})"
    );
}

#[tokio::test]
async fn one_user_at_full_allowance_cannot_grow_the_servers_memory() {
    let server = start(&[]);
    let (full, _) = login(&server, "full").await;
    // Four of the user's own sockets in the room, none of them reading
    // (the attack), each in the room once its ping is answered.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut socket = opened_with_small_window(&server, "/ws/flood", &full).await;
        socket.send(Message::Ping(Vec::new().into())).await.unwrap();
        while !matches!(socket.next().await, Some(Ok(Message::Pong(_)))) {}
        stalled.push(socket);
    }
    let before = server.memory();
    server.reset_peak_memory();

    // Whatever it sends: the ten 4 MiB texts of control characters
    // (JSON makes each 6 bytes), texts at the cap made of them, binary
    // frames, pings; on a fresh socket (the fifth) whenever one is closed.
    let control = |len: usize| Message::text("\u{1}".repeat(len));
    let messages = queue(
        (0..10)
            .map(|_| control(4 << 20))
            .chain((0..20).map(|_| control(MAX_MESSAGE)))
            .chain((0..50).map(|_| Message::binary(vec![0; MAX_MESSAGE])))
            .chain((0..200).map(|_| Message::Ping(Vec::new().into()))),
    );
    let mut sockets_used = 0;
    while !messages.lock().unwrap().is_empty() {
        let socket = opened(&server, "/ws/flood", &[bearer(&full)]).await;
        sockets_used += 1;
        flood(socket, std::sync::Arc::clone(&messages)).await;
    }
    let after = server.memory();
    let grown_kib = after.peak_rss_kib.saturating_sub(before.rss_kib);
    println!("one user at full allowance: peak RSS growth {grown_kib} KiB, {sockets_used} sockets");
    let grown_mib = grown_kib / 1024;
    assert!(
        grown_mib <= 8,
        "one user grew the server's RSS by {grown_mib} MiB at its peak \
         ({before:?} -> {after:?}, {sockets_used} sockets)"
    );
    drop(stalled);
}
