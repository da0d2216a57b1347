//! Shared helpers for the HTTP integration tests: a real server on
//! `127.0.0.1:0`, codecs that work in every feature combination, users, and
//! hand-signed tokens for headers the codec would never produce.
#![allow(dead_code)]

pub mod example;
#[cfg(feature = "redis")]
pub mod redis_server;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use serde_json::Value;
use tower_auth::error::ErrorBody;
use tower_auth::token::TokenCodecBuilder;
use tower_auth::{
    Algorithm, AuthError, AuthLayer, Authenticated, Authenticator, Credentials, Key,
    MemoryUserStore, Scopes, SimpleUser, TokenCodec, UserStore,
};

/// The HS256 secret most tests sign with (32 bytes).
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Another 32-byte secret, for "foreign key" tokens.
pub const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";
/// The realm every test authenticator uses.
pub const REALM: &str = "test-realm";

/// A user store whose database is down; its error text is a secret.
pub struct FailingStore;

impl UserStore for FailingStore {
    type User = SimpleUser;
    type Error = std::io::Error;

    async fn find_by_subject(&self, _sub: &str) -> Result<Option<Arc<SimpleUser>>, std::io::Error> {
        Err(std::io::Error::other("db password=hunter2"))
    }

    async fn find_by_username(
        &self,
        _name: &str,
    ) -> Result<Option<Arc<SimpleUser>>, std::io::Error> {
        Err(std::io::Error::other("db password=hunter2"))
    }
}

/// Binds `127.0.0.1:0`, serves `app` in a task, returns `http://ADDR`.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("server runs");
    });
    format!("http://{addr}")
}

/// A reqwest client without a cookie store (tests send `Cookie` headers
/// themselves).
pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A codec builder that works with and without the crate's crypto features.
pub fn codec_builder(key: Key) -> TokenCodecBuilder {
    let b = TokenCodec::builder(key);
    #[cfg(not(any(feature = "aws_lc_rs", feature = "rust_crypto")))]
    let b = b.crypto_provider(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER);
    b
}

/// An HS256 codec over [`SECRET`], default settings.
pub fn hs256_codec() -> TokenCodec {
    codec_builder(Key::hs256(SECRET).unwrap()).build().unwrap()
}

/// Makes sure jsonwebtoken has a process-wide crypto provider, so
/// `jsonwebtoken::encode` can be called directly (building a codec installs
/// one).
pub fn ensure_provider() {
    let _ = hs256_codec();
}

/// The bytes of `tests/keys/NAME`.
pub fn key_file(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A signing key from `tests/keys/{stem}_private.pem` / `{stem}_public.pem`.
pub fn pem_key(alg: Algorithm, stem: &str) -> Key {
    Key::from_pem(
        alg,
        &key_file(&format!("{stem}_private.pem")),
        &key_file(&format!("{stem}_public.pem")),
    )
    .unwrap_or_else(|e| panic!("{alg:?} key {stem}: {e}"))
}

/// jsonwebtoken's encoding key for `tests/keys/{stem}_private.pem`.
pub fn encoding_key(alg: Algorithm, stem: &str) -> EncodingKey {
    let pem = key_file(&format!("{stem}_private.pem"));
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => panic!("not a PEM algorithm: {alg:?}"),
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A header as the codec would write it: `alg`, `typ: at+jwt`.
pub fn at_header(alg: Algorithm) -> Header {
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header
}

/// A valid payload for `sub`, expiring in an hour.
pub fn payload(sub: &str) -> Value {
    serde_json::json!({ "sub": sub, "exp": now() + 3600 })
}

/// Signs `payload` under `header` with `key` through jsonwebtoken.
pub fn sign_raw(header: &Header, payload: &Value, key: &EncodingKey) -> String {
    ensure_provider();
    jsonwebtoken::encode(header, payload, key).expect("jsonwebtoken::encode")
}

/// Signs `payload` under `header` with the HS256 [`SECRET`].
pub fn sign_hs256(header: &Header, payload: &Value) -> String {
    sign_raw(header, payload, &EncodingKey::from_secret(SECRET))
}

/// base64url (no padding) of `value`'s JSON.
pub fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A token whose header is arbitrary JSON, signed by hand as `alg` with `key`
/// (`None`: empty signature, as for `alg: none`).
pub fn sign_json_header(
    header: &Value,
    payload: &Value,
    signer: Option<(&EncodingKey, Algorithm)>,
) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(payload));
    let signature = match signer {
        Some((key, alg)) => {
            ensure_provider();
            jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap()
        }
        None => String::new(),
    };
    format!("{message}.{signature}")
}

/// A store with `johndoe` (scopes `me items`), `alice` (scope `me`) and the
/// disabled `bob`, all with the password hash `phc`.
pub fn users(phc: &str) -> MemoryUserStore<SimpleUser> {
    let store = MemoryUserStore::new();
    store.insert(SimpleUser::new("johndoe", phc).with_scopes(Scopes::parse("me items").unwrap()));
    store.insert(SimpleUser::new("alice", phc).with_scopes(Scopes::parse("me").unwrap()));
    let mut bob = SimpleUser::new("bob", phc).with_scopes(Scopes::parse("me items").unwrap());
    bob.active = false;
    store.insert(bob);
    store
}

/// The test-only response header that names why a request was refused
/// ([`AuthError::reason_code`]), set by [`reason_header`].
pub const REASON_HEADER: &str = "x-test-reason";

