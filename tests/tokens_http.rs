//! Section 2 of issue 2: what a token must be to pass, over real HTTP.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tower_auth::token::Audience;
use tower_auth::{Algorithm, AuthLayer, Credentials, Key, Scopes, TokenCodec};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";

/// Every algorithm the crate supports, with its key.
fn keys() -> Vec<(Algorithm, Key)> {
    let mut keys = vec![
        (
            Algorithm::HS256,
            Key::hmac(Algorithm::HS256, SECRET).unwrap(),
        ),
        (
            Algorithm::HS384,
            Key::hmac(Algorithm::HS384, &[7; 48]).unwrap(),
        ),
        (
            Algorithm::HS512,
            Key::hmac(Algorithm::HS512, &[9; 64]).unwrap(),
        ),
    ];
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        keys.push((alg, pem_key(alg, "rsa")));
    }
    keys.push((Algorithm::ES256, pem_key(Algorithm::ES256, "ec256")));
    keys.push((Algorithm::ES384, pem_key(Algorithm::ES384, "ec384")));
    keys.push((Algorithm::EdDSA, pem_key(Algorithm::EdDSA, "ed25519")));
    keys
}

#[tokio::test]
async fn every_algorithm_issues_a_token_that_authenticates_a_request() {
    for (alg, key) in keys() {
        let codec = codec_builder(key).build().unwrap();
        let base = serve_protected(codec.clone()).await;
        let token = token_for(&codec, "johndoe", "me");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let reply = get_bearer(&base, "/me", &token).await;
        assert_eq!(reply.status, 200, "{alg:?}: {reply:?}");
        assert_eq!(reply.text(), "johndoe");
        // Tampering with the payload breaks the signature, for every alg.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64_json(&json!({"sub": "alice", "exp": now() + 3600}));
        parts[1] = &forged;
        get_bearer(&base, "/me", &parts.join("."))
            .await
            .assert_invalid_token_because("bad_signature");
    }
}

#[tokio::test]
async fn rotated_out_hmac_key_still_verifies_through_also_verify() {
    let old = Key::hs256(OTHER_SECRET).unwrap().with_kid("old");
    let new = Key::hs256(SECRET).unwrap().with_kid("new");
    let old_codec = codec_builder(old.clone()).build().unwrap();
    let codec = codec_builder(new).also_verify(old).build().unwrap();
    let base = serve_protected(codec.clone()).await;

    let old_token = token_for(&old_codec, "johndoe", "");
    assert_eq!(
        jsonwebtoken::decode_header(&old_token)
            .unwrap()
            .kid
            .as_deref(),
        Some("old")
    );
    assert_eq!(get_bearer(&base, "/me", &old_token).await.status, 200);

    let new_token = token_for(&codec, "johndoe", "");
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .as_deref(),
        Some("new")
    );
    assert_eq!(get_bearer(&base, "/me", &new_token).await.status, 200);
}

