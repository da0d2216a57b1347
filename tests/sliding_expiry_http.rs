//! Sliding expiry over HTTP: who gets a renewed token, what it holds, how it
//! is delivered, and where it stops.

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use common::{client, codec_builder, now, serve};
use tower_auth::refresh::{Renewal, SlidingExpiry};
use tower_auth::{
    AuthLayer, Authenticator, Claims, ConfigError, Credentials, Key, MemoryUserStore, Scopes,
    SimpleUser, TokenCodec,
};

const HOUR: u64 = 3600;
const MINUTE: u64 = 60;
const REFRESH_HEADER: &str = "x-refreshed-token";

fn codec() -> TokenCodec {
    codec_builder(Key::hs256(common::SECRET).unwrap())
        .access_lifetime(Duration::from_secs(HOUR))
        .build()
        .unwrap()
}

fn users() -> MemoryUserStore<SimpleUser> {
    let users = MemoryUserStore::new();
    let mut user = SimpleUser::new("johndoe", "unused").with_scopes(Scopes::parse("me").unwrap());
    user.token_version = 4;
    users.insert(user);
    users
}

fn authenticator(policy: SlidingExpiry) -> Authenticator<SimpleUser> {
    Authenticator::builder(users(), codec())
        .credentials(Credentials::bearer().cookie("at"))
        .sliding_expiry(policy)
        .build()
        .unwrap()
}

fn eight_hours() -> SlidingExpiry {
    SlidingExpiry::new(Duration::from_secs(8 * HOUR))
}

fn with_renewal(decision: Renewal) -> Response {
    let mut response = "ok".into_response();
    response.extensions_mut().insert(decision);
    response
}

async fn app(auth: Authenticator<SimpleUser>) -> String {
    let admin_only = auth.require_scopes(["admin"]).unwrap();
    let router = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/redirect", get(|| async { Redirect::to("/ok") }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/force", get(|| async { with_renewal(Renewal::Force) }))
        .route("/skip", get(|| async { with_renewal(Renewal::Skip) }))
        .route("/admin", get(|| async { "admin" }).route_layer(admin_only))
        .layer(AuthLayer::required(auth));
    serve(router).await
}

/// A token for johndoe issued `age` seconds ago with a one-hour window,
/// logged in `since_login` seconds ago.
fn token(age: u64, since_login: u64) -> (String, Claims) {
    let codec = codec();
    let mut claims = codec.new_claims("johndoe", Scopes::parse("me").unwrap(), 4, ());
    let issued = now() - age;
    claims.iat = Some(issued);
    claims.exp = issued + HOUR;
    claims.auth_time = Some(now() - since_login);
    (codec.issue(&claims).unwrap(), claims)
}

async fn get_with_bearer(base: &str, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn renewed(response: &reqwest::Response) -> Option<Claims> {
    let token = response.headers().get(REFRESH_HEADER)?.to_str().unwrap();
    Some(
        codec()
            .verify::<()>(token)
            .expect("the renewed token verifies"),
    )
}

#[tokio::test]
async fn a_fresh_token_is_not_renewed() {
    let base = app(authenticator(eight_hours())).await;
    let (fresh, _) = token(10 * MINUTE, 10 * MINUTE);
    let response = get_with_bearer(&base, "/ok", &fresh).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get(REFRESH_HEADER).is_none());
}

