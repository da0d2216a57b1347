//! tower-auth in a plain hyper 1 server: no axum anywhere.
//!
//! ```sh
//! cargo run --example hyper_service --no-default-features --features aws_lc_rs
//! ```
//!
//! - `POST /token`  — the OAuth2 password grant (`johndoe` / `secret`);
//!   failed logins are throttled per username and per client (each
//!   connection's peer address goes into its requests as a `ClientAddr`);
//! - `GET /whoami`  — `{"sub", "scope"}` for a valid bearer token, an
//!   RFC 6750 401 otherwise;
//! - `GET /health`  — `ok`, no authentication.
//!
//! `/whoami` is a hand-written tower service behind `AuthLayer` in a
//! `tower::ServiceBuilder` stack, bridged to hyper with hyper-util's
//! `TowerToHyperService`.
//!
//! Environment:
//! - `BIND_ADDR`: where to listen (default `127.0.0.1:3000`).
//! - `JWT_SECRET`: the HS256 secret, at least 32 bytes (unset: a random one).
//! - `HEADER_READ_TIMEOUT_SECS`: a client that has not sent a request's
//!   whole header within this time is disconnected (default 10).
//! - `MAX_CONNECTIONS`: open connections at most; more wait to be accepted
//!   (default 1024).
//!
//! The serving loop with those limits is `examples/support/serve.rs`.

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_auth::{
    AuthLayer, Authenticated, Authenticator, ClientAddr, Key, MemoryUserStore, Scopes, SimpleUser,
    TokenCodec,
};

#[path = "support/serve.rs"]
mod serve;

type BoxError = Box<dyn Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// The FastAPI tutorial's argon2id hash of "secret".
const JOHNDOE_HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$wagCPXjifgvUFBzq4hqe3w$CYaIb8sB+wtD+Vu/P4uod1+Qof8h+1g7bbDlBID48Rc";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let users = MemoryUserStore::new();
    users.insert(SimpleUser::new("johndoe", JOHNDOE_HASH).with_scopes(Scopes::parse("me items")?));
    let codec = TokenCodec::builder(Key::hs256(&jwt_secret()?)?).build()?;
    let auth = Authenticator::builder(users, codec).build()?;
    let limits = serve::ServerLimits::from_env()?;

    let addr: SocketAddr = std::env::var("BIND_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!("curl -s -d 'username=johndoe&password=secret' http://{addr}/token");
    println!("curl -s -H \"Authorization: Bearer $TOKEN\" http://{addr}/whoami");
    println!("curl -s http://{addr}/health");

    let app = app(auth);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // `ClientAddr` on each request: the token endpoint throttles failed
    // logins by the client's address.
    serve::serve(listener, limits, app, ClientAddr::from, shutdown).await;
    Ok(())
}

/// Routes by hand: `/whoami` goes through the authenticated stack, the
/// other two paths do not need an identity.
fn app(
    auth: Authenticator<SimpleUser>,
) -> impl Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    let whoami = ServiceBuilder::new()
        .layer(AuthLayer::required(auth.clone()))
        .service_fn(whoami);
    service_fn(move |request: Request<Incoming>| {
        let auth = auth.clone();
        let whoami = whoami.clone();
        async move {
            let response = match (request.method(), request.uri().path()) {
                (&Method::GET, "/health") => text(StatusCode::OK, "ok").map(boxed),
                (&Method::POST, "/token") => tower_auth::login::token_endpoint(&auth, request)
                    .await
                    .map(boxed),
                (&Method::GET, "/whoami") => whoami.oneshot(request).await?.map(boxed),
                _ => text(StatusCode::NOT_FOUND, "not found").map(boxed),
            };
            Ok::<_, Infallible>(response)
        }
    })
}

/// The hand-written service behind `AuthLayer`: the layer has put the
/// identity into the request's extensions.
async fn whoami(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(identity) = request.extensions().get::<Authenticated<SimpleUser>>() else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "AuthLayer is missing",
        ));
    };
    let body = serde_json::json!({
        "sub": identity.claims.sub,
        "scope": identity.claims.scope.to_string(),
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// `JWT_SECRET`, or a random one (with a warning) when it is unset.
fn jwt_secret() -> Result<Vec<u8>, BoxError> {
    match std::env::var("JWT_SECRET") {
        Ok(secret) => Ok(secret.into_bytes()),
        Err(_) => {
            eprintln!(
                "warning: JWT_SECRET is unset; using a random secret, tokens die with the process"
            );
            let mut secret = vec![0; 32];
            getrandom::fill(&mut secret)?;
            Ok(secret)
        }
    }
}
