//! A hyper 1 server with no tower at all: the handler calls
//! `Authenticator::authenticate` on the request parts and renders failures
//! with `Authenticator::error_response` — the same road and the same
//! answers as the layer.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tower_auth::{Authenticator, Key, MemoryUserStore, Scopes, SimpleUser, SlidingExpiry};

async fn handle(
    auth: Authenticator<SimpleUser>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, _body) = request.into_parts();
    let identity = match auth.authenticate(&parts).await {
        Ok(identity) => identity,
        Err(err) => return Ok(auth.error_response(&err)),
    };
    let mut response = Response::new(Full::new(Bytes::from(identity.claims.sub.clone())));
    auth.apply_sliding_expiry(&identity.claims, identity.credential, &mut response)
        .await;
    Ok(response)
}

/// Serves `auth` with hyper alone on 127.0.0.1:0, each request through
/// `handler`; returns `http://ADDR`.
async fn serve_with<F, Fut>(auth: Authenticator<SimpleUser>, handler: F) -> String
where
    F: Fn(Authenticator<SimpleUser>, Request<Incoming>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let auth = auth.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| handler(auth.clone(), request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn serve(auth: Authenticator<SimpleUser>) -> String {
    serve_with(auth, handle).await
}

fn authenticator() -> Authenticator<SimpleUser> {
    let users = MemoryUserStore::new();
    users.insert(SimpleUser::new("johndoe", "unused"));
    let codec = common::codec_builder(Key::hs256(common::SECRET).unwrap())
        .access_lifetime(Duration::from_secs(3600))
        .build()
        .unwrap();
    Authenticator::builder(users, codec)
        .realm("direct")
        .sliding_expiry(SlidingExpiry::new(Duration::from_secs(8 * 3600)))
        .render_errors(common::reason_header)
        .build()
        .unwrap()
}

#[tokio::test]
async fn authenticate_and_error_response_without_tower() {
    let auth = authenticator();
    let base = serve(auth.clone()).await;
    let client = common::client();

    let anonymous = client.get(&base).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"direct\""
    );

    let malformed = client
        .get(&base)
        .header("authorization", "Bearer")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    let codec = auth.codec();
    let token = codec
        .issue(&codec.new_claims("johndoe", Scopes::none(), 0, ()))
        .unwrap();
    // The same claims signed with another key: a forgery, not garbage.
    let forged = common::sign_raw(
        &common::at_header(tower_auth::Algorithm::HS256),
        &common::payload("johndoe"),
        &jsonwebtoken::EncodingKey::from_secret(common::OTHER_SECRET),
    );
    let refused = client.get(&base).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()[common::REASON_HEADER], "bad_signature");

    let ok = client.get(&base).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("x-refreshed-token").is_none());
    assert_eq!(ok.text().await.unwrap(), "johndoe");

    // Past half-life: the handler's own call renews it.
    let mut aging = codec.new_claims("johndoe", Scopes::none(), 0, ());
    aging.iat = aging.iat.map(|iat| iat - 40 * 60);
    aging.auth_time = aging.iat;
    aging.exp -= 40 * 60;
    let aging = codec.issue(&aging).unwrap();
    let renewed = client.get(&base).bearer_auth(&aging).send().await.unwrap();
    assert_eq!(renewed.status(), 200);
    assert!(renewed.headers().get("x-refreshed-token").is_some());
}

/// Issue 17 on the hyper path: the framework-neutral token endpoint takes
/// `grant_type=refresh_token`, and the logout endpoint revokes the session.
#[tokio::test]
async fn refresh_and_logout_without_tower() {
    async fn route(
        auth: Authenticator<SimpleUser>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(match request.uri().path() {
            "/token" => tower_auth::login::token_endpoint(&auth, request).await,
            "/logout" => tower_auth::login::logout_endpoint(&auth, &request.into_parts().0).await,
            _ => return handle(auth, request).await,
        })
    }
    let passwords = tower_auth::PasswordHasher::builder()
        .params(8, 1, 1)
        .build()
        .unwrap();
    let users = MemoryUserStore::new();
    users.insert(SimpleUser::new(
        "johndoe",
        passwords.hash("pw").await.unwrap(),
    ));
    let codec = common::codec_builder(Key::hs256(common::SECRET).unwrap())
        .build()
        .unwrap();
    let auth = Authenticator::builder(users, codec)
        .passwords(passwords)
        .refresh_tokens(tower_auth::session::RefreshTokens::new())
        .build()
        .unwrap();
    let base = serve_with(auth, route).await;
    let client = common::client();
    let token = |form: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = format!("{base}/token");
        async move {
            let body: serde_json::Value = client
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body
        }
    };
    let login = token(vec![
        ("username", "johndoe".into()),
        ("password", "pw".into()),
    ])
    .await;
    let refreshed = token(vec![
        ("grant_type", "refresh_token".into()),
        (
            "refresh_token",
            login["refresh_token"].as_str().unwrap().into(),
        ),
    ])
    .await;
    let access = refreshed["access_token"].as_str().unwrap();
    let me = client.get(&base).bearer_auth(access).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let out = client
        .post(format!("{base}/logout"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let me = client.get(&base).bearer_auth(access).send().await.unwrap();
    assert_eq!(me.status(), 401);
}