#[tokio::test]
async fn past_half_life_renews_keeping_identity_with_a_new_window() {
    let base = app(authenticator(eight_hours())).await;
    let (aging, old) = token(40 * MINUTE, 2 * HOUR);
    for path in ["/ok", "/redirect"] {
        let response = client()
            .get(format!("{base}{path}"))
            .bearer_auth(&aging)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        let new = renewed(&response).unwrap_or_else(|| panic!("{path} renews"));
        assert_eq!(new.sub, old.sub);
        assert_eq!(new.scope, old.scope);
        assert_eq!(new.auth_time, old.auth_time);
        assert_eq!(new.token_version, old.token_version);
        assert_ne!(new.jti, old.jti);
        let issued = new.iat.unwrap();
        assert!(issued + 5 >= now() && issued <= now());
        assert_eq!(new.exp, issued + HOUR, "the same one-hour window");
    }
    // reqwest follows the redirect: prove a 3xx itself carries the token.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_redirects
        .get(format!("{base}/redirect"))
        .bearer_auth(&aging)
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 303);
    let new_token = redirect.headers()[REFRESH_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let again = get_with_bearer(&base, "/ok", &new_token).await;
    assert_eq!(again.status(), 200);
    assert!(
        again.headers().get(REFRESH_HEADER).is_none(),
        "the renewed token is fresh"
    );
}

#[tokio::test]
async fn failures_are_never_renewed() {
    let base = app(authenticator(eight_hours())).await;
    let (aging, _) = token(40 * MINUTE, HOUR);
    for (path, status) in [("/missing", 404), ("/boom", 500), ("/admin", 403)] {
        let response = get_with_bearer(&base, path, &aging).await;
        assert_eq!(response.status(), status, "{path}");
        assert!(response.headers().get(REFRESH_HEADER).is_none(), "{path}");
    }
    let skipped = get_with_bearer(&base, "/skip", &aging).await;
    assert_eq!(skipped.status(), 200);
    assert!(skipped.headers().get(REFRESH_HEADER).is_none());
}

#[tokio::test]
async fn renewal_is_capped_at_the_absolute_lifetime_then_stops() {
    let base = app(authenticator(eight_hours())).await;
    // Logged in 7.5 hours ago: the cap is 30 minutes from now.
    let (aging, old) = token(40 * MINUTE, 8 * HOUR - 30 * MINUTE);
    let response = get_with_bearer(&base, "/ok", &aging).await;
    let new = renewed(&response).expect("renewed up to the cap");
    let cap = old.auth_time.unwrap() + 8 * HOUR;
    assert_eq!(new.exp, cap);

    // A token that already expires at the cap is left to expire, even when
    // the handler asks for a renewal.
    let codec = codec();
    let mut at_cap = new.clone();
    at_cap.iat = Some(now() - 40 * MINUTE);
    let at_cap = codec.issue(&at_cap).unwrap();
    for path in ["/ok", "/force"] {
        let response = get_with_bearer(&base, path, &at_cap).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get(REFRESH_HEADER).is_none(), "{path}");
    }
}

#[tokio::test]
async fn a_handler_can_force_a_renewal_and_a_threshold_replaces_half_life() {
    let policy = eight_hours().renew_within(Duration::from_secs(10 * MINUTE));
    let base = app(authenticator(policy)).await;
    let (past_half, _) = token(40 * MINUTE, HOUR);
    let response = get_with_bearer(&base, "/ok", &past_half).await;
    assert!(
        renewed(&response).is_none(),
        "20 minutes left is above the 10-minute threshold"
    );
    let forced = get_with_bearer(&base, "/force", &past_half).await;
    assert!(renewed(&forced).is_some());
    let (last_minutes, _) = token(55 * MINUTE, HOUR);
    let due = get_with_bearer(&base, "/ok", &last_minutes).await;
    assert!(renewed(&due).is_some());
}

