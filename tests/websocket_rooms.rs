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
    let mut request = ws_url(server, path).into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => Ok(ok),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

async fn opened(server: &Server, path: &str, headers: &[(&'static str, String)]) -> Socket {
    match open(server, path, headers).await {
        Ok((socket, _)) => socket,
        Err(status) => panic!("upgrade of {path} refused with {status}"),
    }
}

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

/// Reads until the server's Close frame; its code.
async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match socket.next().await {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a Close frame, got {other:?}"),
        }
    }
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

    let refusals: Vec<(Vec<(&'static str, String)>, u16)> = vec![
        (vec![], 401),
        (vec![bearer("not.a.token")], 401),
        (vec![origin(FRONTEND), cookie("garbage")], 401),
        (vec![bearer(&outsider)], 403),
        // The Origin guard: cookie-authenticated upgrades only.
        (vec![cookie(&full)], 403),
        (vec![cookie(&full), origin("null")], 403),
        (vec![cookie(&full), origin("https://evil.example")], 403),
        (vec![cookie(&full), origin("http://localhost:5174")], 403),
    ];
    for (headers, status) in &refusals {
        assert_eq!(
            open(&server, "/ws/lobby", headers).await.err(),
            Some(*status),
            "{headers:?}"
        );
    }
    let own_origin = server.base.clone();
    let accepted: Vec<Vec<(&'static str, String)>> = vec![
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
    let server = start(&[("TOKEN_LIFETIME_SECS", "2")]);
    let (full, _) = login(&server, "full").await;
    let mut socket = opened(&server, "/ws/lobby", &[bearer(&full)]).await;
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
