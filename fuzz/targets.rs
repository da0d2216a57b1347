//! The fuzz targets' bodies, shared by the cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` and by `tests/fuzz_corpus.rs`, which replays the
//! kept corpus as an ordinary test (`#[path]`-included by both).
//!
//! Each function takes arbitrary bytes, must never panic, and asserts the
//! invariants the crate promises about what it accepts.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, COOKIE, ORIGIN, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Request};
use tower_auth::credentials::SessionCookie;
use tower_auth::grant::PasswordGrant;
use tower_auth::password::ParamCeiling;
use tower_auth::token::TokenCodecBuilder;
use tower_auth::{
    Algorithm, Claims, CredentialKind, Credentials, Key, OriginGuard, PasswordError,
    PasswordHasher, Precedence, TokenCodec, TokenSource,
};

/// The HS256 secret the token target signs with (32 bytes).
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// A second secret, known to the strict codec under kid `old`.
pub const OLD_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";

fn codec_builder(key: Key) -> TokenCodecBuilder {
    // Works in every feature build of the main crate and in the fuzz crate.
    TokenCodec::builder(key).crypto_provider(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER)
}

/// HS256, default settings (no kid, no issuer, no audience, 0 s leeway).
static PLAIN: LazyLock<TokenCodec> = LazyLock::new(|| {
    codec_builder(Key::hs256(SECRET).expect("32-byte secret"))
        .build()
        .expect("valid codec")
});