#[tokio::test]
async fn a_cookie_session_gets_the_renewed_token_as_a_cookie_only() {
    let base = app(authenticator(eight_hours())).await;
    let (aging, _) = token(40 * MINUTE, HOUR);
    let with_cookie = || {
        client()
            .get(format!("{base}/ok"))
            .header(header::COOKIE, format!("at={aging}"))
            .send()
    };
    let response = with_cookie().await.unwrap();
    assert!(
        response.headers().get(REFRESH_HEADER).is_none(),
        "no copy for page scripts"
    );
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let new = set_cookie
        .strip_prefix("at=")
        .and_then(|rest| rest.split(';').next())
        .unwrap();
    assert!(codec().verify::<()>(new).is_ok());
    assert_eq!(
        set_cookie,
        format!("at={new}; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600")
    );

    // An app that opts in gets both, the same token.
    let base = app(authenticator(
        eight_hours().header_for_cookie_sessions(true),
    ))
    .await;
    let response = client()
        .get(format!("{base}/ok"))
        .header(header::COOKIE, format!("at={aging}"))
        .send()
        .await
        .unwrap();
    let header_copy = response.headers()[REFRESH_HEADER].to_str().unwrap();
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set_cookie.starts_with(&format!("at={header_copy};")),
        "{set_cookie}"
    );

    let bearer = get_with_bearer(&base, "/ok", &aging).await;
    assert!(bearer.headers().get(REFRESH_HEADER).is_some());
    assert!(
        bearer.headers().get(header::SET_COOKIE).is_none(),
        "no cookie for a bearer client"
    );
}

#[tokio::test]
async fn concurrent_requests_with_one_aging_token_each_get_a_valid_renewal() {
    let base = app(authenticator(eight_hours())).await;
    let (aging, _) = token(40 * MINUTE, HOUR);
    let requests = (0..32).map(|_| {
        let (base, aging) = (base.clone(), aging.clone());
        async move { get_with_bearer(&base, "/ok", &aging).await }
    });
    let responses = futures_join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in &responses {
        let new = renewed(response).expect("every request is renewed");
        assert!(
            ids.insert(new.jti.unwrap()),
            "each renewal is a distinct token"
        );
    }
}

/// Awaits every future concurrently (spawned tasks, no extra dependency).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[test]
fn impossible_policies_fail_when_built() {
    let build = |policy: SlidingExpiry, credentials: Credentials| {
        Authenticator::builder(users(), codec())
            .credentials(credentials)
            .sliding_expiry(policy)
            .build()
            .map(|_| ())
    };
    let shorter_than_a_token = SlidingExpiry::new(Duration::from_secs(30 * MINUTE));
    assert!(matches!(
        build(shorter_than_a_token, Credentials::bearer()),
        Err(ConfigError::Lifetime(_))
    ));
    let threshold_too_long = eight_hours().renew_within(Duration::from_secs(2 * HOUR));
    assert!(matches!(
        build(threshold_too_long, Credentials::bearer()),
        Err(ConfigError::Lifetime(_))
    ));
    let nowhere_to_deliver = eight_hours().header(None);
    assert!(matches!(
        build(nowhere_to_deliver, Credentials::bearer()),
        Err(ConfigError::Lifetime(_))
    ));
    assert!(
        build(
            eight_hours().header(None),
            Credentials::bearer().cookie("at")
        )
        .is_ok()
    );
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn a_login_response_never_renews_the_callers_old_token() {
    use axum::routing::post;
    let users = users();
    // Cheap parameters: this test is about renewal, not hashing cost.
    let hasher = tower_auth::PasswordHasher::builder()
        .params(64, 1, 1)
        .build()
        .unwrap();
    let hash = hasher.hash("secret").await.unwrap();
    users.update("johndoe", |u| u.password_hash = hash);
    let auth = Authenticator::builder(users, codec())
        .sliding_expiry(eight_hours())
        .build()
        .unwrap();
    let router = Router::new()
        .route(
            "/token",
            post(tower_auth::axum::token_endpoint::<SimpleUser, ()>),
        )
        .layer(AuthLayer::optional(auth.clone()))
        .with_state(auth);
    let base = serve(router).await;
    let (aging, _) = token(40 * MINUTE, HOUR);
    let response = client()
        .post(format!("{base}/token"))
        .bearer_auth(&aging)
        .form(&[("username", "johndoe"), ("password", "secret")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get(REFRESH_HEADER).is_none());
}
