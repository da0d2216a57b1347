//! Serving HTTP/1.1 with the limits every server facing the internet should
//! set, shared by the example servers (each includes this file with
//! `#[path = "support/serve.rs"] mod serve;`). `axum::serve` (axum 0.8) has
//! no knob for a header read timeout, so the examples serve with hyper's own
//! connection builder:
//!
//! - a **header read timeout**: a client that has not sent a request's whole
//!   header within `HEADER_READ_TIMEOUT_SECS` (default 10) is disconnected,
//!   so slow ("slowloris") clients cannot hold connections open. hyper has
//!   the timeout, but it is off without a timer;
//! - at most **`MAX_CONNECTIONS`** open connections (default 1024): past
//!   that, new ones wait in the listen backlog until one closes. A
//!   connection upgraded to a WebSocket leaves hyper (and this count) at the
//!   upgrade; sockets are counted per user by the app instead;
//! - WebSocket upgrades (`with_upgrades`), and a graceful shutdown: when
//!   `shutdown` resolves, stop accepting, let requests in flight finish,
//!   close idle connections.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::{Service, ServiceExt};

/// The limits, from the environment.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// `HEADER_READ_TIMEOUT_SECS`: 1 to 3600, default 10.
    pub header_read_timeout: Duration,
    /// `MAX_CONNECTIONS`: 1 to 1,000,000, default 1024.
    pub max_connections: u32,
}

impl ServerLimits {
    /// Reads `HEADER_READ_TIMEOUT_SECS` and `MAX_CONNECTIONS`; an unparsable
    /// or out-of-range value stops the server at startup.
    pub fn from_env() -> Result<Self, String> {
        let secs = env_number("HEADER_READ_TIMEOUT_SECS", 10, 1..=3600)?;
        Ok(ServerLimits {
            header_read_timeout: Duration::from_secs(secs.into()),
            max_connections: env_number("MAX_CONNECTIONS", 1024, 1..=1_000_000)?,
        })
    }
}

fn env_number(
    name: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, String> {
    let Ok(value) = std::env::var(name) else {
        return Ok(default);
    };
    value
        .parse()
        .ok()
        .filter(|number| range.contains(number))
        .ok_or_else(|| {
            format!(
                "{name} must be a whole number from {} to {}, not {value:?}",
                range.start(),
                range.end()
            )
        })
}

/// Serves each accepted connection with a clone of `service` until
/// `shutdown` resolves, then waits for the open connections to finish.
/// Every request carries `peer(the connection's address)` in its
/// extensions: axum's `ConnectInfo` (what `into_make_service_with_connect_info`
/// would insert) or tower-auth's `ClientAddr`, which the login throttle
/// reads.
pub async fn serve<S, B, E>(
    listener: TcpListener,
    limits: ServerLimits,
    service: S,
    peer: fn(SocketAddr) -> E,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
    E: Clone + Send + Sync + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections as usize));
    // Dropped when shutdown begins: every connection sees it change.
    let (stopping, stop) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, address) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let extension = peer(address);
        let service = service
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(extension.clone());
                request
            });
        let connection = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let closed = tokio::select! {
                closed = connection.as_mut() => closed,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = closed {
                // Timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(error = %err, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(stopping);
    // Every permit back means every connection has closed.
    let _ = connections.acquire_many(limits.max_connections).await;
}