/// HS256 with kids, a second verify-only key, issuer, audience and leeway.
static STRICT: LazyLock<TokenCodec> = LazyLock::new(|| {
    codec_builder(Key::hs256(SECRET).expect("secret").with_kid("new"))
        .also_verify(Key::hs256(OLD_SECRET).expect("secret").with_kid("old"))
        .issuer("https://issuer.example")
        .audience("api")
        .leeway(Duration::from_secs(30))
        .build()
        .expect("valid codec")
});

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Splits at the first `\n`: (before, after); no `\n`: (all, empty).
fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Credential extraction (and the Origin guard) from arbitrary header bytes.
///
/// Input: a flags line, then one header per line, each prefixed by a tag:
/// `a` Authorization, `c` Cookie, `u` Upgrade, `p` Sec-WebSocket-Protocol,
/// `o` Origin, `s` Sec-Fetch-Site, `q` the query string (`/?` + rest).
/// Flags (first byte): bit 0 POST, bit 1 first-in-order precedence, bit 2
/// query everywhere, bit 3 reversed source order, bit 4 a 64-byte token cap.
pub fn credentials(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let flags = lines.next().and_then(|l| l.first().copied()).unwrap_or(0);
    let method = if flags & 1 != 0 {
        Method::POST
    } else {
        Method::GET
    };
    let mut builder = Request::builder().method(method);
    let mut uri_set = false;
    for line in lines {
        let Some((tag, value)) = line.split_first() else {
            continue;
        };
        let name: HeaderName = match tag {
            b'a' => AUTHORIZATION,
            b'c' => COOKIE,
            b'u' => UPGRADE,
            b'p' => SEC_WEBSOCKET_PROTOCOL,
            b'o' => ORIGIN,
            b's' => HeaderName::from_static("sec-fetch-site"),
            b'q' if !uri_set => {
                let mut uri = b"/?".to_vec();
                uri.extend_from_slice(value);
                if let Ok(uri) = http::Uri::try_from(uri) {
                    builder = builder.uri(uri);
                    uri_set = true;
                }
                continue;
            }
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();

    let max = if flags & 16 != 0 { 64 } else { 8 * 1024 };
    let mut sources = vec![
        TokenSource::Bearer,
        TokenSource::Query("access_token".into()),
        TokenSource::Cookie(SessionCookie::new("__Host-at")),
        TokenSource::Subprotocol("access_token".into()),
    ];
    if flags & 8 != 0 {
        sources.reverse();
    }
    let mut credentials = Credentials::from_sources(sources);
    credentials = credentials.max_token_len(max);
    if flags & 2 != 0 {
        credentials = credentials.precedence(Precedence::FirstInOrder);
    }
    if flags & 4 != 0 {
        credentials = credentials.allow_query_everywhere();
    }

    let kind = match credentials.extract(&parts) {
        Ok(Some(found)) => {
            assert!(!found.token.is_empty(), "an empty token is absent");
            assert!(found.token.len() <= max, "the cap holds");
            assert!(is_token68(&found.token), "only token68 passes");
            let debug = format!("{found:?}");
            assert!(
                found.token.len() < 12 || !debug.contains(found.token.as_ref()),
                "Debug redacts the token"
            );
            found.kind
        }
        Ok(None) => CredentialKind::Cookie,
        Err(err) => {
            // Error texts are fixed: nothing the client sent comes back.
            let _ = err.to_string();
            CredentialKind::Cookie
        }
    };
    let allowed = ["https://app.example.com", "http://localhost:5173"];
    let guard = OriginGuard::new(allowed).expect("valid origins");
    let verdict = guard.check(&parts, kind);
    if kind != CredentialKind::Cookie {
        assert!(verdict.is_ok(), "only the cookie is ambient: {verdict:?}");
    } else if verdict.is_ok() {
        let upgrade = tower_auth::credentials::is_websocket_upgrade(&parts);
        if upgrade || parts.method == Method::POST {
            assert!(
                origin_may_pass(&parts, &allowed, upgrade),
                "a cookie POST or upgrade passed the guard without same-origin or an allowed origin"
            );
        }
    }
    let _ = guard.check_session_change(&parts);
}

/// What must hold for a cookie-authenticated unsafe request or upgrade to
/// pass, told apart from the guard's own code: `Sec-Fetch-Site:
/// same-origin`, or one `Origin` that starts like an allowed origin (any
/// case) — and for an upgrade, an `Origin` that is present and not `null`.
fn origin_may_pass(parts: &http::request::Parts, allowed: &[&str], upgrade: bool) -> bool {
    let single = |name: &str| {
        let mut values = parts.headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => {
                Some(String::from_utf8_lossy(value.as_bytes()).trim().to_owned())
            }
            _ => None,
        }
    };
    let origin = single("origin");
    if upgrade && origin.as_deref().is_none_or(|o| o == "null") {
        return false;
    }
    single("sec-fetch-site").as_deref() == Some("same-origin")
        || origin.is_some_and(|o| {
            let o = o.to_ascii_lowercase();
            allowed.iter().any(|a| o.starts_with(a))
        })
}

/// Token verification of arbitrary strings.
///
/// First byte even: the rest is the token text. Odd: the rest is
/// `header JSON \n payload JSON`, signed with [`SECRET`] as HS256, so the
/// claim checks behind the signature are reached. Anything that verifies
/// is re-issued and must verify to the same claims.
pub fn token(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    // Building a codec installs the process-wide crypto provider that
    // `jsonwebtoken::crypto::sign` needs.
    let codecs = [&*PLAIN, &*STRICT];
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, payload) = split2(rest);
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let secret = if mode % 4 == 3 { OLD_SECRET } else { SECRET };
        let Ok(signature) = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(secret),
            Algorithm::HS256,
        ) else {
            return;
        };
        format!("{message}.{signature}")
    };
    for codec in codecs {
        if let Ok(claims) = codec.verify::<()>(&token) {
            check_verified(codec, &claims);
        }
        let _ = codec.verify::<std::collections::HashMap<String, serde_json::Value>>(&token);
    }
}

fn check_verified(codec: &TokenCodec, claims: &Claims<()>) {
    let now = now();
    assert!(claims.exp + 60 > now, "an expired token was accepted");
    if let Some(nbf) = claims.nbf {
        assert!(nbf <= now + 60, "a not-yet-valid token was accepted");
    }
    // Round trip, away from the 1-second boundary of `exp`.
    if claims.exp > now + 5 && claims.nbf.is_none_or(|nbf| nbf + 5 < now) {
        let token = codec
            .issue(claims)
            .expect("verified claims can be re-issued");
        let again = codec.verify::<()>(&token).expect("re-issued claims verify");
        assert_eq!(&again, claims, "claims round-trip");
    }
}

