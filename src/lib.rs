//! Authentication for tower, axum and hyper: JWT access tokens from an
//! `Authorization: Bearer` header, a query parameter or a cookie; the
//! application's own user store; argon2id passwords; an OAuth2
//! password-grant login; scopes; RFC 6750 errors.
//!
//! Every request travels one road, [`Authenticator`]:
//!
//! ```text
//! http::request::Parts
//!   -> credentials : find the token (sources, ambiguity rules, size cap)
//!   -> token       : verify signature, algorithm, exp/nbf/iss/aud, token type
//!   -> user        : UserStore loads the subject; active? token version current?
//!   => Authenticated<U> { user, claims }
//! any step fails -> AuthError -> one RFC 6750 response
//! ```
//!
//! [`AuthLayer`] runs it in front of any tower service; the
//! `tower_auth::axum` extractors run it for handlers; a server without
//! tower calls [`Authenticator::authenticate`] and
//! [`Authenticator::error_response`] itself.
//!
//! # Modules
//!
//! One concept each, on three floors; imports run one way, from the core up
//! through the road to the surfaces:
//!
//! | floor | rooms |
//! | --- | --- |
//! | core | [`config`] (the configuration error), [`scope`] (scope sets), [`credentials`] (where a token is found), [`origin`] (the Origin rules for cookies and WebSocket upgrades), [`token`] (keys, verification, issuing), [`password`] (argon2id off the async workers), [`user`] (your users), [`counters`] (the core of the shared state: shared counters and their error), [`limit`] (per-user rates and connection caps), [`throttle`] (failed logins per username and client), [`grant`] (the OAuth2 token endpoint's wire format) — each with its own rejection type |
//! | road | [`session`] (sessions and their refresh-token families), [`store`] (the state an app's instances share), `redis` (that state on Redis, feature `redis`), [`error`] (`AuthError` and the one renderer of errors), [`refresh`] (sliding expiry), [`authenticator`] (the road itself), [`login`] (the password grant, cookie sessions) |
//! | surfaces | [`layer`] (the tower layer), [`guard`] (scope and rate guards), [`ws`] (close codes, token expiry in a socket loop), `axum` (extractors and handlers, feature `axum`) |
//!
//! # Quick start (axum)
//!
//! ```no_run
//! # #[cfg(feature = "axum")] mod quick_start {
//! use axum::{routing::{get, post}, Router};
//! use tower_auth::axum::token_endpoint;
//! use tower_auth::{
//!     Authenticated, Authenticator, Key, MemoryUserStore, PasswordHasher, SimpleUser, TokenCodec,
//! };
//!
//! async fn me(auth: Authenticated<SimpleUser>) -> String {
//!     format!("hello {}", auth.user.username)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let users = MemoryUserStore::new();
//! let hash = PasswordHasher::new().hash("secret").await?;
//! users.insert(SimpleUser::new("johndoe", hash));
//!
//! let codec = TokenCodec::builder(Key::hs256(b"a secret of at least thirty-two bytes")?).build()?;
//! let auth = Authenticator::builder(users, codec).build()?;
//!
//! let app = Router::new()
//!     .route("/token", post(token_endpoint::<SimpleUser, ()>))
//!     .route("/me", get(me))
//!     .with_state(auth);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // The peer address of each connection: failed logins are throttled by it.
//! let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `axum` | yes | the `tower_auth::axum` extractors and token handler |
//! | `aws_lc_rs` | yes | jsonwebtoken's aws-lc-rs crypto backend |
//! | `rust_crypto` | no | jsonwebtoken's pure-Rust backend (used when `aws_lc_rs` is off) |
//! | `redis` | no | `tower_auth::redis`: the shared store on Redis, for an app that runs as several instances |

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The rooms, floor by floor: a room imports only from rooms on its own
// floor listed before it and from the floors below, never from above
// (`tests/module_floors.rs` checks it).
//
// Core: one concept each, each with its own rejection type.
pub mod config;
pub mod scope;
pub mod credentials;
pub mod origin;
pub mod token;
pub mod password;
pub mod user;
pub mod counters;
pub mod limit;
pub mod throttle;
pub mod grant;
// The road: the one error that is rendered, and the Authenticator.
pub mod session;
pub mod store;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod error;
pub mod refresh;
pub mod authenticator;
pub mod login;
// Surfaces: what servers mount.
pub mod layer;
pub mod guard;
pub mod ws;
#[cfg(feature = "axum")]
pub mod axum;

/// The README's Rust examples, compiled and run as doc tests by
/// `cargo test --doc`, so that what a newcomer copies from it builds.
///
/// Only with the `axum` feature: rustdoc compiles the README's blocks in
/// every feature set, and most of them are axum apps (the hyper block
/// builds in this set too); a `--no-default-features` build tests the
/// crate's own docs without them. Blocks that are not Rust, or not meant
/// to build, are marked `text`, `toml` or `sh` in the README.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use authenticator::{Authenticated, Authenticator, AuthenticatorBuilder};
pub use config::ConfigError;
pub use credentials::{
    CredentialKind, Credentials, CredentialsRejection, Precedence, SessionCookie, TokenSource,
};
pub use error::{AuthError, RenderError};
pub use grant::GrantError;
pub use guard::RequireScopes;
pub use jsonwebtoken::Algorithm;
pub use layer::{AuthLayer, AuthService};
pub use limit::{ConnectionLimit, RateLimit};
pub use origin::OriginGuard;
pub use password::{PasswordError, PasswordHasher};
pub use refresh::{Renewal, SlidingExpiry};
pub use scope::{InvalidScope, Scopes};
pub use throttle::{ClientAddr, LoginThrottle, LoginThrottled};
pub use token::{Claims, Key, TokenCodec, TokenRejection};
pub use user::{AuthUser, MemoryUserStore, PasswordUpdate, SimpleUser, UserStore};