/// A `RenderError` hook that copies the refusal's reason code into
/// [`REASON_HEADER`], so a test can tell `bad_signature` from `expired` from
/// `revoked` where the body says the same. Test servers only: the crate
/// never sends it (a header naming the failed check would tell an attacker
/// which forgery came closest).
pub fn reason_header(
    error: &AuthError,
    mut response: axum::http::Response<ErrorBody>,
) -> axum::http::Response<ErrorBody> {
    response.headers_mut().insert(
        REASON_HEADER,
        axum::http::HeaderValue::from_static(error.reason_code()),
    );
    response
}

/// An authenticator over `store` and `codec` with [`REALM`], `credentials`
/// and the [`reason_header`] hook.
pub fn authenticator(
    store: MemoryUserStore<SimpleUser>,
    codec: TokenCodec,
    credentials: Credentials,
) -> Authenticator<SimpleUser> {
    Authenticator::builder(store, codec)
        .realm(REALM)
        .credentials(credentials)
        .render_errors(reason_header)
        .build()
        .unwrap()
}

/// Issues a token for `sub` with `scopes` and token version 0.
pub fn token_for(codec: &TokenCodec, sub: &str, scopes: &str) -> String {
    codec
        .issue(&codec.new_claims(sub, Scopes::parse(scopes).unwrap(), 0, ()))
        .unwrap()
}

/// The handler of most protected routes: the identity's username, read from
/// the extension the layer inserts (works without the `axum` feature).
pub async fn whoami(axum::Extension(auth): axum::Extension<Authenticated<SimpleUser>>) -> String {
    auth.user.username.clone()
}

/// `GET /me` -> [`whoami`], behind `AuthLayer::required(auth)`.
pub fn protected_app(auth: Authenticator<SimpleUser>) -> Router {
    Router::new()
        .route("/me", axum::routing::get(whoami))
        .layer(AuthLayer::required(auth))
}

/// Serves [`protected_app`] over the default users (johndoe, alice, bob) and
/// `codec`, bearer only.
pub async fn serve_protected(codec: TokenCodec) -> String {
    serve(protected_app(authenticator(
        users("unused"),
        codec,
        Credentials::bearer(),
    )))
    .await
}

/// A response taken apart: status, `WWW-Authenticate`, the headers, the raw
/// body and the body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub challenge: Option<String>,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.bytes().await.unwrap().to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            challenge,
            headers,
            bytes,
            json,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Why the server refused the request ([`REASON_HEADER`]); empty when
    /// it did not say (no [`reason_header`] hook, or no refusal).
    pub fn reason(&self) -> &str {
        self.headers
            .get(REASON_HEADER)
            .map_or("", |value| value.to_str().unwrap())
    }

    /// Asserts the refusal's reason code.
    #[track_caller]
    pub fn assert_reason(&self, reason: &str) {
        assert_eq!(self.reason(), reason, "{self:?}");
    }

    /// 401 `invalid_token` ([`assert_invalid_token`](Self::assert_invalid_token))
    /// refused for `reason`.
    #[track_caller]
    pub fn assert_invalid_token_because(&self, reason: &str) {
        self.assert_invalid_token();
        self.assert_reason(reason);
    }

    /// `status` with the body's `error` code and the reason code.
    #[track_caller]
    pub fn assert_refused(&self, status: u16, code: &str, reason: &str) {
        assert_eq!(self.status, status, "{self:?}");
        self.assert_error_body(code);
        self.assert_reason(reason);
    }

    /// The body's `error` field.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    /// The body's `error_description` field.
    pub fn description(&self) -> &str {
        self.json["error_description"].as_str().unwrap_or("")
    }

    /// Asserts the body is exactly `{"error", "error_description"}` with
    /// this `error`.
    pub fn assert_error_body(&self, code: &str) {
        let object = self
            .json
            .as_object()
            .unwrap_or_else(|| panic!("not a JSON object: {:?}", self.text()));
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error", "error_description"], "{:?}", self.text());
        assert_eq!(self.error(), code, "{:?}", self.text());
        assert!(!self.description().is_empty());
    }

    /// 401 with exactly `Bearer realm="REALM"`: no credentials.
    pub fn assert_no_credentials(&self) {
        assert_eq!(self.status, 401, "{self:?}");
        assert_eq!(
            self.challenge.as_deref(),
            Some(format!("Bearer realm=\"{REALM}\"").as_str())
        );
        let object = self.json.as_object().expect("JSON body");
        assert!(object.contains_key("error") && object.contains_key("error_description"));
        assert_ne!(self.error(), "invalid_token");
    }

    /// 401 `invalid_token`, challenge and body agreeing on the description.
    pub fn assert_invalid_token(&self) {
        assert_eq!(self.status, 401, "{self:?}");
        self.assert_error_body("invalid_token");
        assert_eq!(
            self.challenge.as_deref(),
            Some(challenge("invalid_token", self.description()).as_str()),
        );
    }

    /// 400 `invalid_request`, challenge and body agreeing.
    pub fn assert_invalid_request(&self) {
        assert_eq!(self.status, 400, "{self:?}");
        self.assert_error_body("invalid_request");
        assert_eq!(
            self.challenge.as_deref(),
            Some(challenge("invalid_request", self.description()).as_str()),
        );
    }
}

/// The exact challenge for an error code and description.
pub fn challenge(code: &str, description: &str) -> String {
    format!("Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{description}\"")
}

/// `GET {base}{path}` with `Authorization: Bearer {token}`.
pub async fn get_bearer(base: &str, path: &str, token: &str) -> Reply {
    Reply::from(
        client()
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `GET {base}{path}` with no credentials.
pub async fn get_anonymous(base: &str, path: &str) -> Reply {
    Reply::from(client().get(format!("{base}{path}")).send().await.unwrap()).await
}