#[tokio::test]
async fn rotated_out_rsa_key_verifies_from_its_public_pem_only() {
    let old_signer = pem_key(Algorithm::RS256, "rsa").with_kid("2025");
    let old_public = Key::verify_only_pem(Algorithm::RS256, &key_file("rsa_public.pem"))
        .unwrap()
        .with_kid("2025");
    let new = pem_key(Algorithm::RS256, "rsa2").with_kid("2026");
    let old_codec = codec_builder(old_signer).build().unwrap();
    let codec = codec_builder(new).also_verify(old_public).build().unwrap();
    let base = serve_protected(codec.clone()).await;
    assert_eq!(
        get_bearer(&base, "/me", &token_for(&old_codec, "johndoe", ""))
            .await
            .status,
        200
    );
    assert_eq!(
        get_bearer(&base, "/me", &token_for(&codec, "johndoe", ""))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unknown_or_missing_kid_is_invalid_token_not_500() {
    let codec = codec_builder(Key::hs256(SECRET).unwrap().with_kid("new"))
        .also_verify(Key::hs256(OTHER_SECRET).unwrap().with_kid("old"))
        .build()
        .unwrap();
    let base = serve_protected(codec).await;
    let mut header = at_header(Algorithm::HS256);
    header.kid = Some("ghost".into());
    get_bearer(&base, "/me", &sign_hs256(&header, &payload("johndoe")))
        .await
        .assert_invalid_token_because("unknown_key");
    // No kid at all, at a codec whose keys all have one.
    get_bearer(
        &base,
        "/me",
        &sign_hs256(&at_header(Algorithm::HS256), &payload("johndoe")),
    )
    .await
    .assert_invalid_token_because("unknown_key");
}

#[tokio::test]
async fn alg_none_in_any_spelling_is_refused() {
    let base = serve_protected(hs256_codec()).await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = sign_json_header(
            &json!({"alg": alg, "typ": "at+jwt"}),
            &payload("johndoe"),
            None,
        );
        get_bearer(&base, "/me", &token)
            .await
            .assert_invalid_token_because("malformed");
        // With a (valid HS256) signature over the same bytes too.
        let signed = sign_json_header(
            &json!({"alg": alg, "typ": "at+jwt"}),
            &payload("johndoe"),
            Some((&EncodingKey::from_secret(SECRET), Algorithm::HS256)),
        );
        get_bearer(&base, "/me", &signed)
            .await
            .assert_invalid_token_because("malformed");
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_pem_is_refused_by_an_rs256_codec() {
    let codec = codec_builder(pem_key(Algorithm::RS256, "rsa"))
        .build()
        .unwrap();
    let base = serve_protected(codec).await;
    let public_pem = key_file("rsa_public.pem");
    let token = sign_raw(
        &at_header(Algorithm::HS256),
        &payload("johndoe"),
        &EncodingKey::from_secret(&public_pem),
    );
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("algorithm_mismatch");
}

#[tokio::test]
async fn a_header_naming_another_algorithm_of_the_same_family_is_refused() {
    let base = serve_protected(hs256_codec()).await;
    // Same secret, HS384 instead of the pinned HS256.
    let token = sign_raw(
        &at_header(Algorithm::HS384),
        &payload("johndoe"),
        &EncodingKey::from_secret(SECRET),
    );
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("algorithm_mismatch");
    // RS256 codec, PS256 token signed with the right RSA key.
    let codec = codec_builder(pem_key(Algorithm::RS256, "rsa"))
        .build()
        .unwrap();
    let base = serve_protected(codec).await;
    let token = sign_raw(
        &at_header(Algorithm::PS256),
        &payload("johndoe"),
        &encoding_key(Algorithm::PS256, "rsa"),
    );
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("algorithm_mismatch");
}

#[tokio::test]
async fn a_token_without_typ_at_jwt_is_refused() {
    let base = serve_protected(hs256_codec()).await;
    // The control: the same payload with typ at+jwt passes.
    let good = sign_hs256(&at_header(Algorithm::HS256), &payload("johndoe"));
    assert_eq!(get_bearer(&base, "/me", &good).await.status, 200);

    let mut jwt = Header::new(Algorithm::HS256);
    jwt.typ = Some("JWT".into());
    get_bearer(&base, "/me", &sign_hs256(&jwt, &payload("johndoe")))
        .await
        .assert_invalid_token_because("wrong_type");
    let mut untyped = Header::new(Algorithm::HS256);
    untyped.typ = None;
    get_bearer(&base, "/me", &sign_hs256(&untyped, &payload("johndoe")))
        .await
        .assert_invalid_token_because("wrong_type");
    let mut refresh = Header::new(Algorithm::HS256);
    refresh.typ = Some("rt+jwt".into());
    get_bearer(&base, "/me", &sign_hs256(&refresh, &payload("johndoe")))
        .await
        .assert_invalid_token_because("wrong_type");
}

#[tokio::test]
async fn a_crit_header_is_refused() {
    let base = serve_protected(hs256_codec()).await;
    let mut header = at_header(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    get_bearer(&base, "/me", &sign_hs256(&header, &payload("johndoe")))
        .await
        .assert_invalid_token_because("critical_header");
    // An empty crit list is refused too.
    let token = sign_json_header(
        &json!({"alg": "HS256", "typ": "at+jwt", "crit": []}),
        &payload("johndoe"),
        Some((&EncodingKey::from_secret(SECRET), Algorithm::HS256)),
    );
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("critical_header");
}

#[tokio::test]
async fn jku_and_jwk_headers_do_not_change_which_key_verifies() {
    let codec = codec_builder(pem_key(Algorithm::RS256, "rsa"))
        .build()
        .unwrap();
    let base = serve_protected(codec).await;
    let foreign = encoding_key(Algorithm::RS256, "rsa2");
    ensure_provider();
    let foreign_jwk = Jwk::from_encoding_key(&foreign, Algorithm::RS256).unwrap();

    // Signed with a foreign key that the header embeds and points to.
    let mut header = at_header(Algorithm::RS256);
    header.jwk = Some(foreign_jwk.clone());
    header.jku = Some("https://attacker.invalid/jwks.json".into());
    header.x5u = Some("https://attacker.invalid/cert.pem".into());
    get_bearer(
        &base,
        "/me",
        &sign_raw(&header, &payload("johndoe"), &foreign),
    )
    .await
    .assert_invalid_token_because("bad_signature");

    // Signed with the configured key: the same headers are ignored, and the
    // configured key verifies.
    let own = encoding_key(Algorithm::RS256, "rsa");
    let reply = get_bearer(&base, "/me", &sign_raw(&header, &payload("johndoe"), &own)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn an_expired_token_is_refused_with_a_description_that_says_so() {
    let codec = hs256_codec();
    let base = serve_protected(codec.clone()).await;
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());
    claims.exp = now() - 10;
    claims.iat = Some(now() - 1000);
    let reply = get_bearer(&base, "/me", &codec.issue(&claims).unwrap()).await;
    reply.assert_invalid_token_because("expired");
    assert!(reply.description().contains("expired"), "{reply:?}");
    assert!(
        reply.challenge.as_deref().unwrap().contains("expired"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_token_with_nbf_in_the_future_is_refused() {
    let codec = hs256_codec();
    let base = serve_protected(codec.clone()).await;
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());
    claims.nbf = Some(now() + 600);
    get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
        .await
        .assert_invalid_token_because("not_yet_valid");
    // nbf in the past is fine.
    claims.nbf = Some(now() - 600);
    assert_eq!(
        get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn exp_and_sub_are_required() {
    let base = serve_protected(hs256_codec()).await;
    for payload in [
        json!({"sub": "johndoe"}),
        json!({"exp": now() + 3600}),
        json!({"sub": "johndoe", "exp": "tomorrow"}),
        json!({"sub": 42, "exp": now() + 3600}),
    ] {
        get_bearer(
            &base,
            "/me",
            &sign_hs256(&at_header(Algorithm::HS256), &payload),
        )
        .await
        .assert_invalid_token_because("malformed");
    }
}

#[tokio::test]
async fn leeway_is_honoured_at_the_boundary() {
    let codec = codec_builder(Key::hs256(SECRET).unwrap())
        .leeway(Duration::from_secs(120))
        .build()
        .unwrap();
    let base = serve_protected(codec.clone()).await;
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());

    // Expired by less than the leeway: accepted.
    claims.exp = now() - 30;
    let reply = get_bearer(&base, "/me", &codec.issue(&claims).unwrap()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Expired by more than the leeway: refused.
    claims.exp = now() - 600;
    get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
        .await
        .assert_invalid_token_because("expired");
    // nbf ahead by less than the leeway: accepted; by more: refused.
    claims.exp = now() + 3600;
    claims.nbf = Some(now() + 30);
    assert_eq!(
        get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
            .await
            .status,
        200
    );
    claims.nbf = Some(now() + 600);
    get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
        .await
        .assert_invalid_token_because("not_yet_valid");

    // The default leeway is zero: a second-old expiry is refused.
    let strict = hs256_codec();
    let base = serve_protected(strict.clone()).await;
    let mut claims = strict.new_claims("johndoe", Scopes::none(), 0, ());
    claims.exp = now() - 1;
    get_bearer(&base, "/me", &strict.issue(&claims).unwrap())
        .await
        .assert_invalid_token_because("expired");
}

fn iss_aud_codec() -> TokenCodec {
    codec_builder(Key::hs256(SECRET).unwrap())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()
        .unwrap()
}

/// A raw HS256 access token with iss/aud set, then `change` applied.
fn raw_iss_aud(change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let mut payload = json!({
        "sub": "johndoe",
        "exp": now() + 3600,
        "iss": ISSUER,
        "aud": AUDIENCE,
    });
    change(payload.as_object_mut().unwrap());
    sign_hs256(&at_header(Algorithm::HS256), &payload)
}

#[tokio::test]
async fn configured_issuer_and_audience_are_required_and_strictly_typed() {
    let codec = iss_aud_codec();
    let base = serve_protected(codec.clone()).await;

    // The control: as issued, and as signed by hand.
    let issued = token_for(&codec, "johndoe", "");
    assert_eq!(get_bearer(&base, "/me", &issued).await.status, 200);
    assert_eq!(
        get_bearer(&base, "/me", &raw_iss_aud(|_| {})).await.status,
        200
    );

    // What is wrong, the reason code, the token. A wrongly typed claim
    // fails deserialization (`malformed`) before any comparison.
    let refused: Vec<(&str, &str, String)> = vec![
        (
            "missing iss",
            "wrong_issuer",
            raw_iss_aud(|p| {
                p.remove("iss");
            }),
        ),
        (
            "wrong iss",
            "wrong_issuer",
            raw_iss_aud(|p| {
                p.insert("iss".into(), json!("https://evil.test"));
            }),
        ),
        (
            "iss array with the right value",
            "malformed",
            raw_iss_aud(|p| {
                p.insert("iss".into(), json!([ISSUER]));
            }),
        ),
        (
            "missing aud",
            "wrong_audience",
            raw_iss_aud(|p| {
                p.remove("aud");
            }),
        ),
        (
            "wrong aud",
            "wrong_audience",
            raw_iss_aud(|p| {
                p.insert("aud".into(), json!("other"));
            }),
        ),
        (
            "aud as a number",
            "malformed",
            raw_iss_aud(|p| {
                p.insert("aud".into(), json!(42));
            }),
        ),
        (
            "aud array without the right value",
            "wrong_audience",
            raw_iss_aud(|p| {
                p.insert("aud".into(), json!(["other", "more"]));
            }),
        ),
    ];
    for (what, reason, token) in refused {
        let reply = get_bearer(&base, "/me", &token).await;
        assert_eq!(reply.status, 401, "{what}: {reply:?}");
        reply.assert_invalid_token();
        assert_eq!(reply.reason(), reason, "{what}: {reply:?}");
    }

    // Through the codec's own claims type: iss/aud removed or wrong.
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());
    claims.iss = None;
    get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
        .await
        .assert_invalid_token_because("wrong_issuer");
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());
    claims.aud = Some(Audience::One("other".into()));
    get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
        .await
        .assert_invalid_token_because("wrong_audience");
}

#[tokio::test]
async fn aud_array_containing_the_configured_audience_is_accepted() {
    let codec = iss_aud_codec();
    let base = serve_protected(codec.clone()).await;
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());
    claims.aud = Some(Audience::Many(vec!["other".into(), AUDIENCE.into()]));
    let reply = get_bearer(&base, "/me", &codec.issue(&claims).unwrap()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let raw = raw_iss_aud(|p| {
        p.insert("aud".into(), json!(["x", AUDIENCE]));
    });
    assert_eq!(get_bearer(&base, "/me", &raw).await.status, 200);
}

#[tokio::test]
async fn a_token_with_aud_is_refused_by_a_codec_without_audience() {
    let codec = hs256_codec();
    let base = serve_protected(codec.clone()).await;
    let mut claims = codec.new_claims("johndoe", Scopes::none(), 0, ());
    claims.aud = Some(Audience::One("api".into()));
    get_bearer(&base, "/me", &codec.issue(&claims).unwrap())
        .await
        .assert_invalid_token_because("wrong_audience");
}

/// `/me` behind the layer; `/scoped` additionally requires scope `me`.
async fn serve_scoped(codec: TokenCodec) -> String {
    let auth = authenticator(users("unused"), codec, Credentials::bearer());
    let app = Router::new()
        .route(
            "/scoped",
            get(whoami).route_layer(auth.require_scopes(["me"]).unwrap()),
        )
        .route("/me", get(whoami))
        .layer(AuthLayer::required(auth));
    serve(app).await
}

#[tokio::test]
async fn scope_and_scp_together_are_refused() {
    let base = serve_scoped(hs256_codec()).await;
    let mut both = payload("johndoe");
    both["scope"] = json!("me");
    both["scp"] = json!(["me"]);
    let token = sign_hs256(&at_header(Algorithm::HS256), &both);
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("conflicting_scopes");
    get_bearer(&base, "/scoped", &token)
        .await
        .assert_invalid_token_because("conflicting_scopes");
}

#[tokio::test]
async fn scp_array_alone_grants_scopes() {
    let base = serve_scoped(hs256_codec()).await;
    let mut scp = payload("johndoe");
    scp["scp"] = json!(["items", "me"]);
    let reply = get_bearer(
        &base,
        "/scoped",
        &sign_hs256(&at_header(Algorithm::HS256), &scp),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The control: without the scope the route answers 403.
    let mut without = payload("johndoe");
    without["scp"] = json!(["items"]);
    let reply = get_bearer(
        &base,
        "/scoped",
        &sign_hs256(&at_header(Algorithm::HS256), &without),
    )
    .await;
    reply.assert_refused(403, "insufficient_scope", "insufficient_scope");
    // A space-separated `scope` string grants the same.
    let mut scope = payload("johndoe");
    scope["scope"] = json!("items me");
    let reply = get_bearer(
        &base,
        "/scoped",
        &sign_hs256(&at_header(Algorithm::HS256), &scope),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn hmac_secrets_shorter_than_32_bytes_are_refused_when_built() {
    use tower_auth::ConfigError;
    assert!(matches!(
        Key::hs256(&[1; 31]),
        Err(ConfigError::SecretTooShort)
    ));
    assert!(matches!(Key::hs256(b""), Err(ConfigError::SecretTooShort)));
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert!(matches!(
            Key::hmac(alg, &[1; 16]),
            Err(ConfigError::SecretTooShort)
        ));
        assert!(Key::hmac(alg, &[1; 32]).is_ok());
    }
    assert!(codec_builder(Key::hs256(&[1; 32]).unwrap()).build().is_ok());
}

/// Signs a token whose header and payload are raw JSON text (for duplicate
/// member names, which `serde_json::Value` cannot hold).
fn sign_raw_text(header: &str, payload: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let message = format!("{}.{}", b64(header), b64(payload));
    ensure_provider();
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn duplicate_claim_names_never_resolve_to_the_first_value() {
    // RFC 7519 §4: reject, or take the lexically last member.
    let base = serve_protected(hs256_codec()).await;
    let exp = now() + 3600;
    let token = sign_raw_text(
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        &format!(r#"{{"sub":"alice","exp":{exp},"sub":"johndoe"}}"#),
    );
    let reply = get_bearer(&base, "/me", &token).await;
    assert!(
        reply.status == 401 || reply.text() == "johndoe",
        "{reply:?}"
    );
    assert_ne!(reply.text(), "alice");
}

#[tokio::test]
async fn duplicate_alg_in_the_header_cannot_smuggle_none() {
    let base = serve_protected(hs256_codec()).await;
    let token = sign_raw_text(
        r#"{"alg":"HS256","typ":"at+jwt","alg":"none"}"#,
        &payload("johndoe").to_string(),
    );
    get_bearer(&base, "/me", &token)
        .await
        .assert_invalid_token_because("malformed");
}
