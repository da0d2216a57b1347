//! Issue 18, sessions half: several instances of an app (real servers on
//! `127.0.0.1:0`, each with its own `RedisStore` connection) sharing one
//! Redis — refresh families, reuse detection and logout across instances,
//! racing refreshes, Redis outages (fail closed / fail open), catching up
//! after a disconnection, and a Redis restarted without persistence.
//!
//! Needs Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`): skipped with
//! a notice when it is unreachable, failing under `CI=true`. The restart
//! and outage tests start private `redis-server`s.
#![cfg(all(feature = "redis", feature = "axum"))]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::redis_server::{RedisServer, redis_or_skip, unique_prefix};
use common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_auth::axum::{logout, token_endpoint};
use tower_auth::redis::RedisStore;
use tower_auth::session::RefreshTokens;
use tower_auth::{AuthLayer, Authenticated, Authenticator, PasswordHasher, SimpleUser};

const PASSWORD: &str = "correct horse battery staple";

/// The staleness bound of the instances in these tests: shorter than the
/// default so outage tests are quick.
const BOUND: Duration = Duration::from_millis(600);

/// How long a test waits for something that must happen within [`BOUND`]
/// (or a reconnection): generous, as the machine is shared. Only a ceiling
/// for polling, never asserted.
const PATIENCE: Duration = Duration::from_secs(20);

async fn me(auth: Authenticated<SimpleUser>) -> String {
    auth.user.username.clone()
}

/// One instance of the app: its own `RedisStore` (own connections, own
/// local revoked set) on the shared prefix.
struct Instance {
    base: String,
}

async fn instance(store: RedisStore) -> Instance {
    let passwords = PasswordHasher::builder().params(8, 1, 1).build().unwrap();
    let users = users(&passwords.hash(PASSWORD).await.unwrap());
    let auth = Authenticator::builder(users, hs256_codec())
        .realm(REALM)
        .passwords(passwords)
        .refresh_tokens(RefreshTokens::new().grace(Duration::from_secs(1)))
        .shared_store(store)
        .render_errors(reason_header)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/token", post(token_endpoint::<SimpleUser, ()>))
        .route("/logout", post(logout::<SimpleUser, ()>))
        .route("/me", get(me))
        .layer(AuthLayer::optional(auth.clone()))
        .with_state(auth);
    Instance {
        base: serve(app).await,
    }
}

async fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .max_staleness(BOUND)
        .connect()
        .await
        .expect("connects to Redis")
}

/// Two instances on one Redis and prefix.
async fn two_instances(url: &str, prefix: &str) -> (Instance, Instance) {
    (
        instance(store(url, prefix).await).await,
        instance(store(url, prefix).await).await,
    )
}