/// The login form: `Content-Type \n body`. Whatever parses re-encodes and
/// parses to the same grant.
pub fn login_form(data: &[u8]) {
    let (content_type, body) = split2(data);
    let content_type = HeaderValue::from_bytes(content_type).ok();
    let Ok(grant) = PasswordGrant::from_form(content_type.as_ref(), body) else {
        return;
    };
    let mut fields = vec![
        ("grant_type", "password".to_owned()),
        ("username", grant.username.clone()),
        ("password", grant.password.clone()),
    ];
    if let Some(scope) = &grant.scope {
        fields.push(("scope", scope.to_string()));
    }
    let encoded = serde_urlencoded::to_string(&fields).expect("strings encode");
    let form = HeaderValue::from_static("application/x-www-form-urlencoded");
    let again =
        PasswordGrant::from_form(Some(&form), encoded.as_bytes()).expect("re-encoded form parses");
    assert_eq!(again.username, grant.username);
    assert_eq!(again.password, grant.password);
    assert_eq!(again.scope, grant.scope);
}

/// Cheap argon2id parameters and a ceiling just above them: verification
/// never costs more than m = 64 KiB, t = 2, p = 1.
static TINY: LazyLock<PasswordHasher> = LazyLock::new(|| {
    PasswordHasher::builder()
        .params(8, 1, 1)
        .ceiling(ParamCeiling {
            max_m_cost: 64,
            max_t_cost: 2,
            max_p_cost: 1,
        })
        .max_concurrency(1)
        .build()
        .expect("tiny parameters are valid")
});

static DEFAULT_HASHER: LazyLock<PasswordHasher> = LazyLock::new(PasswordHasher::new);

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
});

/// PHC verification: `password \n stored`. The stored string is checked
/// by `needs_rehash` (default and tiny hashers) and verified by the tiny
/// hasher, whose ceiling keeps argon2 cheap; a string that parses with
/// parameters above that ceiling must be refused before argon2 runs.
/// First byte `0`: hash the rest as a password with the tiny parameters; it
/// must verify, need no rehash, and its PHC string must re-serialize as is.
pub fn phc(data: &[u8]) {
    if let Some((0, password)) = data.split_first() {
        let password = String::from_utf8_lossy(password);
        let Ok(hash) = RUNTIME.block_on(TINY.hash(&password)) else {
            assert!(password.len() > tower_auth::password::DEFAULT_MAX_PASSWORD_LEN);
            return;
        };
        assert!(!TINY.needs_rehash(&hash));
        let parsed = argon2::password_hash::phc::PasswordHash::new(&hash).expect("our hash parses");
        assert_eq!(parsed.to_string(), hash, "PHC round trip");
        assert_eq!(RUNTIME.block_on(TINY.verify(&password, &hash)), Ok(true));
        return;
    }
    let (password, stored) = split2(data);
    let password = String::from_utf8_lossy(password);
    let stored = String::from_utf8_lossy(stored);
    let _ = DEFAULT_HASHER.needs_rehash(&stored);
    let _ = TINY.needs_rehash(&stored);
    let above_ceiling = argon2::password_hash::phc::PasswordHash::new(&stored)
        .ok()
        .and_then(|hash| argon2::Params::try_from(&hash).ok())
        .is_some_and(|p| p.m_cost() > 64 || p.t_cost() > 2 || p.p_cost() > 1);
    let result = RUNTIME.block_on(TINY.verify(&password, &stored));
    if above_ceiling {
        assert!(
            matches!(
                result,
                Err(PasswordError::AboveCeiling)
                    | Err(PasswordError::MalformedHash)
                    // The length cap is checked first; it is as cheap.
                    | Err(PasswordError::TooLong)
            ),
            "argon2 ran above the ceiling: {result:?}"
        );
    }
}
