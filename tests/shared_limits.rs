//! Limits shared by an app's instances through Redis (issue 18): two
//! servers, one Redis. The socket cap, the byte budget and the login
//! throttle through the real examples (`websocket_rooms`, `password_flow`)
//! run twice with `REDIS_URL` (and `websocket_rooms`' shared sessions: a
//! logout on one instance closes the socket on the other); the rate guard
//! through two in-process servers; a dead instance's sockets; and Redis
//! going away (fail closed).
//!
//! Each example pair gets a private `redis-server` (nothing shared with
//! other tests, and killable); the in-process servers use the Redis at
//! `REDIS_URL` with limit names of their own.
#![cfg(all(feature = "axum", feature = "redis"))]

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::example::ExampleServer as Server;
use common::redis_server::{RedisServer, redis_or_skip, unique_prefix};
use common::{REASON_HEADER, authenticator, client, hs256_codec, serve, token_for, users, whoami};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower_auth::axum::token_endpoint;
use tower_auth::limit::RateLimit;
use tower_auth::redis::RedisStore;
use tower_auth::throttle::LoginThrottle;
use tower_auth::{AuthLayer, Credentials, PasswordHasher, SimpleUser};

const SECRET: &str = "a test secret that is longer than thirty-two bytes";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How many times a poll tries before giving up (a guard against a hang,
/// not a measure of speed).
const POLLS: usize = 600;
const POLL_EVERY: Duration = Duration::from_millis(50);

/// `websocket_rooms` on `redis`, with `env` on top.
fn rooms(redis: &RedisServer, env: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let mut all = vec![("REDIS_URL", url.as_str())];
    all.extend_from_slice(env);
    Server::start("websocket_rooms", Some(SECRET), &all)
}

/// An access token for `user` (password `USER-pass`) from `POST /token`.
async fn token(server: &Server, user: &str) -> String {
    let response = client()
        .post(server.url("/token"))
        .form(&[("username", user), ("password", &format!("{user}-pass"))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Opens the lobby with `token`: the socket, or the refusal's status.
async fn open(server: &Server, token: &str) -> Result<Socket, u16> {
    let url = format!(
        "ws://{}/ws/lobby",
        server.base.trim_start_matches("http://")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// Reads until the server's Close frame; its code.
async fn close_code(socket: &mut Socket) -> u16 {
    let wait = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(_)) => continue,
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the server sends a Close frame")
}

#[tokio::test]
async fn a_users_sixth_socket_across_two_instances_gets_429_and_a_dead_instances_slots_come_back() {
    const TEST: &str = "a_users_sixth_socket_across_two_instances_gets_429";
    let Some(redis) = RedisServer::start(TEST).await else {
        return;
    };
    // A short lease: a dead instance's slots come back soon.
    let env = [("SOCKET_LEASE_MS", "900")];
    let a = rooms(&redis, &env);
    let b = rooms(&redis, &env);
    let full = token(&a, "full").await;

    let mut on_a = Vec::new();
    for _ in 0..3 {
        on_a.push(open(&a, &full).await.unwrap());
    }
    let mut on_b = Vec::new();
    for _ in 0..2 {
        on_b.push(open(&b, &full).await.unwrap());
    }
    // Five sockets over two instances: the sixth is refused on either,
    // before the upgrade.
    assert_eq!(open(&b, &full).await.err(), Some(429));
    assert_eq!(open(&a, &full).await.err(), Some(429));
    // Open sockets keep their slots past their lease: it is renewed.
    tokio::time::sleep(Duration::from_millis(3 * 900)).await;
    assert_eq!(open(&b, &full).await.err(), Some(429));
    // Another user has their own cap.
    let reader = token(&b, "reader").await;
    let _other = open(&a, &reader).await.unwrap();

    // A closed socket gives its slot back to both instances.
    let mut closing = on_a.pop().unwrap();
    closing.close(None).await.unwrap();
    while closing.next().await.is_some() {}
    let mut reopened = None;
    for _ in 0..POLLS {
        if let Ok(socket) = open(&b, &full).await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    on_b.push(reopened.expect("a closed socket's slot never came back"));
    assert_eq!(open(&b, &full).await.err(), Some(429));

    // Instance A dies without closing its two sockets: their leases are no
    // longer renewed and lapse, and B can open them again.
    drop(a);
    drop(on_a);
    for _ in 0..POLLS {
        if on_b.len() == 5 {
            break;
        }
        match open(&b, &full).await {
            Ok(socket) => on_b.push(socket),
            Err(429) => tokio::time::sleep(POLL_EVERY).await,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(on_b.len(), 5, "a dead instance's slots never came back");
    assert_eq!(open(&b, &full).await.err(), Some(429));
}

#[tokio::test]
async fn a_users_byte_budget_is_shared_by_two_instances() {
    const TEST: &str = "a_users_byte_budget_is_shared_by_two_instances";
    let Some(redis) = RedisServer::start(TEST).await else {
        return;
    };
    // 10 000 bytes a minute; a binary frame of 3000 bytes costs 4024.
    let env = [("BYTES_PER_MINUTE", "10000")];
    let a = rooms(&redis, &env);
    let b = rooms(&redis, &env);
    let full = token(&a, "full").await;

    let mut on_a = open(&a, &full).await.unwrap();
    for _ in 0..2 {
        on_a.send(Message::binary(vec![0u8; 3000])).await.unwrap();
    }
    // A text comes back once everything before it was charged (about
    // 1070 bytes more): 9100 or so of 10 000 spent, on instance A.
    on_a.send(Message::text("sync")).await.unwrap();
    loop {
        match on_a.next().await {
            Some(Ok(Message::Text(text))) if text.contains("sync") => break,
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    // On instance B, the same user's 4024 bytes are over the budget: its
    // own 10 000 would have taken them.
    let mut on_b = open(&b, &full).await.unwrap();
    on_b.send(Message::binary(vec![0u8; 3000])).await.unwrap();
    assert_eq!(close_code(&mut on_b).await, 1008);
}

/// Two "instances" of an app in this process: each its own connection to
/// Redis, authenticator and rate limit, sharing one limit name.
async fn rate_limited_instance(url: &str, name: &str) -> String {
    let store = RedisStore::connect(url).await.unwrap();
    let codec = hs256_codec();
    let auth = authenticator(users("unused"), codec, Credentials::bearer());
    let limit = RateLimit::new(3, Duration::from_secs(3600))
        .unwrap()
        .shared(store, name)
        .unwrap();
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(auth.limit_rate(limit))
        .layer(AuthLayer::required(auth));
    serve(app).await
}

async fn get_me(base: &str, token: &str) -> reqwest::Response {
    client()
        .get(format!("{base}/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rate_limit_is_shared_by_two_instances() {
    const TEST: &str = "a_rate_limit_is_shared_by_two_instances";
    let Some(url) = redis_or_skip(TEST).await else {
        return;
    };
    // The limit's name is the test's own: no other test shares its keys.
    let name = unique_prefix("rate").replace(':', "-");
    let name = &name[..name.len().min(64)];
    let a = rate_limited_instance(&url, name).await;
    let b = rate_limited_instance(&url, name).await;
    let johndoe = token_for(&hs256_codec(), "johndoe", "me");
    let alice = token_for(&hs256_codec(), "alice", "me");

    // 3 an hour: two on A and one on B spend it, on both.
    for base in [&a, &a, &b] {
        assert_eq!(get_me(base, &johndoe).await.status(), 200);
    }
    for base in [&b, &a] {
        let refused = get_me(base, &johndoe).await;
        assert_eq!(refused.status(), 429);
        assert!(refused.headers().contains_key("retry-after"));
        assert_eq!(refused.headers()[REASON_HEADER], "rate");
    }
    // Per user: alice still has hers.
    assert_eq!(get_me(&b, &alice).await.status(), 200);
}

/// `password_flow` on `redis`.
fn password_flow(redis: &RedisServer) -> Server {
    let url = redis.url();
    Server::start(
        "password_flow",
        Some(SECRET),
        &[("REDIS_URL", url.as_str())],
    )
}

async fn login(server: &Server, username: &str, password: &str) -> u16 {
    client()
        .post(server.url("/token"))
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn failed_logins_on_one_instance_are_throttled_on_the_other() {
    const TEST: &str = "failed_logins_on_one_instance_are_throttled_on_the_other";
    let Some(redis) = RedisServer::start(TEST).await else {
        return;
    };
    let a = password_flow(&redis);
    let b = password_flow(&redis);
    // The default budget: 5 failures per (username, client). A known user
    // and an unknown one alike.
    for username in ["johndoe", "nobody-by-this-name"] {
        for _ in 0..5 {
            assert_eq!(login(&a, username, "wrong").await, 400);
        }
        assert_eq!(login(&b, username, "wrong").await, 429, "{username}");
        // The right password is refused too: before any password work.
        assert_eq!(login(&b, username, "secret").await, 429, "{username}");
    }
    // Redis holds no username or address in its keys.
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert!(!key.contains("johndoe"), "{key}");
        assert!(!key.contains("nobody"), "{key}");
        assert!(!key.contains("127.0.0.1"), "{key}");
    }
}

#[tokio::test]
async fn shared_limits_fail_closed_when_redis_is_unreachable() {
    const TEST: &str = "shared_limits_fail_closed_when_redis_is_unreachable";
    let Some(mut redis) = RedisServer::start(TEST).await else {
        return;
    };
    // In process: a shared rate limit and a shared login throttle.
    let url = redis.url();
    let store = RedisStore::connect(&url).await.unwrap();
    let codec = hs256_codec();
    let hash = PasswordHasher::new().hash("secret").await.unwrap();
    let auth = tower_auth::Authenticator::<SimpleUser>::builder(users(&hash), codec.clone())
        .render_errors(common::reason_header)
        .login_throttle(
            LoginThrottle::builder()
                .shared(store.clone())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let limit = RateLimit::per_minute(100)
        .unwrap()
        .shared(store, "requests")
        .unwrap();
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(auth.limit_rate(limit))
        .layer(AuthLayer::optional(auth.clone()))
        .route("/token", post(token_endpoint::<SimpleUser, ()>))
        .with_state(auth);
    let base = serve(app).await;
    let johndoe = token_for(&codec, "johndoe", "me");
    let token_login = |password: &'static str| {
        client()
            .post(format!("{base}/token"))
            .form(&[("username", "johndoe"), ("password", password)])
            .send()
    };
    // The sockets example on the same Redis.
    let rooms = rooms(&redis, &[]);
    let full = token(&rooms, "full").await;

    assert_eq!(get_me(&base, &johndoe).await.status(), 200);
    assert_eq!(token_login("secret").await.unwrap().status(), 200);
    assert!(open(&rooms, &full).await.is_ok());

    redis.kill();
    // Every request that needs the store is refused from now on: never
    // let through unlimited.
    for _ in 0..3 {
        let refused = get_me(&base, &johndoe).await;
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(refused.headers()[REASON_HEADER], "limit_store_unavailable");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");

        let refused = token_login("secret").await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(
            refused.headers()[REASON_HEADER],
            "throttle_store_unavailable"
        );

        assert_eq!(open(&rooms, &full).await.err(), Some(503));
    }

    // Redis is back (empty): the limits work again.
    redis.restart().await;
    let mut back = false;
    for _ in 0..POLLS {
        if get_me(&base, &johndoe).await.status() == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert!(back, "the shared limit never came back with Redis");
}

/// With `REDIS_URL`, `websocket_rooms` shares its sessions too: a logout
/// on one instance closes the session's socket on the other with 4001 at
/// its next re-check, and the other instance refuses the token from then
/// on.
#[tokio::test]
async fn a_logout_on_one_instance_closes_the_sessions_socket_on_the_other() {
    const TEST: &str = "a_logout_on_one_instance_closes_the_sessions_socket_on_the_other";
    let Some(redis) = RedisServer::start(TEST).await else {
        return;
    };
    let a = rooms(&redis, &[("RECHECK_SECS", "1")]);
    let b = rooms(&redis, &[("RECHECK_SECS", "1")]);
    let token = token(&a, "full").await;
    let mut socket = open(&b, &token).await.expect("the socket opens on B");

    let response = client()
        .post(a.url("/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(close_code(&mut socket).await, 4001);
    let me = client()
        .get(b.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    assert_eq!(open(&b, &token).await.err(), Some(401));
}
