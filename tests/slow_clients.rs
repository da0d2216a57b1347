//! Every example server drops a client that never finishes its request
//! header, and bounds its open connections (issue 15): driven as real
//! binaries over raw TCP.

mod common;

use std::time::Duration;

use common::example::ExampleServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "a test secret that is longer than thirty-two bytes";

/// Opens `count` connections to `server` that send a request line and a
/// header, then trickle one byte of a header that never ends every 200 ms;
/// panics unless the server has closed every one of them (EOF or reset)
/// within 10 s.
async fn slow_headers_are_dropped(server: &ExampleServer, count: usize) {
    let addr = address(server);
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..count {
        let addr = addr.clone();
        connections.spawn(async move {
            let stream = TcpStream::connect(&addr).await.unwrap();
            let (mut from_server, mut to_server) = stream.into_split();
            to_server
                .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .await
                .unwrap();
            let mut trickle = tokio::time::interval(Duration::from_millis(200));
            let mut buffer = [0; 1024];
            loop {
                tokio::select! {
                    read = from_server.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => return,
                        // Whatever the server says on its way out.
                        Ok(_) => continue,
                    },
                    _ = trickle.tick() => {
                        if to_server.write_all(b"a").await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let all_closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(closed) = connections.join_next().await {
            closed.unwrap();
        }
    })
    .await;
    assert!(
        all_closed.is_ok(),
        "{} connections whose header never ends are still open after 10 s",
        connections.len()
    );
}

/// `ADDR` of the server's `http://ADDR`.
fn address(server: &ExampleServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// A plain request on a fresh connection: the status line's code.
async fn status_of(addr: String, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("not a response: {response:?}"))
        .to_owned()
}

fn start(name: &str, env: &[(&str, &str)]) -> ExampleServer {
    ExampleServer::start(name, Some(SECRET), env)
}

#[tokio::test]
async fn hyper_service_drops_slow_headers() {
    let server = start("hyper_service", &[("HEADER_READ_TIMEOUT_SECS", "2")]);
    slow_headers_are_dropped(&server, 5).await;
    assert_eq!(status_of(address(&server), "/health").await, "200");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn password_flow_drops_slow_headers() {
    let server = start("password_flow", &[("HEADER_READ_TIMEOUT_SECS", "2")]);
    slow_headers_are_dropped(&server, 5).await;
    assert_eq!(status_of(address(&server), "/health").await, "200");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn websocket_rooms_drops_slow_headers() {
    let server = start("websocket_rooms", &[("HEADER_READ_TIMEOUT_SECS", "2")]);
    slow_headers_are_dropped(&server, 5).await;
    assert_eq!(status_of(address(&server), "/").await, "200");
}

#[tokio::test]
async fn past_max_connections_a_connection_waits_for_a_free_slot() {
    let server = start(
        "hyper_service",
        &[
            ("MAX_CONNECTIONS", "1"),
            ("HEADER_READ_TIMEOUT_SECS", "3600"),
        ],
    );
    // The one slot: a connection served once, then kept open, idle.
    let mut holder = TcpStream::connect(address(&server)).await.unwrap();
    holder
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\nok") {
        let mut buffer = [0; 1024];
        let read = holder.read(&mut buffer).await.unwrap();
        assert_ne!(read, 0, "{:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..read]);
    }
    let waiting = tokio::spawn(status_of(address(&server), "/health"));
    // However long this is, the request must not be answered while the
    // holder has the slot (a slow server only makes this pass vacuously).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection was served while the first held the only slot"
    );
    drop(holder);
    assert_eq!(waiting.await.unwrap(), "200");
}