impl Instance {
    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        Reply::from(
            client()
                .post(format!("{}{path}", self.base))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn login(&self) -> Tokens {
        Tokens::of(
            &self
                .post_form("/token", &[("username", "johndoe"), ("password", PASSWORD)])
                .await,
        )
    }

    async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn logout(&self, access_token: &str) -> Reply {
        Reply::from(
            client()
                .post(format!("{}/logout", self.base))
                .bearer_auth(access_token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn me(&self, access_token: &str) -> Reply {
        get_bearer(&self.base, "/me", access_token).await
    }

    /// Polls `/me` with `token` until `done` holds for the reply (at most
    /// [`PATIENCE`]), and returns the last reply for the caller to assert.
    async fn me_until(&self, token: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        poll(|| self.me(token), done).await
    }
}

/// Calls `attempt` until `done` holds (at most [`PATIENCE`]); the last
/// reply, for the caller to assert on.
async fn poll<F: Future<Output = Reply>>(
    attempt: impl Fn() -> F,
    done: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = attempt().await;
        if done(&reply) || tokio::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn refused(reply: &Reply) -> bool {
    reply.status == 401
}

fn unavailable(reply: &Reply) -> bool {
    reply.status == 503
}

fn ok(reply: &Reply) -> bool {
    reply.status == 200
}

#[derive(Debug, Clone)]
struct Tokens {
    access: String,
    refresh: String,
}

impl Tokens {
    fn of(reply: &Reply) -> Tokens {
        assert_eq!(reply.status, 200, "{reply:?}");
        let field = |name: &str| reply.json[name].as_str().unwrap().to_owned();
        Tokens {
            access: field("access_token"),
            refresh: field("refresh_token"),
        }
    }
}

fn assert_invalid_grant(reply: &Reply) {
    assert_eq!(reply.status, 400, "{reply:?}");
    reply.assert_error_body("invalid_grant");
}

fn assert_unavailable(reply: &Reply) {
    assert_eq!(reply.status, 503, "{reply:?}");
    reply.assert_error_body("temporarily_unavailable");
    reply.assert_reason("shared_store");
}

#[tokio::test]
async fn a_spent_token_reused_on_another_instance_revokes_the_family_on_both() {
    let test = "reuse_across_instances";
    let Some(url) = redis_or_skip(test).await else {
        return;
    };
    let (a, b) = two_instances(&url, &unique_prefix(test)).await;
    let login = a.login().await;
    let next = Tokens::of(&a.refresh(&login.refresh).await);
    assert_eq!(b.me(&next.access).await.status, 200);
    // Past the 1 s grace window (whole seconds, inclusive).
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The thief presents the spent token to the other instance.
    assert_invalid_grant(&b.refresh(&login.refresh).await);
    // The family is gone on both: its current token too.
    assert_invalid_grant(&a.refresh(&next.refresh).await);
    assert_invalid_grant(&b.refresh(&next.refresh).await);
    // The session's access tokens are refused on both: at once on B, which
    // revoked it, and on A within the bound.
    for access in [&login.access, &next.access] {
        b.me(access)
            .await
            .assert_invalid_token_because("session_revoked");
        a.me_until(access, refused)
            .await
            .assert_invalid_token_because("session_revoked");
    }
    // The user's other sessions are untouched.
    let other = b.login().await;
    assert_eq!(a.me(&other.access).await.status, 200);
}

#[tokio::test]
async fn a_logout_on_one_instance_is_refused_on_the_other_within_the_bound() {
    let test = "logout_across_instances";
    let Some(url) = redis_or_skip(test).await else {
        return;
    };
    let (a, b) = two_instances(&url, &unique_prefix(test)).await;
    let session = a.login().await;
    let other = a.login().await;
    assert_eq!(b.me(&session.access).await.status, 200);

    assert_eq!(a.logout(&session.access).await.status, 204);
    a.me(&session.access)
        .await
        .assert_invalid_token_because("session_revoked");
    b.me_until(&session.access, refused)
        .await
        .assert_invalid_token_because("session_revoked");
    assert_invalid_grant(&b.refresh(&session.refresh).await);
    // The other session lives on, on both.
    assert_eq!(a.me(&other.access).await.status, 200);
    assert_eq!(b.me(&other.access).await.status, 200);
}

#[tokio::test]
async fn two_instances_racing_on_one_refresh_token_make_one_successor() {
    let test = "racing_refresh";
    let Some(url) = redis_or_skip(test).await else {
        return;
    };
    let (a, b) = two_instances(&url, &unique_prefix(test)).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    for _ in 0..3 {
        let login = a.login().await;
        // Eight refreshes at once, alternating instances.
        let racers: Vec<_> = (0..8)
            .map(|n| {
                let instance = Arc::clone(if n % 2 == 0 { &a } else { &b });
                let token = login.refresh.clone();
                tokio::spawn(async move { instance.refresh(&token).await })
            })
            .collect();
        let mut successors = Vec::new();
        for racer in racers {
            successors.push(Tokens::of(&racer.await.unwrap()).refresh);
        }
        successors.dedup();
        assert_eq!(successors.len(), 1, "one successor: {successors:?}");
        // The successor is the family's one current token: it rotates on
        // either instance, once.
        let third = Tokens::of(&b.refresh(&successors[0]).await);
        assert_eq!(a.me(&third.access).await.status, 200);
    }
}

#[tokio::test]
async fn redis_unreachable_longer_than_the_bound_is_503_unless_fail_open() {
    let test = "outage";
    let Some(mut redis) = RedisServer::start(test).await else {
        return;
    };
    let url = redis.url();
    let prefix = unique_prefix(test);
    let closed = instance(store(&url, &prefix).await).await;
    let open = instance(
        RedisStore::builder(&url)
            .prefix(&prefix)
            .max_staleness(BOUND)
            .fail_open(true)
            .connect()
            .await
            .unwrap(),
    )
    .await;
    let session = closed.login().await;
    assert_eq!(closed.me(&session.access).await.status, 200);
    assert_eq!(open.me(&session.access).await.status, 200);

    redis.kill();
    // Fail closed (the default): once the bound has passed, a request with
    // a session is refused, never accepted unchecked.
    assert_unavailable(&closed.me_until(&session.access, unavailable).await);
    assert_eq!(closed.me(&session.access).await.headers["retry-after"], "1");
    // Fail open: accepted, past the same bound.
    assert_eq!(open.me(&session.access).await.status, 200);
    // Writes need Redis: a logout or a refresh is 503 too.
    assert_unavailable(&closed.refresh(&session.refresh).await);

    // Redis back (empty): requests are served again.
    redis.restart().await;
    assert_eq!(
        closed.me_until(&session.access, ok).await.status,
        200,
        "served again once Redis is back"
    );
}

/// A TCP proxy in front of Redis that a test can cut (every connection
/// dropped, new ones refused) and restore: one instance loses Redis while
/// the others keep it.
struct Proxy {
    url: String,
    open: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let upstream = target
            .strip_prefix("redis://")
            .expect("a redis:// URL")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let (open, watcher) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*watcher.borrow() {
                    continue; // refused: dropped at once
                }
                let upstream = upstream.clone();
                let mut watcher = watcher.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watcher.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Proxy { url, open }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

#[tokio::test]
async fn revocations_made_while_an_instance_was_disconnected_are_seen_when_it_reconnects() {
    let test = "catch_up";
    let Some(url) = redis_or_skip(test).await else {
        return;
    };
    let prefix = unique_prefix(test);
    let proxy = Proxy::start(&url).await;
    let a = instance(store(&url, &prefix).await).await;
    let b = instance(store(&proxy.url, &prefix).await).await;
    let early = a.login().await;
    let late = a.login().await;
    let alive = a.login().await;
    assert_eq!(b.me(&early.access).await.status, 200);

    proxy.cut();
    // B has lost Redis: past the bound it refuses (fail closed)...
    assert_unavailable(&b.me_until(&alive.access, unavailable).await);
    // ... while A logs out two sessions, B unaware.
    assert_eq!(a.logout(&early.access).await.status, 204);
    assert_eq!(a.logout(&late.access).await.status, 204);
    let after = a.login().await;

    proxy.restore();
    // B reconnects and catches up: both revocations, and the live session.
    assert_eq!(b.me_until(&alive.access, ok).await.status, 200);
    b.me(&early.access)
        .await
        .assert_invalid_token_because("session_revoked");
    b.me(&late.access)
        .await
        .assert_invalid_token_because("session_revoked");
    assert_eq!(b.me(&after.access).await.status, 200);
}

#[tokio::test]
async fn a_redis_restarted_without_persistence_loses_no_revocation() {
    let test = "restart";
    let Some(mut redis) = RedisServer::start(test).await else {
        return;
    };
    let url = redis.url();
    let prefix = unique_prefix(test);
    let (a, b) = two_instances(&url, &prefix).await;
    let revoked = a.login().await;
    let alive = a.login().await;
    assert_eq!(a.logout(&revoked.access).await.status, 204);
    b.me_until(&revoked.access, refused)
        .await
        .assert_invalid_token_because("session_revoked");

    // Redis goes away long enough for both instances to notice (stale:
    // 503), then restarts, empty: the revocation lives in the instances
    // only.
    redis.kill();
    assert_unavailable(&a.me_until(&alive.access, unavailable).await);
    assert_unavailable(&b.me_until(&alive.access, unavailable).await);
    redis.restart().await;
    for instance in [&a, &b] {
        // Reconnected and caught up (fresh again)...
        assert_eq!(instance.me_until(&alive.access, ok).await.status, 200);
        // ... and the revoked session stays refused.
        instance
            .me(&revoked.access)
            .await
            .assert_invalid_token_because("session_revoked");
    }
    // A third instance, started after the restart, learns it from Redis:
    // the others write it back as soon as they have reconnected (into the
    // revoked set, which C loads, and onto the stream, which C follows).
    let c = instance(store(&url, &prefix).await).await;
    c.me_until(&revoked.access, refused)
        .await
        .assert_invalid_token_because("session_revoked");
    assert_eq!(c.me(&alive.access).await.status, 200);
    // Refresh-token families did not survive: log in again.
    assert_invalid_grant(&c.refresh(&alive.refresh).await);
}

/// `password_flow` on Redis: two real example processes sharing `REDIS_URL`
/// and `JWT_SECRET`; a logout on one is refused on the other.
#[tokio::test]
async fn password_flow_instances_share_sessions_through_redis() {
    use common::example::ExampleServer;

    let test = "password_flow_redis";
    let Some(url) = redis_or_skip(test).await else {
        return;
    };
    let prefix = unique_prefix(test);
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    let secret = "a test secret that is longer than thirty-two bytes";
    let one = ExampleServer::start("password_flow", Some(secret), &env);
    let two = ExampleServer::start("password_flow", Some(secret), &env);
    let login = Reply::from(
        client()
            .post(one.url("/token"))
            .form(&[("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = Tokens::of(&login).access;
    assert_eq!(get_bearer(&two.base, "/status", &access).await.status, 200);
    let logout = client()
        .post(one.url("/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let refused_on_two = poll(|| get_bearer(&two.base, "/status", &access), refused).await;
    assert_eq!(refused_on_two.status, 401, "{refused_on_two:?}");
    refused_on_two.assert_error_body("invalid_token");
    let log = one.stop();
    assert!(log.contains("store=redis"), "{log}");
    assert!(!log.contains(&url), "the Redis URL is never logged");
}
